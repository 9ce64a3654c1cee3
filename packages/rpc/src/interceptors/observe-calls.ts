import { Code, type Interceptor } from "@connectrpc/connect";
import type { Logger } from "../log/logger.js";
import type { RpcMetrics } from "../metrics/rpc-metrics.js";
import { toConnectError } from "../errors.js";
import { codeLabel } from "../code-label.js";

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

/**
 * Maps every error to the API's error vocabulary and writes one structured log line per
 * RPC (procedure, protocol, code, duration, resource ids), for unary calls and streams,
 * and counts it in `metrics` when given (the control plane's /metrics).
 */
export function observeAndMapErrors(log: Logger, now: () => number = () => performance.now(), metrics?: RpcMetrics): Interceptor {
  return (next) => async (req) => {
    const start = now();
    const procedure = `${req.service.typeName}/${req.method.name}`;
    const ids = req.stream ? {} : idsOf(req.message);
    const done = (code: Code | 0, cause?: unknown, messages?: number) => {
      const ms = now() - start;
      metrics?.observe(procedure, code, ms);
      logRpc(log, procedure, code, ms, ids, messages, cause);
    };
    let res;
    try {
      res = await next(req);
    } catch (err) {
      const ce = toConnectError(err);
      done(ce.code, ce.cause ?? err);
      throw ce;
    }
    if (!res.stream) {
      done(0);
      return res;
    }
    const source = res.message;
    async function* wrapped() {
      let n = 0;
      metrics?.streamOpened(procedure);
      try {
        for await (const m of source) {
          n++;
          yield m;
        }
        done(0, undefined, n);
      } catch (err) {
        const ce = toConnectError(err);
        done(ce.code, ce.cause ?? err, n);
        throw ce;
      } finally {
        metrics?.streamClosed(procedure);
      }
    }
    return { ...res, message: wrapped() };
  };
}

/** Writes the one log line of an RPC; INTERNAL and UNKNOWN errors carry their cause for the log only. */
export function logRpc(log: Logger, procedure: string, code: Code | 0, durationMs: number, ids: Record<string, string>, messages?: number, cause?: unknown): void {
  const fields: Record<string, unknown> = { procedure, code: codeLabel(code), duration_ms: Math.round(durationMs * 100) / 100, ...ids };
  if (messages !== undefined) fields["messages"] = messages;
  if (cause !== undefined && (code === Code.Internal || code === Code.Unknown)) fields["error"] = cause instanceof Error ? cause.stack : String(cause);
  log.log(code === Code.Internal || code === Code.Unknown ? "error" : "info", "rpc", fields);
}
