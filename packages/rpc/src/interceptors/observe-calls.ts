import type { DescMethod } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor, type StreamRequest, type UnaryRequest } from "@connectrpc/connect";
import { idsOf, logRpc, logRpcOf } from "../log/rpc-log.js";
import type { Logger } from "../log/logger.js";
import type { RpcMetrics } from "../metrics/rpc-metrics.js";
import { observeStream } from "./observe-stream.js";

/** Where observeCalls reports. */
export interface ObserveOptions {
  readonly log: Logger;
  /** Counts calls, latency and open streams (a binary's /metrics), when given. */
  readonly metrics?: RpcMetrics | undefined;
  /** Milliseconds from a monotonic clock (tests). */
  readonly now?: () => number;
}

const monotonic = () => performance.now();

/**
 * Writes one structured log line per RPC (procedure, code, duration, the resource ids the
 * request names, and for streams the messages sent) and counts it in `metrics`: for a
 * unary call when it answers, for a stream when it ends, however it ends. Installed
 * outside mapErrors, it logs the code the client receives.
 */
export function observeCalls(o: ObserveOptions): Interceptor {
  const now = o.now ?? monotonic;
  return (next) => async (req) => {
    const start = now();
    if (!req.stream) {
      // No closures here: this runs on every unary call.
      let res;
      try {
        res = await next(req);
      } catch (err) {
        reportUnary(o, req, now() - start, codeOf(err), causeOf(err));
        throw err;
      }
      reportUnary(o, req, now() - start, 0);
      return res;
    }
    let ids: Record<string, string> = {};
    let res;
    try {
      res = await next({ ...req, message: firstIds(req.message, (found) => (ids = found)) } as StreamRequest);
    } catch (err) {
      report(o, req, now() - start, codeOf(err), ids, causeOf(err));
      throw err;
    }
    if (!res.stream) {
      report(o, req, now() - start, 0, ids);
      return res;
    }
    const procedure = procedureOf(req);
    let n = 0;
    return {
      ...res,
      message: observeStream(res.message, {
        opened: () => o.metrics?.streamOpened(procedure),
        delivered: (k) => (n += k),
        ended: (reason) => {
          o.metrics?.streamClosed(procedure);
          if (reason === undefined) report(o, req, now() - start, 0, ids, undefined, n);
          else report(o, req, now() - start, codeOf(reason), ids, causeOf(reason), n);
        },
      }),
    };
  };
}

function report(o: ObserveOptions, req: UnaryRequest | StreamRequest, ms: number, code: Code | 0, ids: Record<string, string>, cause?: unknown, messages?: number): void {
  const procedure = procedureOf(req);
  o.metrics?.observe(procedure, code, ms);
  logRpc(o.log, procedure, code, ms, ids, messages, cause);
}

/** A unary call's report: the ids are read from its request message into the log line's fields (no object of their own). */
function reportUnary(o: ObserveOptions, req: UnaryRequest | StreamRequest, ms: number, code: Code | 0, cause?: unknown): void {
  const procedure = procedureOf(req);
  o.metrics?.observe(procedure, code, ms);
  logRpcOf(o.log, procedure, code, ms, req.message, cause);
}

/** "pkg.Service/Method" by method, made once: the same string every call, so the maps keyed by it do not hash a new one. */
const procedures = new WeakMap<DescMethod, string>();

function procedureOf(req: UnaryRequest | StreamRequest): string {
  // A request whose service an interceptor replaced is named as it says.
  if (req.service !== req.method.parent) return `${req.service.typeName}/${req.method.name}`;
  let p = procedures.get(req.method);
  if (p === undefined) procedures.set(req.method, (p = `${req.service.typeName}/${req.method.name}`));
  return p;
}

/** Passes a request stream through, handing the ids its first message names to `found`. */
async function* firstIds<T>(messages: AsyncIterable<T>, found: (ids: Record<string, string>) => void): AsyncGenerator<T> {
  let first = true;
  for await (const m of messages) {
    if (first) found(idsOf(m));
    first = false;
    yield m;
  }
}

function codeOf(err: unknown): Code {
  return err instanceof ConnectError ? err.code : Code.Unknown;
}

/** What the log names as the cause: the original error behind a mapped one. */
function causeOf(err: unknown): unknown {
  return err instanceof ConnectError ? (err.cause ?? err) : err;
}
