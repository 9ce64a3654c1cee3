import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { RetryInfoSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import type { Clock } from "@quantix/core";

/** How many failed logins are tolerated, per user and per source address. */
export interface LoginLimits {
  /** Failures allowed in a burst (the bucket's size). */
  readonly burst: number;
  /** Failures forgiven per minute (the bucket's refill). */
  readonly perMinute: number;
  /** Buckets kept at most (users and addresses together); the oldest goes first. */
  readonly maxKeys?: number;
}

interface Bucket {
  tokens: number;
  atMs: number;
}

/**
 * Token buckets of failed logins, one per username and one per source address: a login
 * is refused with RESOURCE_EXHAUSTED and a google.rpc.RetryInfo detail while either is
 * empty, before the password is checked. Only failures take from them. A bucket that has
 * refilled is dropped, and at most `maxKeys` are kept (the oldest go first), so an
 * attacker spraying names or addresses cannot grow the server's memory.
 */
export class LoginLimiter {
  private readonly buckets = new Map<string, Bucket>();

  constructor(
    private readonly limits: LoginLimits,
    private readonly clock: Clock,
  ) {}

  /** Throws RESOURCE_EXHAUSTED when the user or the address has no failures left. */
  check(username: string, address: string): void {
    const wait = Math.max(this.waitMs(`u:${username}`), this.waitMs(`a:${address}`));
    if (wait > 0) {
      const sec = Math.ceil(wait / 1000);
      throw new ConnectError(`too many failed logins for this user or from this address; try again in ${sec} s`, Code.ResourceExhausted, undefined, [
        { desc: RetryInfoSchema, value: create(RetryInfoSchema, { retryDelay: durationFromMs(sec * 1000) }) },
      ]);
    }
  }

  /** Counts a failed login against the user and the address. */
  failed(username: string, address: string): void {
    this.take(`u:${username}`);
    this.take(`a:${address}`);
  }

  /** Buckets held (for tests of the bound). */
  get size(): number {
    return this.buckets.size;
  }

  private level(key: string): number {
    const b = this.buckets.get(key);
    if (!b) return this.limits.burst;
    const refilled = Math.min(this.limits.burst, b.tokens + ((this.clock.now() - b.atMs) * this.limits.perMinute) / 60_000);
    if (refilled >= this.limits.burst) this.buckets.delete(key);
    return refilled;
  }

  private waitMs(key: string): number {
    const have = this.level(key);
    return have >= 1 ? 0 : ((1 - have) * 60_000) / this.limits.perMinute;
  }

  private take(key: string): void {
    const tokens = this.level(key) - 1;
    this.buckets.delete(key);
    const max = this.limits.maxKeys ?? 100_000;
    while (this.buckets.size >= max) this.buckets.delete(this.buckets.keys().next().value!);
    this.buckets.set(key, { tokens: Math.max(tokens, 0), atMs: this.clock.now() });
  }
}
