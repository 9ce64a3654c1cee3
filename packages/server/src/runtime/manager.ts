import type { Store } from "@quantix/core";
import type { Logger } from "@quantix/rpc";
/** Something the manager starts on the leader and stops: a Controller, or a periodic task. */
export interface Runnable {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Resolves when it has nothing pending (tests). */
  idle?(): Promise<void>;
}

/**
 * Runs controllers on one replica at a time: the store's leader. A follower serves reads
 * and writes the store, and never reconciles (two replicas acting on the same VM would
 * fight). Losing the leadership (the store's connection dropped) calls `onLost`: another
 * replica may lead by now, so the process must not carry on acting.
 */
export class ControllerManager {
  private readonly controllers: Runnable[] = [];
  private resign: (() => Promise<void>) | undefined;
  private leadingNow = false;
  private started: Promise<void> | undefined;

  constructor(private readonly deps: { store: Store; log: Logger; onLost: () => void }) {}

  add(...controllers: Runnable[]): void {
    this.controllers.push(...controllers);
  }

  /** Whether this replica leads (and runs the controllers). */
  get leading(): boolean {
    return this.leadingNow;
  }

  /** Campaigns for the leadership; resolves once the controllers run, or at once on a follower. */
  async start(): Promise<void> {
    let resolveFirst: () => void = () => undefined;
    const first = new Promise<void>((r) => (resolveFirst = r));
    this.resign = this.deps.store.lead((leader) => {
      if (leader) {
        this.leadingNow = true;
        this.deps.log.log("info", "leading: running the controllers on this replica");
        this.started = (async () => {
          for (const c of this.controllers) await c.start();
        })();
        void this.started.then(resolveFirst, resolveFirst);
        return;
      }
      this.leadingNow = false;
      this.deps.log.log("error", "lost the store's leadership (its connection dropped): exiting so a supervisor restarts this replica cleanly");
      this.deps.onLost();
    });
    // A store nobody else shares leads at once; a follower starts serving without waiting.
    await Promise.race([first, new Promise((r) => setImmediate(r))]);
    if (this.leadingNow) await this.started;
  }

  async stop(): Promise<void> {
    await this.resign?.();
    await this.started?.catch(() => undefined);
    for (const c of [...this.controllers].reverse()) await c.stop();
  }

  /** Resolves when every controller is idle (tests). */
  async idle(): Promise<void> {
    for (const c of this.controllers) await c.idle?.();
  }
}
