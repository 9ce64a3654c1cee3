import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { deepFreeze, isPushIterable, PushIterable, type ListPage, type PushSink, type Collection, type Resource, type WatchEvent } from "@quantix/core";

/** A change as a filtered watcher sees it. */
export interface FilteredEvent<T> {
  readonly type: "ADDED" | "MODIFIED" | "DELETED" | "SYNCED";
  readonly object: T | undefined;
  readonly revision: bigint;
}

/** The kind of change a watcher sees. */
export type UpdateKind = FilteredEvent<unknown>["type"];

/** The API's event type for each kind of change. */
export const EVENT_TYPE: Record<UpdateKind, EventType> = {
  ADDED: EventType.ADDED,
  MODIFIED: EventType.MODIFIED,
  DELETED: EventType.DELETED,
  SYNCED: EventType.SYNCED,
};

/**
 * What a store event is for a watcher with a filter: an object that starts matching is
 * ADDED, one that stops matching is DELETED (so the watcher's view stays exact), others
 * pass as they are or not at all (undefined).
 */
export function classify<T>(ev: WatchEvent<T>, matches: (o: T) => boolean): UpdateKind | undefined {
  if (ev.type === "SYNCED") return "SYNCED";
  const now = matches(ev.object);
  if (ev.type === "MODIFIED") {
    const before = ev.previous === undefined ? now : matches(ev.previous);
    return now ? (before ? "MODIFIED" : "ADDED") : before ? "DELETED" : undefined;
  }
  return now ? ev.type : undefined;
}

/** Applies a filter to a store event (see classify). */
export function filterEvent<T>(ev: WatchEvent<T>, matches: (o: T) => boolean): FilteredEvent<T> | undefined {
  const type = classify(ev, matches);
  if (!type) return undefined;
  return { type, object: ev.type === "SYNCED" ? undefined : ev.object, revision: ev.revision };
}

/** Snapshot items pushed per turn of the event loop. */
const SNAPSHOT_SLICE = 1000;

const SLOT: Record<UpdateKind, number> = { ADDED: 0, MODIFIED: 1, DELETED: 2, SYNCED: 3 };

/**
 * The API's update messages, one per (store event, kind), frozen and shared by every
 * watcher that receives it: built once and encoded once (rpc/encode-cache.ts), whether
 * one client watches or ten thousand.
 */
export class SharedUpdates<T, U> {
  private readonly cache = new WeakMap<object, (U | undefined)[]>();
  /** What each filter makes of a batch of store events, by batch and filter key (see view). */
  private readonly views = new WeakMap<readonly WatchEvent<T>[], Map<string, readonly U[]>>();
  private lastEvents: readonly WatchEvent<T>[] | undefined;
  private lastKey: string | undefined;
  private lastView: readonly U[] | undefined;

  constructor(private readonly build: (f: FilteredEvent<T>) => U) {}

  /**
   * The updates a watcher whose filter is `matches` receives for a batch of store events:
   * frozen, and made once per batch and `key` (watchers with equal keys have equal filters),
   * so that a fan-out hands one array to every watcher of a filter, which the gRPC and
   * Connect pumps turn into bytes once (stream-pump.ts). Without a key, made for this
   * watcher alone.
   */
  view(events: readonly WatchEvent<T>[], matches: (o: T) => boolean, key: string | undefined): readonly U[] {
    if (key === undefined) return this.classify(events, matches);
    // A fan-out asks for one batch watcher after watcher, most of them with one query: the last answer first.
    if (events === this.lastEvents && key === this.lastKey) return this.lastView!;
    let byKey = this.views.get(events);
    if (!byKey) {
      byKey = new Map();
      this.views.set(events, byKey);
    }
    let out = byKey.get(key);
    if (!out) {
      out = this.classify(events, matches);
      byKey.set(key, out);
    }
    this.lastEvents = events;
    this.lastKey = key;
    this.lastView = out;
    return out;
  }

  private classify(events: readonly WatchEvent<T>[], matches: (o: T) => boolean): readonly U[] {
    const out: U[] = [];
    for (const ev of events) {
      const type = classify(ev, matches);
      if (type) out.push(this.of(ev, type, ev.type === "SYNCED" ? undefined : ev.object, ev.revision));
    }
    return Object.freeze(out);
  }

  /** The update for `key` (a store event, or a stored object of a snapshot) seen as `type`. */
  of(key: object, type: UpdateKind, object: T | undefined, revision: bigint): U {
    let slots = this.cache.get(key);
    if (!slots) {
      slots = [undefined, undefined, undefined, undefined];
      this.cache.set(key, slots);
    }
    const i = SLOT[type];
    return (slots[i] ??= deepFreeze(this.build({ type, object, revision })));
  }
}

/**
 * The shared shape of every Watch RPC: with no resource version, an ADDED event for each
 * object of a snapshot, SYNCED, and then the changes after the snapshot's revision; with
 * one, exactly the changes after it, then SYNCED. Changes pass through `matches` (see
 * classify) and `updates` makes the API's update message. Watchers given the same
 * `matchKey` must have the same `matches` (the same query): a batch of changes is then
 * classified once for all of them (SharedUpdates.view). The result can be pulled or
 * piped (push), and ends cleanly when `signal` aborts.
 */
export function watchFiltered<T extends Resource, U>(
  repo: Pick<Collection<T>, "watch">,
  fromRevision: bigint,
  snapshot: () => Promise<ListPage<T>>,
  matches: (o: T) => boolean,
  updates: SharedUpdates<T, U>,
  signal: AbortSignal,
  matchKey?: string,
): PushIterable<U> {
  return new PushIterable<U>((sink) => {
    let stopped = false;
    let stopInner: (() => void) | undefined;
    const stop = () => {
      stopped = true;
      stopInner?.();
      signal.removeEventListener("abort", onAbort);
    };
    const onAbort = () => {
      stop();
      sink.end();
    };
    if (signal.aborted) {
      sink.end();
      return () => undefined;
    }
    signal.addEventListener("abort", onAbort, { once: true });
    const inner: PushSink<WatchEvent<T>> = {
      push: (events) => {
        if (stopped) return;
        const out = updates.view(events, matches, matchKey);
        if (out.length > 0) sink.push(out);
      },
      fail: (err) => {
        stop();
        sink.fail(err);
      },
      end: () => {
        stop();
        sink.end();
      },
    };
    void (async () => {
      let from = fromRevision;
      if (from === 0n) {
        const snap = await snapshot();
        // In slices, a turn of the event loop apart, so that a large snapshot can drain
        // to the client as it goes (a pulling consumer's backlog stays bounded).
        for (let i = 0; i < snap.items.length && !stopped; i += SNAPSHOT_SLICE) {
          if (i > 0) await new Promise((resolve) => setImmediate(resolve));
          if (!stopped) sink.push(snap.items.slice(i, i + SNAPSHOT_SLICE).map((o) => updates.of(o, "ADDED", o, o.resourceVersion)));
        }
        if (stopped) return;
        from = snap.revision;
      }
      const source = repo.watch(from, signal);
      if (isPushIterable(source)) {
        stopInner = source.pipe(inner);
        return;
      }
      for await (const ev of source) {
        if (stopped) return;
        inner.push([ev]);
      }
    })().catch((err: unknown) => inner.fail(err));
    return stop;
  });
}
