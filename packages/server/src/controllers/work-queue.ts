/**
 * A deduplicating work queue (as controller-runtime's): a key enqueued many times while
 * waiting is processed once; a key is never processed by two workers at once, and a key
 * enqueued while it is being processed is processed again afterwards.
 */
export class WorkQueue {
  private readonly pending = new Set<string>();
  private readonly active = new Set<string>();
  private readonly dirty = new Set<string>();
  private running = 0;
  private closed = false;
  private idleWaiters: (() => void)[] = [];

  constructor(
    private readonly process: (key: string) => Promise<void>,
    private readonly onError: (key: string, err: unknown) => void,
    private readonly concurrency = 8,
  ) {}

  add(key: string): void {
    if (this.closed) return;
    if (this.active.has(key)) {
      this.dirty.add(key);
      return;
    }
    this.pending.add(key);
    this.pump();
  }

  /** Resolves when nothing is pending or running. */
  async idle(): Promise<void> {
    if (this.pending.size === 0 && this.running === 0) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /** Stops taking work and waits for the running items. */
  async close(): Promise<void> {
    this.closed = true;
    this.pending.clear();
    this.dirty.clear();
    await this.idle();
  }

  private pump(): void {
    while (this.running < this.concurrency && this.pending.size > 0) {
      const key = this.pending.values().next().value as string;
      this.pending.delete(key);
      this.active.add(key);
      this.running++;
      void this.process(key)
        .catch((err: unknown) => this.onError(key, err))
        .finally(() => {
          this.active.delete(key);
          this.running--;
          if (this.dirty.delete(key) && !this.closed) this.pending.add(key);
          this.pump();
          if (this.pending.size === 0 && this.running === 0) {
            const waiters = this.idleWaiters;
            this.idleWaiters = [];
            waiters.forEach((w) => w());
          }
        });
    }
  }
}
