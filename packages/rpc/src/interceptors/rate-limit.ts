import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { RetryInfoSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { peerKey, principalKey } from "../call-context.js";

/** A token bucket per caller. */
export interface RateLimitOptions {
  /** Tokens added per second (calls per second on average), > 0. */
  readonly rps: number;
  /** The bucket's size: calls a caller may make at once, >= 1. */
  readonly burst: number;
  /** Callers tracked at most; beyond, the longest-tracked is forgotten (its next call starts with a full bucket). Default 100,000. */
  readonly maxCallers?: number;
  /** Milliseconds from a monotonic clock (tests). */
  readonly now?: () => number;
}

/** The interceptor, and how many callers it tracks now. */
export type RateLimiter = Interceptor & { readonly tracked: () => number };

interface Bucket {
  tokens: number;
  /** When `tokens` was last brought up to date. */
  at: number;
}

const monotonic = () => performance.now();

/**
 * Limits the rate of calls per caller (issue 12): a token bucket of `burst` tokens that
 * refills at `rps` a second, keyed by the authenticated principal (principalKey: its kind
 * and id) or, for a call without one, by its peer address (peerKey). A call that finds
 * the bucket empty fails with RESOURCE_EXHAUSTED and a google.rpc.RetryInfo detail whose
 * retry_delay is when the next token is back; a stream costs one token when it opens.
 *
 * Memory is bounded: a bucket that would have refilled completely carries nothing and is
 * dropped by a sweep that runs at most once per refill period (burst / rps), and at most
 * `maxCallers` buckets are kept. A call costs a Map lookup and a few arithmetic operations.
 */
export function rateLimit(o: RateLimitOptions): RateLimiter {
  if (!(o.rps > 0) || !(o.burst >= 1)) throw new Error("rateLimit needs rps > 0 and burst >= 1");
  const now = o.now ?? monotonic;
  const perMs = o.rps / 1000;
  const fullAfterMs = o.burst / perMs;
  const maxCallers = o.maxCallers ?? 100_000;
  const buckets = new Map<string, Bucket>();
  let sweptAt = now();

  const sweep = (t: number) => {
    sweptAt = t;
    for (const [k, b] of buckets) if (b.tokens + (t - b.at) * perMs >= o.burst) buckets.delete(k);
  };

  const interceptor: Interceptor = (next) => (req) => {
    const t = now();
    if (t - sweptAt >= fullAfterMs) sweep(t);
    const values = req.contextValues;
    const p = values.get(principalKey);
    // A principal's key has a kind's letters before its colon, which no IPv4 or IPv6 address has.
    const key = p ? `${p.kind}:${p.id}` : values.get(peerKey).address;
    let b = buckets.get(key);
    if (b === undefined) {
      if (buckets.size >= maxCallers) {
        sweep(t);
        if (buckets.size >= maxCallers) buckets.delete(buckets.keys().next().value!);
      }
      b = { tokens: o.burst, at: t };
      buckets.set(key, b);
    } else {
      b.tokens = Math.min(o.burst, b.tokens + (t - b.at) * perMs);
      b.at = t;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return next(req);
    }
    const delayMs = Math.ceil((1 - b.tokens) / perMs);
    const seconds = Math.floor(delayMs / 1000);
    throw new ConnectError(
      `rate limit exceeded: at most ${o.rps} calls a second (${o.burst} at once) per caller; retry in ${(delayMs / 1000).toFixed(3)} s`,
      Code.ResourceExhausted,
      undefined,
      [{ desc: RetryInfoSchema, value: { retryDelay: { seconds: BigInt(seconds), nanos: (delayMs - seconds * 1000) * 1_000_000 } } }],
    );
  };
  return Object.assign(interceptor, { tracked: () => buckets.size });
}
