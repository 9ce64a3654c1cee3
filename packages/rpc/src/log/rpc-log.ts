import { Code } from "@connectrpc/connect";
import { codeLabel } from "../code-label.js";
import type { Logger } from "./logger.js";

const ID_FIELDS = ["id", "vmId", "nodeId", "name", "projectId", "hostname"] as const;

/** The resource ids a request names, for the log line. */
export function idsOf(message: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!message || typeof message !== "object") return out;
  for (const f of ID_FIELDS) {
    const v = (message as Record<string, unknown>)[f];
    if (typeof v === "string" && v !== "") out[f] = v.slice(0, 256);
  }
  return out;
}

/** As logRpc for a unary call: the ids `message` names (idsOf) go straight into the line's fields. */
export function logRpcOf(log: Logger, procedure: string, code: Code | 0, durationMs: number, message: unknown, cause?: unknown): void {
  const fields: Record<string, unknown> = { procedure, code: codeLabel(code), duration_ms: Math.round(durationMs * 100) / 100 };
  if (message && typeof message === "object") {
    for (const f of ID_FIELDS) {
      const v = (message as Record<string, unknown>)[f];
      if (typeof v === "string" && v !== "") fields[f] = v.slice(0, 256);
    }
  }
  const failed = code === Code.Internal || code === Code.Unknown;
  if (cause !== undefined && failed) fields["error"] = cause instanceof Error ? cause.stack : String(cause);
  log.log(failed ? "error" : "info", "rpc", fields);
}

/** Writes the one log line of an RPC; INTERNAL and UNKNOWN errors carry their cause for the log only. */
export function logRpc(log: Logger, procedure: string, code: Code | 0, durationMs: number, ids: Record<string, string>, messages?: number, cause?: unknown): void {
  const fields: Record<string, unknown> = { procedure, code: codeLabel(code), duration_ms: Math.round(durationMs * 100) / 100, ...ids };
  if (messages !== undefined) fields["messages"] = messages;
  if (cause !== undefined && (code === Code.Internal || code === Code.Unknown)) fields["error"] = cause instanceof Error ? cause.stack : String(cause);
  log.log(code === Code.Internal || code === Code.Unknown ? "error" : "info", "rpc", fields);
}

/**
 * Writes the one log line of a call refused before the interceptor chain (a request that
 * cannot be decoded, is too large, or names no method): the client's error, so at debug
 * level and without a stack, unless the server failed (INTERNAL, UNKNOWN).
 */
export function logRefusal(log: Logger, procedure: string, code: Code, durationMs: number, message: string): void {
  const server = code === Code.Internal || code === Code.Unknown;
  log.log(server ? "error" : "debug", "rpc", { procedure: procedure.slice(0, 256), code: codeLabel(code), duration_ms: Math.round(durationMs * 100) / 100, refused: message.slice(0, 256) });
}
