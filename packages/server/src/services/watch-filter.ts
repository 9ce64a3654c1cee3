import { deepFreeze, type ListPage, type Repository, type WatchEvent } from "@quantix/core";

/** A change as a filtered watcher sees it. */
export interface FilteredEvent<T> {
  readonly type: "ADDED" | "MODIFIED" | "DELETED" | "SYNCED";
  readonly object: T | undefined;
  readonly revision: bigint;
}

/**
 * Applies a filter to a store event. An object that starts matching is ADDED, one that
 * stops matching is DELETED (so a watcher's view stays exact), others pass or drop.
 */
export function filterEvent<T>(ev: WatchEvent<T>, matches: (o: T) => boolean): FilteredEvent<T> | undefined {
  if (ev.type === "SYNCED") return { type: "SYNCED", object: undefined, revision: ev.revision };
  const now = matches(ev.object);
  if (ev.type === "MODIFIED") {
    const before = ev.previous === undefined ? now : matches(ev.previous);
    if (now && before) return { type: "MODIFIED", object: ev.object, revision: ev.revision };
    if (now) return { type: "ADDED", object: ev.object, revision: ev.revision };
    if (before) return { type: "DELETED", object: ev.object, revision: ev.revision };
    return undefined;
  }
  return now ? { type: ev.type, object: ev.object, revision: ev.revision } : undefined;
}

/**
 * The shared shape of every Watch RPC: with no resource version, an ADDED event for each
 * object of a snapshot and then the changes after the snapshot's revision; with one,
 * exactly the changes after it. Changes pass through `matches` (see filterEvent).
 */
export async function* watchFiltered<T extends { resourceVersion: bigint }>(
  repo: Repository<T, unknown>,
  fromRevision: bigint,
  snapshot: () => Promise<ListPage<T>>,
  matches: (o: T) => boolean,
  signal: AbortSignal,
): AsyncGenerator<FilteredEvent<T>> {
  let from = fromRevision;
  if (from === 0n) {
    const snap = await snapshot();
    for (const o of snap.items) yield { type: "ADDED", object: o, revision: o.resourceVersion };
    from = snap.revision;
  }
  for await (const ev of repo.watch(from, signal)) {
    const f = filterEvent(ev, matches);
    if (f) yield f;
  }
}

const shared = new WeakMap<object, Map<string, unknown>>();

/**
 * One frozen update message per (stored object, event type, revision), shared by every
 * watcher that receives it: built once, and encoded once (rpc/encode-cache.ts), whether
 * one client watches or ten thousand.
 */
export function sharedUpdate<U>(object: object | undefined, type: string, revision: bigint, build: () => U): U {
  if (!object || !Object.isFrozen(object)) return build();
  let byKey = shared.get(object);
  if (!byKey) {
    byKey = new Map();
    shared.set(object, byKey);
  }
  const key = `${type}@${revision}`;
  let u = byKey.get(key) as U | undefined;
  if (u === undefined) {
    u = deepFreeze(build());
    byKey.set(key, u);
  }
  return u;
}
