import { create } from "@bufbuild/protobuf";
import { VectorClockSchema, type VectorClock } from "@quantix/api/gen/virtualdom/v1/gateway_pb.js";

/** A vector clock's entries: writer id → how many of that writer's writes were observed. */
export type ClockEntries = Readonly<Record<string, bigint>>;

/**
 * One writer's id and vector clock, for a client of the MemoryGateway (the contract's
 * "Causality"): `next()` increments the writer's own entry before a write and returns the
 * clock to send; `observe()` merges (entry-wise maximum) a clock the writer has seen, e.g.
 * a WriteDiffResponse's or a ChangeEvent's, so that its next write descends from it.
 *
 * A retry must send the same clock again (that is what makes WriteDiff idempotent): keep
 * the clock `next()` returned for the write, never call `next()` again for a retry.
 */
export class WriterClock {
  private readonly counts = new Map<string, bigint>();

  constructor(
    /** The writer's id (1-128 characters), its key in the clock and WriteDiffRequest.writer_id. */
    readonly writerId: string,
    initial: ClockEntries = {},
  ) {
    if (writerId.length < 1 || writerId.length > 128) throw new RangeError(`writerId must be 1-128 characters, got ${writerId.length}`);
    this.observe(initial);
  }

  /** The clock as it is now (a copy). */
  get entries(): ClockEntries {
    return Object.fromEntries(this.counts);
  }

  /** This writer's own count: how many writes it has made (or observed of itself). */
  get own(): bigint {
    return this.counts.get(this.writerId) ?? 0n;
  }

  /** Increments the writer's own entry and returns the clock to send with the write. */
  next(): VectorClock {
    this.counts.set(this.writerId, this.own + 1n);
    return create(VectorClockSchema, { entries: this.entries });
  }

  /** Merges an observed clock into this one (entry-wise maximum); missing entries count as 0. */
  observe(clock: VectorClock | ClockEntries | undefined): void {
    if (!clock) return;
    const entries: ClockEntries = isVectorClock(clock) ? clock.entries : clock;
    for (const [id, n] of Object.entries(entries)) if (n > (this.counts.get(id) ?? 0n)) this.counts.set(id, n);
  }

  /** Whether every entry of `clock` is at most this clock's (this clock covers it). */
  covers(clock: VectorClock | ClockEntries): boolean {
    const entries: ClockEntries = isVectorClock(clock) ? clock.entries : clock;
    return Object.entries(entries).every(([id, n]) => n <= (this.counts.get(id) ?? 0n));
  }
}

const isVectorClock = (c: VectorClock | ClockEntries): c is VectorClock => (c as { $typeName?: unknown }).$typeName === "virtualdom.v1.VectorClock";
