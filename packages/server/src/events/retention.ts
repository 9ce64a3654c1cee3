import { EVENT_KIND, systemTimers, timeValue, type Clock, type Store, type Timers } from "@quantix/core";
import type { Logger } from "@quantix/rpc";

/** Events deleted per batch. */
const BATCH = 500;

/**
 * Keeps lifecycle events for a bounded time: every `everyMs` (and at start), on the
 * leader, the events older than `retentionSec` are deleted, oldest first, a batch at a
 * time. Watchers see each one go (DELETED).
 */
export class EventRetention {
  private cancel: (() => void) | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;
  private readonly timers: Timers;

  constructor(private readonly deps: { store: Store; clock: Clock; timers?: Timers; log: Logger; retentionSec: number; everyMs?: number }) {
    this.timers = deps.timers ?? systemTimers;
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

  /** Deletes the expired events now; resolves to how many went. */
  async sweep(): Promise<number> {
    const events = this.deps.store.of(EVENT_KIND);
    const cutoff = this.deps.clock.now() - this.deps.retentionSec * 1000;
    let deleted = 0;
    for (;;) {
      const page = await events.list({ order: { field: "time", desc: false }, limit: BATCH, countTotal: false });
      const expired = page.items.filter((e) => timeValue(e.time) < cutoff);
      for (const e of expired) {
        await events.delete(e.id, undefined, { actor: "event-retention" }).catch(() => undefined);
        deleted++;
      }
      if (expired.length < BATCH || this.stopped) return deleted;
    }
  }

  private tick(): void {
    if (this.stopped) return;
    this.running = this.sweep()
      .then((n) => n > 0 && this.deps.log.log("info", "expired lifecycle events deleted", { count: n, retention_sec: this.deps.retentionSec }))
      .catch((err: unknown) => this.deps.log.log("warn", "deleting expired events failed; the next sweep retries", { error: String(err) }))
      .then(() => {
        if (!this.stopped) this.cancel = this.timers.setTimeout(() => this.tick(), this.deps.everyMs ?? 60_000);
      });
  }
}
