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

/** Writes the one log line of an RPC; INTERNAL and UNKNOWN errors carry their cause for the log only. */
export function logRpc(log: Logger, procedure: string, code: Code | 0, durationMs: number, ids: Record<string, string>, messages?: number, cause?: unknown): void {
  const fields: Record<string, unknown> = { procedure, code: codeLabel(code), duration_ms: Math.round(durationMs * 100) / 100, ...ids };
  if (messages !== undefined) fields["messages"] = messages;
  if (cause !== undefined && (code === Code.Internal || code === Code.Unknown)) fields["error"] = cause instanceof Error ? cause.stack : String(cause);
  log.log(code === Code.Internal || code === Code.Unknown ? "error" : "info", "rpc", fields);
}
