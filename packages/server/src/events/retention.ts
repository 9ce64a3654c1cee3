import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { EVENT_KIND, systemTimers, timeValue, type Clock, type Kind, type Resource, type Store, type Timers } from "@quantix/core";
import type { Logger } from "@quantix/rpc";

/** Events deleted per batch. */
const BATCH = 500;

/** A kind kept for a bounded time: its time field (declared with order), and how its sweeps are named. */
export interface Retained<T extends Resource> {
  readonly kind: Kind<T>;
  /** The declared time field the kind orders by. */
  readonly field: string;
  readonly time: (o: T) => Timestamp | undefined;
  /** The writer's name (WriteOptions.actor) and what the log calls the objects. */
  readonly actor: string;
  readonly what: string;
}

const EVENTS: Retained<Resource> = { kind: EVENT_KIND as never, field: "time", time: (e) => (e as unknown as { time?: Timestamp }).time, actor: "event-retention", what: "lifecycle events" };

/**
 * Keeps objects of a kind (lifecycle events by default, audit records) for a bounded
 * time: every `everyMs` (and at start), on the leader, those older than `retentionSec`
 * are deleted, oldest first, a batch at a time. Watchers see each one go (DELETED).
 */
export class EventRetention {
  private cancel: (() => void) | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;
  private readonly timers: Timers;

  private readonly kept: Retained<Resource>;

  constructor(private readonly deps: { store: Store; clock: Clock; timers?: Timers; log: Logger; retentionSec: number; everyMs?: number; kept?: Retained<Resource> }) {
    this.timers = deps.timers ?? systemTimers;
    this.kept = deps.kept ?? EVENTS;
  }

  async start(): Promise<void> {
    this.stopped = false;
    this.tick();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.cancel?.();
    await this.running;
  }

  async idle(): Promise<void> {
    await this.running;
  }

  /** Deletes the expired objects now; resolves to how many went. */
  async sweep(): Promise<number> {
    const { kind, field, time, actor } = this.kept;
    const objects = this.deps.store.of(kind);
    const cutoff = this.deps.clock.now() - this.deps.retentionSec * 1000;
    let deleted = 0;
    for (;;) {
      const page = await objects.list({ order: { field, desc: false }, limit: BATCH, countTotal: false });
      const expired = page.items.filter((e) => timeValue(time(e)) < cutoff);
      for (const e of expired) {
        await objects.delete(e.id, undefined, { actor }).catch(() => undefined);
        deleted++;
      }
      if (expired.length < BATCH || this.stopped) return deleted;
    }
  }

  private tick(): void {
    if (this.stopped) return;
    this.running = this.sweep()
      .then((n) => n > 0 && this.deps.log.log("info", `expired ${this.kept.what} deleted`, { count: n, retention_sec: this.deps.retentionSec }))
      .catch((err: unknown) => this.deps.log.log("warn", `deleting expired ${this.kept.what} failed; the next sweep retries`, { error: String(err) }))
      .then(() => {
        if (!this.stopped) this.cancel = this.timers.setTimeout(() => this.tick(), this.deps.everyMs ?? 60_000);
      });
  }
}
