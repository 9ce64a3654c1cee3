import type { DescMessage, MessageShape } from "@bufbuild/protobuf";
import { clone } from "@bufbuild/protobuf";
import { compareCursor, deepFreeze, notFound, QuantixError, type Cursor, type ListPage, type Order, type Repository, type WatchEvent, type WriteOptions } from "@quantix/core";
import { WatchHub, type WatchHubLimits } from "./watch-hub.js";

/** How a memory collection reads its objects. */
export interface CollectionSpec<S extends DescMessage, Q> {
  readonly kind: string;
  readonly schema: S;
  readonly id: (o: MessageShape<S>) => string;
  /** The unique key, and how to describe a clash. */
  readonly uniqueKey: (o: MessageShape<S>) => string;
  readonly describeClash: (o: MessageShape<S>) => string;
  readonly matches: (o: MessageShape<S>, q: Q) => boolean;
  readonly sortKey: (o: MessageShape<S>, field: string) => string | number;
  readonly pageOf: (q: Q) => { readonly order: Order<string>; readonly after?: Cursor | undefined; readonly limit: number };
}

/** The revision sequence shared by all collections of one store. */
export interface RevisionCounter {
  value: bigint;
}

type Versioned = { resourceVersion: bigint };

/**
 * A collection held in memory. Objects are copied on the way in and deeply frozen, and
 * the frozen objects are what readers and watchers get: no caller can change stored
 * state behind the store's back, and a read costs no copy (the same object can then be
 * serialized once for every watcher; see rpc/encode-cache.ts).
 */
export class MemoryCollection<S extends DescMessage, Q> implements Repository<MessageShape<S>, Q> {
  private readonly byId = new Map<string, MessageShape<S>>();
  private readonly byKey = new Map<string, string>();
  readonly hub: WatchHub<MessageShape<S>>;

  constructor(
    private readonly spec: CollectionSpec<S, Q>,
    private readonly counter: RevisionCounter,
    limits?: WatchHubLimits,
  ) {
    this.hub = new WatchHub(spec.kind, () => counter.value, limits);
  }

  async create(obj: MessageShape<S>): Promise<MessageShape<S>> {
    const id = this.spec.id(obj);
    const key = this.spec.uniqueKey(obj);
    if (this.byId.has(id)) throw new QuantixError("already_exists", `${this.spec.kind} '${id}' already exists`);
    if (this.byKey.has(key)) throw new QuantixError("already_exists", this.spec.describeClash(obj));
    const stored = this.commit(obj);
    this.byId.set(id, stored);
    this.byKey.set(key, id);
    this.hub.publish({ type: "ADDED", object: stored, revision: this.counter.value });
    return stored;
  }

  async get(id: string): Promise<MessageShape<S> | undefined> {
    return this.byId.get(id);
  }

  async list(q: Q): Promise<ListPage<MessageShape<S>>> {
    const { order, after, limit } = this.spec.pageOf(q);
    const matching = [...this.byId.values()].filter((o) => this.spec.matches(o, q));
    const pos = (o: MessageShape<S>): Cursor => ({ key: this.spec.sortKey(o, order.field), id: this.spec.id(o) });
    const dir = order.desc ? -1 : 1;
    matching.sort((a, b) => dir * compareCursor(pos(a), pos(b)));
    const start = after ? matching.filter((o) => dir * compareCursor(pos(o), after) > 0) : matching;
    const items = start.slice(0, limit);
    return { items, totalCount: matching.length, revision: this.counter.value, hasMore: start.length > limit };
  }

  async update(id: string, mutate: (current: MessageShape<S>) => MessageShape<S> | undefined, options?: WriteOptions): Promise<MessageShape<S>> {
    const current = this.mustGet(id);
    this.checkVersion(id, current, options);
    const next = mutate(this.copy(current));
    if (next === undefined) return current;
    if (this.spec.id(next) !== id) throw new QuantixError("internal", `${this.spec.kind} update changed the id`);
    const oldKey = this.spec.uniqueKey(current);
    const newKey = this.spec.uniqueKey(next);
    if (newKey !== oldKey && this.byKey.has(newKey)) throw new QuantixError("already_exists", this.spec.describeClash(next));
    const stored = this.commit(next);
    this.byId.set(id, stored);
    this.byKey.delete(oldKey);
    this.byKey.set(newKey, id);
    this.hub.publish({ type: "MODIFIED", object: stored, previous: current, revision: this.counter.value });
    return stored;
  }

  async delete(id: string, check?: (current: MessageShape<S>) => void, options?: WriteOptions): Promise<MessageShape<S>> {
    const current = this.mustGet(id);
    this.checkVersion(id, current, options);
    check?.(this.copy(current));
    this.byId.delete(id);
    this.byKey.delete(this.spec.uniqueKey(current));
    this.counter.value += 1n;
    const last = this.copy(current);
    (last as unknown as Versioned).resourceVersion = this.counter.value;
    const frozen = deepFreeze(last);
    this.hub.publish({ type: "DELETED", object: frozen, revision: this.counter.value });
    return frozen;
  }

  watch(fromRevision: bigint, signal: AbortSignal): AsyncIterable<WatchEvent<MessageShape<S>>> {
    return this.hub.watch(fromRevision, signal);
  }

  private commit(obj: MessageShape<S>): MessageShape<S> {
    this.counter.value += 1n;
    const stored = this.copy(obj);
    (stored as unknown as Versioned).resourceVersion = this.counter.value;
    return deepFreeze(stored);
  }

  private mustGet(id: string): MessageShape<S> {
    const o = this.byId.get(id);
    if (!o) throw notFound(this.spec.kind, id);
    return o;
  }

  private checkVersion(id: string, current: MessageShape<S>, options?: WriteOptions): void {
    const expected = options?.expectedVersion;
    const actual = (current as unknown as Versioned).resourceVersion;
    if (expected !== undefined && expected !== 0n && expected !== actual) {
      throw new QuantixError("aborted", `${this.spec.kind} '${id}' was changed: resource_version is ${actual}, not ${expected}; read it again and retry`);
    }
  }

  private copy(o: MessageShape<S>): MessageShape<S> {
    return clone(this.spec.schema, o);
  }
}

