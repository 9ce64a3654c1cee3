import { PushIterable, QuantixError, type ChangeEvent, type PushSink, type WatchEvent } from "@quantix/core";

/** Limits of watch history and of each watcher's backlog. */
export interface WatchHubLimits {
  /** Changes kept for resuming watchers (at least this many; older ones are compacted away). */
  readonly historySize: number;
  /** Undelivered changes a slow pulling watcher may accumulate before it is cut off. */
  readonly maxBacklog: number;
}

export const DEFAULT_WATCH_LIMITS: WatchHubLimits = { historySize: 100_000, maxBacklog: 100_000 };

/**
 * Deliveries made in one turn of the event loop, so that a large fan-out does not hold up
 * other calls. Smaller turns also cost less: 10,000 watchers on one HTTP/2 connection
 * (bench/fanout-cpu.ts, 20 writes, 3 alternating rounds) took 47.6-53.2 ms of server CPU
 * a write in turns of 256 against 50.1-53.0 in turns of 512 and 55.6-57.4 in turns of
 * 1,024, and reached the last watcher in 48.3-53.7 against 55.5-57.1 ms (1,024); turns of
 * 64 and 128 were no cheaper than 256.
 */
const DELIVERIES_PER_TURN = 256;

interface Subscriber<T> {
  readonly sink: PushSink<WatchEvent<T>>;
  /** The newest revision this subscriber has been given. */
  last: bigint;
  /** Still subscribed (a flag, not a look-up in the set: the fan-out checks it for every watcher). */
  live: boolean;
}

/**
 * The change history of one kind of object and its live watchers. A new watcher gets
 * the history after its revision and a SYNCED marker at once, then live changes.
 * Changes are delivered after the writing call returns, in turns of the event loop of
 * at most DELIVERIES_PER_TURN watchers, so that neither the write's acknowledgement nor
 * other calls wait for a fan-out to ten thousand watchers; every watcher receives the
 * same event objects, in revision order. A caller waiting for one object follows it with
 * changesOf instead: told in the writing call, by a look-up of the object's id, not a fan-out.
 */
export class WatchHub<T> {
  private history: ChangeEvent<T>[] = [];
  private readonly subscribers = new Set<Subscriber<T>>();
  /** Listeners of one object's changes (changesOf), by object id. */
  private readonly followers = new Map<string, Set<(event: ChangeEvent<T> | undefined) => void>>();
  private pending: ChangeEvent<T>[] = [];
  /** Batches being delivered, oldest first, each with the watchers it goes to and how far it got. */
  private readonly jobs: { events: ChangeEvent<T>[]; subs: Subscriber<T>[]; next: number }[] = [];
  private scheduled = false;
  /** Watchers may resume after this revision or later. */
  private compactedThrough: bigint;

  /**
   * `historyStart`: the revision this hub's history begins after (a durable store's
   * revision when it opened; older changes are read from its own history).
   */
  constructor(
    private readonly kind: string,
    private readonly currentRevision: () => bigint,
    private readonly limits: WatchHubLimits = DEFAULT_WATCH_LIMITS,
    historyStart = 0n,
  ) {
    this.compactedThrough = historyStart;
  }

  /** Undelivered changes a pulling watcher may accumulate before it is cut off. */
  get maxBacklog(): number {
    return this.limits.maxBacklog;
  }

  /** The oldest revision a watcher may resume from with this hub alone. */
  get oldestResumable(): bigint {
    return this.compactedThrough;
  }

  /** Records a change; watchers receive it once the current call stack is done. */
  publish(event: ChangeEvent<T>): void {
    this.history.push(event);
    // Compact in chunks, so that a full history does not cost a copy per write.
    if (this.history.length > this.limits.historySize + Math.max(1, this.limits.historySize >> 4)) {
      const drop = this.history.length - this.limits.historySize;
      this.compactedThrough = this.history[drop - 1]!.revision;
      this.history = this.history.slice(drop);
    }
    this.pending.push(event);
    this.schedule();
    if (this.followers.size > 0) this.tellFollowers(event);
  }

