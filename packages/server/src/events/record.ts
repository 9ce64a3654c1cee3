import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { EventSchema, Severity, type Event } from "@quantix/api/gen/Quantixkvm/event/v1/event_pb.js";
import type { Charging } from "../quota/quota-ledger.js";
import { checkBase, copyMessage, EVENT_KIND, notFound, QuantixError, randomIds, type IdGenerator, type Kind, type Resource, type Store, type WriteOptions } from "@quantix/core";

/** What happened to an object, as a component reports it (an Event without its bookkeeping). */
export interface EventInit {
  readonly type: string;
  readonly reason: string;
  readonly message: string;
  readonly warning?: boolean;
  /** The node involved, when it is not the object itself. */
  readonly nodeId?: string;
}

/** The Event of `init` about `object` of `kind`, by `actor`, at `nowMs`. */
export function eventOf(kind: Kind<Resource>, object: Resource, init: EventInit, actor: string, nowMs: number, ids: IdGenerator = randomIds): Event {
  const o = object as Resource & { projectId?: string; name?: string; hostname?: string };
  return create(EventSchema, {
    id: ids.newId(),
    projectId: o.projectId ?? "",
    objectKind: kind.name,
    objectId: o.id,
    objectName: o.name ?? o.hostname ?? "",
    type: init.type,
    reason: init.reason,
    message: init.message,
    actor,
    severity: init.warning ? Severity.WARNING : Severity.NORMAL,
    time: timestampFromMs(nowMs),
    nodeId: init.nodeId ?? (kind.name === "node" ? o.id : ""),
  });
}

/**
 * Collection.update, plus the events the change means, in the same transaction: an event
 * is never recorded for a change that did not happen, nor a change left without its
 * event. `events(before, after)` says which; when it says none (most writes), the update
 * is an ordinary one. With `charging`, a change of the object's quota use (a resize, its
 * removal) is charged in the same commit too (QuotaLedger.update).
 */
export async function updateWithEvents<T extends Resource>(
  store: Store,
  kind: Kind<T>,
  id: string,
  mutate: (current: T) => T | undefined,
  events: (before: T, after: T) => readonly EventInit[],
  options: WriteOptions & {
    actor: string;
    nowMs: number;
    charging?: Charging<T>;
    /**
     * Whether mutate could change the object as it is now (read-only, on the stored object):
     * false ends the update there, with no copy made and nothing written. For writers whose
     * writes mostly change nothing (a controller's status after each of its passes). Not
     * consulted with an expectedVersion (a stale one still fails) nor with charging.
     */
    changes?: (current: T) => boolean;
  },
): Promise<T> {
  const c = options.charging;
  if (c) {
    const extra = (before: T, after: T) => events(before, after).map((e) => ({ op: "create" as const, kind: EVENT_KIND as never, object: eventOf(kind as unknown as Kind<Resource>, after, e, options.actor, options.nowMs) }));
    return c.ledger.update(kind, id, mutate, c, { actor: options.actor, expectedVersion: options.expectedVersion, extra });
  }
  const coll = store.of(kind);
  const peek = await coll.get(id);
  if (!peek) throw notFound(kind.name, id);
  if (options.changes && options.expectedVersion === undefined && !options.changes(peek)) return peek;
  // Most writes (a heartbeat, a status update) mean no event: one ordinary update, whose
  // mutate sees the object at peek's version (so peek is its "before") and gives the write
  // up when it would mean events, or when the object moved on since peek; then the
  // transaction below. No dry run on a copy of its own: that doubled the copies per write.
  let eventful = false;
  let made: { next: T; inits: readonly EventInit[] } | undefined;
  const plain = await coll.update(
    id,
    (cur) => {
      if (cur.resourceVersion !== peek.resourceVersion) return (eventful = true), undefined;
      const next = mutate(cur);
      const inits = next === undefined ? [] : events(peek, next);
      if (inits.length > 0) return (eventful = true), (made = { next: next!, inits }), undefined;
      return next;
    },
    options,
  );
  if (!eventful) return plain;
  // The change given up was made from peek's version: committed with its events on that
  // version, without reading and changing the object again; if it moved on since, the
  // transaction below starts over from the object as it is.
  if (made) {
    const { next, inits } = made;
    const ops = [{ op: "update" as const, kind: kind as unknown as Kind<Resource>, object: next }, ...inits.map((e) => ({ op: "create" as const, kind: EVENT_KIND as never, object: eventOf(kind as unknown as Kind<Resource>, next, e, options.actor, options.nowMs) }))];
    try {
      return (await store.commit(ops, { actor: options.actor }))[0] as T;
    } catch (err) {
      if (!(err instanceof QuantixError && err.code === "aborted")) throw err;
    }
  }
  const { written, result } = await store.transact(
    async (tx) => {
      const cur = await tx.get(kind, id);
      if (!cur) throw notFound(kind.name, id);
      checkBase(kind as unknown as Kind<Resource>, cur, options.expectedVersion);
      const next = mutate(copyMessage(cur));
      if (next === undefined) return cur;
      tx.update(kind, next);
      for (const e of events(cur, next)) tx.create(EVENT_KIND, eventOf(kind as unknown as Kind<Resource>, next, e, options.actor, options.nowMs) as never);
      return undefined;
    },
    { actor: options.actor },
  );
  return (result ?? written[0]) as T;
}
