import { systemTimers, type ChangeEvent, type Clock, type Collection, type Resource, type Timers, type WatchEvent } from "@quantix/core";
import type { Logger } from "@quantix/rpc";
import { WorkQueue } from "./work-queue.js";

/** What a reconcile asks for: nothing (done until something changes), or to run again after a delay. */
export type ReconcileResult = void | { readonly requeueAfterMs: number };

/**
 * An error that retrying cannot fix (a spec the node refuses, a capability it lacks): the
 * runtime does not retry it, and the controller's onTerminal writes it where users read it
 * (a condition with `reason`). The next change of the object reconciles it again.
 */
export class TerminalError extends Error {
  override readonly name = "TerminalError";
  constructor(
    readonly reason: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** A store collection a controller follows: each change names the keys to reconcile. */
export interface WatchSource {
  /** The kind, for log lines. */
  readonly name: string;
  readonly watch: (fromRevision: bigint, signal: AbortSignal) => AsyncIterable<WatchEvent<unknown>>;
  readonly keys: (event: ChangeEvent<unknown>) => readonly string[];
}

/** Follows a collection: each change of one of its objects enqueues the keys `keys` names. */
export function watching<T extends Resource>(collection: Collection<T>, keys: (event: ChangeEvent<T>) => readonly string[]): WatchSource {
  return { name: collection.kind.name, watch: (from, signal) => collection.watch(from, signal), keys: keys as (event: ChangeEvent<unknown>) => readonly string[] };
}

/** A controller: what it follows and how it reconciles one key. */
export interface ControllerSpec {
  readonly name: string;
  readonly watches: readonly WatchSource[];
  /** Other sources of keys (a hypervisor's events); each returns an unsubscribe. */
  readonly events?: readonly ((enqueue: (key: string) => void) => () => void)[];
  /** Every key, for the initial pass and the periodic resync (the safety net for anything missed). */
  readonly keys: () => AsyncIterable<string>;
  /** One level-based pass over one key: read everything, compare, take idempotent steps, write status. */
  readonly reconcile: (key: string) => Promise<ReconcileResult>;
  readonly onTerminal?: (key: string, err: TerminalError) => Promise<void>;
  /** Every key is reconciled at least this often; default 30 s. */
  readonly resyncMs?: number;
  /** Keys reconciled at once; default 8. */
  readonly concurrency?: number;
}

/** What every controller gets from the runtime. */
export interface RuntimeDeps {
  readonly clock: Clock;
  readonly timers?: Timers;
  readonly log: Logger;
  /** The store's revision now, where watches start. */
  readonly revision: () => Promise<bigint>;
}

/**
 * The controller runtime (after controller-runtime's): store watches and other event
 * sources enqueue keys into a deduplicating work queue; workers call reconcile(key);
 * a failure is retried with per-key backoff, a TerminalError goes to onTerminal instead,
 * and a result may ask to run again later; every key is resynced periodically. Watches
 * that break (history compacted, database lost) resume from the current revision after
 * a full resync, so nothing is missed. Started and stopped by the ControllerManager,
 * which runs controllers only on the leader.
 */
export class Controller {
  private readonly queue: WorkQueue;
  private readonly timers: Timers;
  private abort = new AbortController();
  private readonly cancels = new Set<() => void>();
  private unsubscribers: (() => void)[] = [];
  private running = false;
  private passes = 0;

  constructor(
    readonly spec: ControllerSpec,
    private readonly deps: RuntimeDeps,
  ) {
    this.timers = deps.timers ?? systemTimers;
    this.queue = new WorkQueue((key) => this.process(key), (key, err, retryInMs) => deps.log.log("warn", `${spec.name}: reconcile failed; retrying with backoff`, { key, error: err instanceof Error ? err.message : String(err), retry_in_ms: retryInMs }), {
      concurrency: spec.concurrency ?? 8,
      schedule: (fn, ms) => this.timers.setTimeout(fn, ms),
    });
  }

  /** Starts following the sources, then reconciles every key once. */
  async start(): Promise<void> {
    if (this.running) return;
    this.running = true;
    this.abort = new AbortController();
    const from = await this.deps.revision();
    for (const w of this.spec.watches) void this.follow(w, from);
    for (const source of this.spec.events ?? []) this.unsubscribers.push(source((key) => this.enqueue(key)));
    await this.resyncAll();
    this.scheduleResync();
  }

  /** Stops taking work and waits for the keys being reconciled. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.running = false;
    this.abort.abort();
    for (const cancel of this.cancels) cancel();
    this.cancels.clear();
    for (const u of this.unsubscribers) u();
    this.unsubscribers = [];
    await this.queue.close();
  }

  /** Asks for a pass over `key` (deduplicated with passes already waiting). Ignored while stopped. */
  enqueue(key: string): void {
    if (this.running) this.queue.add(key);
  }

  /** Reconcile passes run so far (for /metrics, and to show that a follower runs none). */
  get reconciles(): number {
    return this.passes;
  }

  /** Resolves when no key is waiting or being reconciled (tests). */
  idle(): Promise<void> {
    return this.queue.idle();
  }

  private async process(key: string): Promise<void> {
    let result: ReconcileResult;
    this.passes++;
    try {
      result = await this.spec.reconcile(key);
    } catch (err) {
      if (!(err instanceof TerminalError)) throw err;
      this.deps.log.log("warn", `${this.spec.name}: cannot reconcile until something changes`, { key, reason: err.reason, error: err.message });
      await this.spec.onTerminal?.(key, err);
      return;
    }
    if (result && result.requeueAfterMs >= 0) this.after(result.requeueAfterMs, () => this.enqueue(key));
  }

  private after(ms: number, fn: () => void): void {
    const cancel = this.timers.setTimeout(() => {
      this.cancels.delete(cancel);
      fn();
    }, ms);
    this.cancels.add(cancel);
  }

  private scheduleResync(): void {
    this.after(this.spec.resyncMs ?? 30_000, () => {
      if (!this.running) return;
      void this.resyncAll().finally(() => this.running && this.scheduleResync());
    });
  }

  private async resyncAll(): Promise<void> {
    try {
      for await (const key of this.spec.keys()) this.enqueue(key);
    } catch (err) {
      this.deps.log.log("warn", `${this.spec.name}: resync failed; the next one retries`, { error: err instanceof Error ? err.message : String(err) });
    }
  }

  /** Follows one store watch; when it breaks, resyncs and resumes from the current revision. */
  private async follow(w: WatchSource, from: bigint): Promise<void> {
    let rev = from;
    const signal = this.abort.signal;
    while (!signal.aborted) {
      try {
        for await (const ev of w.watch(rev, signal)) {
          rev = ev.revision;
          if (ev.type !== "SYNCED") for (const key of w.keys(ev)) this.enqueue(key);
        }
      } catch (err) {
        if (signal.aborted) return;
        this.deps.log.log("warn", `${this.spec.name}: ${w.name} watch interrupted; resyncing`, { error: err instanceof Error ? err.message : String(err) });
        rev = await this.deps.revision().catch(() => rev);
        await this.resyncAll();
      }
    }
  }
}
