import type { Cursor } from "./pagination.js";
import type { Kind, Resource } from "./resource/kind.js";
import type { Query } from "./resource/query.js";

/** The kind of a change. */
export type ChangeType = "ADDED" | "MODIFIED" | "DELETED";

/** One change to one object, at the store revision that made it. */
export interface ChangeEvent<T> {
  readonly type: ChangeType;
  /** The object after the change; for DELETED, its last state. */
  readonly object: T;
  /** For MODIFIED, the object before the change (so watchers can tell when it leaves a filter). */
  readonly previous?: T | undefined;
  readonly revision: bigint;
}

/**
 * Marks the end of the replayed history: every change up to `revision` (the store's
 * revision when the watch began) has been delivered; what follows is live.
 */
export interface SyncedEvent {
  readonly type: "SYNCED";
  readonly revision: bigint;
}

/** What a store watch yields. */
export type WatchEvent<T> = ChangeEvent<T> | SyncedEvent;

/** A page of a list, read at one revision. */
export interface ListPage<T> {
  readonly items: T[];
  /** How many objects match the filter in all; -1 when the query asked not to count. */
  readonly totalCount: number;
  /** The revision the page was read at; a watch from it misses nothing. */
  readonly revision: bigint;
  /** Whether more objects follow the last one. */
  readonly hasMore: boolean;
}

/** Options of a write. */
export interface WriteOptions {
  /** Write only if the object's resource_version is still this one (else ABORTED); 0n or absent: unconditional. */
  readonly expectedVersion?: bigint;
  /**
   * Who writes: a controller's name ("scheduler", "vm-controller", ...) or "api". A change
   * to a field the kind declares owned (Kind.owned) by someone else is refused.
   */
  readonly actor?: string;
}

/**
 * The objects of one kind, keyed by id, with the kind's unique key, revisions and watch.
 * Implementations: memory (tests, laptops), and the durable stores. Every implementation
 * passes store.contract.ts, for every kind.
 *
 * Objects a collection returns (and yields from watch) are read-only snapshots: an
 * implementation may hand out deeply frozen objects shared between readers (the memory
 * store does), so callers clone before changing one. Input objects are copied.
 *
 * Kinds with finalizers (Kind.finalizers): delete() of an object that still has
 * finalizers only marks it (deletion_requested_at, a MODIFIED change); it stays until a
 * write removes its last finalizer, which deletes it (a DELETED change).
 */
export interface Collection<T extends Resource> {
  readonly kind: Kind<T>;
  /** Stores a new object; sets its resource_version. ALREADY_EXISTS when its id or unique key is taken. */
  create(obj: T, options?: WriteOptions): Promise<T>;
  /** The object, or undefined. */
  get(id: string): Promise<T | undefined>;
  /** A page of objects matching a query, in the query's order, after its cursor. */
  list(query: Query): Promise<ListPage<T>>;
  /**
   * Reads the object, passes a copy to `mutate`, and stores what it returns (a new
   * revision) unless it returns undefined (nothing to change: the current object comes
   * back). `mutate` must be pure: durable stores may call it again after a conflict; a
   * write without expectedVersion never fails because others wrote meanwhile.
   * NOT_FOUND if absent; ABORTED if `expectedVersion` is stale.
   */
  update(id: string, mutate: (current: T) => T | undefined, options?: WriteOptions): Promise<T>;
  /**
   * Deletes the object after `check` (which may throw to refuse) accepts its current
   * state, or marks it for deletion while it has finalizers. Returns its last (or
   * marked) state. NOT_FOUND if absent.
   */
  delete(id: string, check?: (current: T) => void, options?: WriteOptions): Promise<T>;
  /**
   * Every change after `fromRevision`, in revision order, then one SYNCED marker, then live changes, until
   * `signal` aborts. OUT_OF_RANGE when history no longer reaches back to it.
   */
  watch(fromRevision: bigint, signal: AbortSignal): AsyncIterable<WatchEvent<T>>;
  /**
   * Calls `listener` with each change of object `id` this process learns of from now on, as
   * soon as it does: in the call that publishes it (the write, or the read of another
   * replica's change), before watchers get it on a later turn of the event loop. For a
   * caller waiting for one object to reach a state (services/wait.ts); watchers still get
   * every change, in order. No history: read the object after calling. The listener must
   * only take note (resolve a promise), never write; `undefined` means changes may have been
   * missed, so read the object again. Until the returned function is called.
   */
  changesOf(id: string, listener: (event: ChangeEvent<T> | undefined) => void): () => void;
}