  /**
   * Calls `listener` with each change of object `id` published from now on, as it is
   * published: in the writing call, before the fan-out to watchers (which waits for the
   * next turn of the event loop and for every watcher's own work). For a caller waiting for
   * one object to reach a state (StartVM until its VM runs): it wakes as soon as the write is
   * committed, not after the controllers have reconciled the same change. No history: read
   * the object after calling. The listener runs inside a write, so it must only take note
   * (resolve a promise); what it throws is dropped. `undefined` instead of a change: changes
   * may have been missed (the hub was reset), read the object again. Until the returned
   * function is called.
   */
  changesOf(id: string, listener: (event: ChangeEvent<T> | undefined) => void): () => void {
    let set = this.followers.get(id);
    if (!set) this.followers.set(id, (set = new Set()));
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0 && this.followers.get(id) === set) this.followers.delete(id);
    };
  }

  private tellFollowers(event: ChangeEvent<T>): void {
    const set = this.followers.get((event.object as { id?: unknown }).id as string);
    if (set) tell(set, event);
  }

  /**
   * Pushes the changes after `fromRevision`, a SYNCED marker, then live changes to `sink`
   * until the returned function is called. OUT_OF_RANGE (thrown) when the history no
   * longer reaches back to `fromRevision`, or when it is newer than the store.
   */
  subscribe(fromRevision: bigint, sink: PushSink<WatchEvent<T>>): () => void {
    const current = this.currentRevision();
    if (fromRevision > current) {
      throw new QuantixError("out_of_range", `${this.kind} watch: revision ${fromRevision} is newer than the store's latest revision ${current}`);
    }
    if (fromRevision < this.compactedThrough) {
      throw new QuantixError("out_of_range", `${this.kind} watch: revision ${fromRevision} has been compacted (history starts after ${this.compactedThrough}); list again and watch from the list's resource_version`);
    }
    const replay: WatchEvent<T>[] = this.history.filter((e) => e.revision > fromRevision);
    replay.push({ type: "SYNCED", revision: current });
    // Pending changes are in the replay already: `last` keeps them from coming twice.
    const sub: Subscriber<T> = { sink, last: current, live: true };
    this.subscribers.add(sub);
    sink.push(replay);
    return () => this.drop(sub);
  }

  /** Changes after `fromRevision`, SYNCED, then live ones, until `signal` aborts (pull or push). */
  watch(fromRevision: bigint, signal: AbortSignal): PushIterable<WatchEvent<T>> {
    return new PushIterable<WatchEvent<T>>((sink) => {
      if (signal.aborted) {
        sink.end();
        return () => undefined;
      }
      let unsubscribe: () => void;
      try {
        unsubscribe = this.subscribe(fromRevision, sink);
      } catch (err) {
        sink.fail(err);
        return () => undefined;
      }
      const onAbort = () => {
        unsubscribe();
        sink.end();
      };
      signal.addEventListener("abort", onAbort, { once: true });
      return () => {
        unsubscribe();
        signal.removeEventListener("abort", onAbort);
      };
    }, this.limits.maxBacklog);
  }

  /**
   * Ends every watcher with `err` and forgets the history: this hub's changes no longer
   * form an unbroken sequence (a durable store's history was compacted under a lagging
   * reader, or went back). Watchers may resume from `revision` or later.
   */
  reset(revision: bigint, err: Error): void {
    for (const sub of this.subscribers) {
      sub.live = false;
      sub.sink.fail(err);
    }
    this.subscribers.clear();
    for (const set of this.followers.values()) tell(set, undefined);
    this.jobs.length = 0;
    this.pending = [];
    this.history = [];
    this.compactedThrough = revision;
  }

  /** The number of live watchers (for metrics and tests). */
  get watcherCount(): number {
    return this.subscribers.size;
  }

  private drop(sub: Subscriber<T>): void {
    sub.live = false;
    this.subscribers.delete(sub);
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.deliver());
  }

  private deliver(): void {
    this.scheduled = false;
    if (this.pending.length > 0) {
      this.jobs.push({ events: this.pending, subs: [...this.subscribers], next: 0 });
      this.pending = [];
    }
    let budget = DELIVERIES_PER_TURN;
    while (budget > 0 && this.jobs.length > 0) {
      const job = this.jobs[0]!;
      const first = job.events[0]!.revision;
      const newest = job.events[job.events.length - 1]!.revision;
      while (budget > 0 && job.next < job.subs.length) {
        const sub = job.subs[job.next++]!;
        budget--;
        if (sub.last >= newest || !sub.live) continue;
        const events = sub.last >= first ? job.events.filter((e) => e.revision > sub.last) : job.events;
        sub.last = newest;
        try {
          sub.sink.push(events);
        } catch (err) {
          this.drop(sub);
          sub.sink.fail(err);
        }
      }
      if (job.next >= job.subs.length) this.jobs.shift();
    }
    if (this.jobs.length > 0) this.schedule();
  }
}

/** Tells each of `listeners` of `event` (a copy of the set: a listener may unsubscribe). */
function tell<E>(listeners: ReadonlySet<(event: E) => void>, event: E): void {
  for (const listener of [...listeners]) {
    try {
      listener(event);
    } catch {
      // A listener that throws must not fail the write that published the change, nor keep others from hearing of it.
    }
  }
}
