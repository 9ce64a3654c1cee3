import { Code, ConnectError } from "@connectrpc/connect";

/** How the GatewayClient retries an idempotent call that failed in transport. */
export interface RetryPolicy {
  /** Attempts in all, the first included (1 = no retry). */
  readonly maxAttempts: number;
  /** No attempt starts later than this after the first one began. */
  readonly maxTotalMs: number;
  /** The first backoff's upper bound; each later one doubles, up to maxBackoffMs. */
  readonly initialBackoffMs: number;
  readonly maxBackoffMs: number;
}

export const DEFAULT_RETRY: RetryPolicy = { maxAttempts: 6, maxTotalMs: 15_000, initialBackoffMs: 50, maxBackoffMs: 2_000 };

/** Node's error codes of a connection that failed or went away: the request may not have reached the server, or its answer was lost. */
const TRANSPORT_CODES = new Set(["ECONNREFUSED", "ECONNRESET", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "ERR_HTTP2_GOAWAY_SESSION", "ERR_HTTP2_INVALID_SESSION", "ERR_HTTP2_SESSION_ERROR", "ERR_HTTP2_STREAM_CANCEL", "ERR_HTTP2_STREAM_ERROR", "ERR_STREAM_PREMATURE_CLOSE", "ERR_HTTP2_PING_CANCEL"]);

/**
 * Whether a failure is worth retrying for an idempotent call: UNAVAILABLE (the server is
 * unreachable, shutting down, or refused the stream), or any error caused by the
 * connection itself (reset, GOAWAY, a keepalive PING unanswered). A status the server
 * chose (ABORTED for a conflict, NOT_FOUND, INVALID_ARGUMENT...) is never retried, and
 * neither is a deadline. A cancel counts as a failure of the connection: the callers check
 * first whether their own signal aborted it.
 */
export function isTransportFailure(err: unknown): boolean {
  const ce = ConnectError.from(err);
  if (ce.code === Code.Unavailable) return true;
  // A deadline is the caller's; a cancel is too when the caller's signal aborted (callers check that
  // first): otherwise it is the peer resetting the stream (RST_STREAM CANCEL) or the connection closing.
  if (ce.code === Code.DeadlineExceeded) return false;
  if (ce.code === Code.Canceled) return true;
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === "string" && TRANSPORT_CODES.has(code)) return true;
    if (/NGHTTP2_(REFUSED_STREAM|INTERNAL_ERROR)|session (closed|destroyed)|socket hang up/i.test(e.message)) return true;
  }
  return false;
}

/** The delay before retry `attempt` (1 = the first retry): "full jitter", uniform in [0, min(max, initial·2^(attempt-1))]. */
export function backoffMs(policy: RetryPolicy, attempt: number, random: () => number = Math.random): number {
  const cap = Math.min(policy.maxBackoffMs, policy.initialBackoffMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(random() * cap);
}

/** Resolves after `ms`, or rejects as soon as `signal` aborts. */
export function delay(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(ConnectError.from(signal.reason ?? new Error("aborted"), Code.Canceled));
    const onAbort = () => {
      clearTimeout(t);
      reject(ConnectError.from(signal!.reason ?? new Error("aborted"), Code.Canceled));
    };
    const t = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
