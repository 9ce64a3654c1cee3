import type { AuditRecord } from "@quantix/api/gen/Quantixkvm/audit/v1/audit_pb.js";
import { AUDIT_RECORD_KIND, systemTimers, type Store, type Timers } from "@quantix/core";
import type { Logger } from "@quantix/rpc";

/** The writer's bounds. */
export interface AuditWriterOptions {
  /** Longest a record waits before its batch is written (default 100 ms). */
  readonly flushMs?: number;
  /** Records written in one commit at most (default 500). */
  readonly maxBatch?: number;
  /**
   * Records waiting at most before callers wait for them (default 10,000): a store slower
   * than the calls, or down, slows the mutating calls instead of growing memory or dropping records.
   */
  readonly maxPending?: number;
}

/**
 * Writes audit records after the calls they record, in batches (one commit per batch,
 * at least every `flushMs`, and at once when a batch is full), so that a call's answer
 * waits for no write. A batch the store refuses is kept and retried; `close()` writes
 * what is left. Nothing is dropped: past `maxPending` waiting records, `add` returns a
 * promise the call waits for before it answers.
 *
 * The risk this leaves (docs/api/quotas-rate-limits-audit.md): a process that dies
 * (SIGKILL, power loss) loses the records of the calls of its last `flushMs` (and any the
 * store was refusing), though those calls were answered.
 */
export class AuditWriter {
  private pending: AuditRecord[] = [];
  private timer: (() => void) | undefined;
  private flushing: Promise<void> | undefined;
  private failures = 0;
  private closed = false;
  private readonly flushMs: number;
  private readonly maxBatch: number;
  private readonly maxPending: number;
  private readonly timers: Timers;

  constructor(private readonly deps: { store: Store; log: Logger; timers?: Timers } & AuditWriterOptions) {
    this.flushMs = deps.flushMs ?? 100;
    this.maxBatch = deps.maxBatch ?? 500;
    this.maxPending = deps.maxPending ?? 10_000;
    this.timers = deps.timers ?? systemTimers;
  }

  /** Queues a record; returns a promise to wait for when too many are waiting. */
  add(record: AuditRecord): Promise<void> | undefined {
    this.pending.push(record);
    if (this.pending.length >= this.maxBatch) this.flushSoon(0);
    else this.flushSoon(this.flushMs);
    return this.pending.length >= this.maxPending ? this.flush() : undefined;
  }

  /** Records waiting to be written. */
  get waiting(): number {
    return this.pending.length;
  }

  /** Writes every waiting record (resolves once they are written, or the store refused). */
  async flush(): Promise<void> {
    while (this.flushing) await this.flushing;
    if (this.pending.length === 0) return;
    this.flushing = this.writeBatches().finally(() => (this.flushing = undefined));
    await this.flushing;
  }

  /** Writes what is left, then stops (the server has stopped answering calls). */
  async close(): Promise<void> {
    this.closed = true;
    this.timer?.();
    this.timer = undefined;
    await this.flush();
    if (this.pending.length > 0) this.deps.log.log("error", "audit records could not be written before shutdown", { lost: this.pending.length });
  }

  private flushSoon(ms: number): void {
    if (this.timer && ms > 0) return;
    this.timer?.();
    this.timer = this.timers.setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, ms);
  }

  private async writeBatches(): Promise<void> {
    while (this.pending.length > 0) {
      const batch = this.pending.slice(0, this.maxBatch);
      try {
        await this.deps.store.commit(batch.map((object) => ({ op: "create" as const, kind: AUDIT_RECORD_KIND as never, object: object as never })), { actor: "audit" });
        this.pending.splice(0, batch.length);
        this.failures = 0;
      } catch (err) {
        this.failures++;
        this.deps.log.log(this.failures === 1 ? "warn" : "error", "writing audit records failed; they are kept and retried", { waiting: this.pending.length, error: String(err) });
        if (!this.closed) this.flushSoon(Math.min(5000, this.flushMs * 2 ** Math.min(this.failures, 6)));
        return;
      }
    }
  }
}
