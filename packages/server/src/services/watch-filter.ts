import type { WatchEvent } from "@quantix/core";

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