/** One write of a transaction. Updates and deletes are conditional on the version of the object given. */
export type TxOp =
  | { readonly op: "create"; readonly kind: Kind<Resource>; readonly object: Resource }
  /**
   * Stores `object` if the stored one is still at object.resourceVersion (0n: unconditional).
   * With `mutate`, stores what it makes of the stored object instead (read under the
   * commit's lock, after the earlier writes of the same commit: a counter such as a quota's
   * use is charged without a conflict), or nothing when it returns undefined; it may throw to
   * refuse the whole commit. `object` then only names the id (and a version, if not 0n).
   */
  | { readonly op: "update"; readonly kind: Kind<Resource>; readonly object: Resource; readonly mutate?: (current: Resource) => Resource | undefined }
  /** Deletes (or, with finalizers, marks) `object` if it is still at object.resourceVersion (0n: unconditional). */
  | { readonly op: "delete"; readonly kind: Kind<Resource>; readonly object: Resource };

/** Stages the writes of a transaction, reading through it. */
export interface Transaction {
  get<T extends Resource>(kind: Kind<T>, id: string): Promise<T | undefined>;
  create<T extends Resource>(kind: Kind<T>, object: T): void;
  update<T extends Resource>(kind: Kind<T>, object: T): void;
  delete<T extends Resource>(kind: Kind<T>, object: T): void;
}

/** The health of a store, for /_/health. */
export interface StoreHealth {
  readonly ok: boolean;
  /** "memory", "embedded" or "postgres". */
  readonly kind: string;
  readonly revision: string;
  readonly detail?: string;
}

/** All state of the control plane. One revision sequence orders every change of every kind. */
export interface Store {
  /** The collection of a kind registered with the store (INTERNAL for an unregistered one). */
  of<T extends Resource>(kind: Kind<T>): Collection<T>;
  /**
   * Applies several writes, of any kinds, atomically: all or none. Each gets its own
   * revision, consecutive, in the order given. ABORTED (nothing written) when an update or
   * delete finds its object changed; ALREADY_EXISTS, NOT_FOUND as the single writes.
   * Returns each object as stored (for a delete, its last or marked state).
   */
  commit(ops: readonly TxOp[], options?: Pick<WriteOptions, "actor">): Promise<Resource[]>;
  /**
   * Runs `fn`, which reads through the transaction and stages writes, then commits them;
   * runs it again (up to a bound, then ABORTED) when an object it read changed before the
   * commit. `fn` must be pure apart from the transaction.
   */
  transact<R>(fn: (tx: Transaction) => Promise<R>, options?: Pick<WriteOptions, "actor">): Promise<{ result: R; written: Resource[] }>;
  /** The latest revision. */
  revision(): Promise<bigint>;
  /**
   * This store's cluster id, made once when the store was created: guests a control plane
   * creates carry it (CLUSTER_METADATA_KEY), so a guest of ours is told apart from one of
   * another cluster, or of a store that was replaced.
   */
  clusterId(): Promise<string>;
  health(): Promise<StoreHealth>;
  /**
   * Runs `seed` (the demo data) once in the life of the store: only when nothing was ever
   * written to it, never over a user's changes, and by one replica. Resolves to whether it ran.
   */
  seedOnce(seed: () => Promise<void>): Promise<boolean>;
  /**
   * Campaigns to be the one replica that runs controllers: `onChange(true)` when this
   * process leads, `onChange(false)` when it no longer does. Returns a function that
   * resigns. A store no other process shares leads at once.
   */
  lead(onChange: (leader: boolean) => void): () => Promise<void>;
  close(): Promise<void>;
}

/** Every object of a kind matching a filter, a page of 1,000 at a time, in the kind's default order. */
export async function* allOf<T extends Resource>(collection: Collection<T>, filter: Pick<Query, "where" | "labels"> = {}): AsyncGenerator<T> {
  const field = collection.kind.orderBy[0]!;
  let after: Cursor | undefined;
  for (;;) {
    const page = await collection.list({ ...filter, order: { field, desc: false }, after, limit: 1000, countTotal: false });
    yield* page.items;
    const last = page.items[page.items.length - 1];
    if (!page.hasMore || !last) return;
    const v = collection.kind.fields[field]!.value(last);
    after = { key: typeof v === "boolean" ? Number(v) : v, id: last.id };
  }
}
