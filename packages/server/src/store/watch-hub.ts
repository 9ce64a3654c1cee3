import { QuantixError, type ChangeEvent, type WatchEvent } from "@quantix/core";

/** Limits of watch history and of each watcher's backlog. */
export interface WatchHubLimits {
  /** Changes kept for resuming watchers; older ones are compacted away. */
  readonly historySize: number;
  /** Undelivered changes a slow watcher may accumulate before it is cut off. */
  readonly maxBacklog: number;
}

export const DEFAULT_WATCH_LIMITS: WatchHubLimits = { historySize: 100_000, maxBacklog: 100_000 };

interface Subscriber<T> {
  queue: ChangeEvent<T>[];
  wake: (() => void) | undefined;
  failed: QuantixError | undefined;
}

/**
 * The change history of one kind of object and its live watchers. Publishing and
 * subscribing happen synchronously with respect to each other, so a watcher that
 * replays history and then subscribes can neither miss nor repeat a change.
 */
export class WatchHub<T> {
  private readonly history: ChangeEvent<T>[] = [];
  private readonly subscribers = new Set<Subscriber<T>>();
  /** The oldest revision a watcher may resume after. */
  private compactedThrough = 0n;

  constructor(
    private readonly kind: string,
    private readonly currentRevision: () => bigint,
    private readonly limits: WatchHubLimits = DEFAULT_WATCH_LIMITS,
  ) {}

  /** Records a change and hands it to every live watcher. */
  publish(event: ChangeEvent<T>): void {
    this.history.push(event);
    if (this.history.length > this.limits.historySize) {
      const dropped = this.history.splice(0, this.history.length - this.limits.historySize);
      this.compactedThrough = dropped[dropped.length - 1]?.revision ?? this.compactedThrough;
    }
    for (const s of this.subscribers) {
      if (s.failed) continue;
      if (s.queue.length >= this.limits.maxBacklog) {
        s.failed = new QuantixError("resource_exhausted", `${this.kind} watcher fell more than ${this.limits.maxBacklog} changes behind; resume from the last resource_version received`);
      } else {
        s.queue.push(event);
      }
      s.wake?.();
    }
  }

  /** Changes after `fromRevision`, then live ones, until `signal` aborts. */
  async *watch(fromRevision: bigint, signal: AbortSignal): AsyncGenerator<WatchEvent<T>> {
    const current = this.currentRevision();
    if (fromRevision > current) {
      throw new QuantixError("out_of_range", `revision ${fromRevision} is newer than the store's latest revision ${current}`);
    }
    if (fromRevision < this.compactedThrough) {
      throw new QuantixError("out_of_range", `revision ${fromRevision} has been compacted (history starts after ${this.compactedThrough}); list again and watch from the list's resource_version`);
    }
    const sub: Subscriber<T> = { queue: this.history.filter((e) => e.revision > fromRevision), wake: undefined, failed: undefined };
    this.subscribers.add(sub);
    // Everything up to `current` is in the replayed queue: mark the end of it.
    let synced = false;
    const replayed = sub.queue.length;
    const lastReplayed = sub.queue[replayed - 1]?.revision ?? 0n;
    const onAbort = () => sub.wake?.();
    signal.addEventListener("abort", onAbort);
    try {
      while (!signal.aborted) {
        if (!synced && replayed === 0) {
          synced = true;
          yield { type: "SYNCED", revision: current };
          continue;
        }
        if (sub.queue.length > 0) {
          const batch = sub.queue;
          sub.queue = [];
          for (const e of batch) {
            yield e;
            if (!synced && e.revision >= lastReplayed) {
              synced = true;
              yield { type: "SYNCED", revision: current };
            }
          }
          continue;
        }
        if (sub.failed) throw sub.failed;
        await new Promise<void>((resolve) => (sub.wake = resolve));
        sub.wake = undefined;
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      this.subscribers.delete(sub);
    }
  }

  /** The number of live watchers (for metrics and tests). */
  get watcherCount(): number {
    return this.subscribers.size;
  }
}
