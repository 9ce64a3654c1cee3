import { clone, type DescMessage } from "@bufbuild/protobuf";
import { compareCursor, matchesQuery, sortKeyOf, type Collection, type Cursor, type Kind, type ListPage, type Query, type Resource, type WatchEvent, type WriteOptions } from "@quantix/core";
import { checkBase, notFound, QuantixError } from "@quantix/core";
import { WatchHub, type WatchHubLimits } from "./watch-hub.js";

/** How a memory collection writes: through its store, which orders every write of every kind. */
export interface MemoryWriter {
  commitNow(ops: readonly { op: "create" | "update" | "delete"; kind: Kind<Resource>; object: Resource; base?: bigint | undefined }[], actor: string | undefined): Resource[];
}

/**
 * The objects of one kind held in memory. Objects are copied on the way in and deeply
 * frozen, and the frozen objects are what readers and watchers get: no caller can change
 * stored state behind the store's back, and a read costs no copy (the same object can then
 * be serialized once for every watcher; see rpc/encode-cache.ts). Writes go through the
 * store (MemoryStore.commit), so that a transaction over several kinds is one step.
 */
export class MemoryCollection<T extends Resource> implements Collection<T> {
  readonly byId = new Map<string, T>();
  readonly byKey = new Map<string, string>();
  readonly hub: WatchHub<T>;

  constructor(
    readonly kind: Kind<T>,
    private readonly writer: MemoryWriter,
    private readonly currentRevision: () => bigint,
    limits?: WatchHubLimits,
  ) {
    this.hub = new WatchHub(kind.name, currentRevision, limits);
  }

  async create(obj: T, options?: WriteOptions): Promise<T> {
    return this.writer.commitNow([{ op: "create", kind: this.kind as Kind<Resource>, object: obj }], options?.actor)[0] as T;
  }

  async get(id: string): Promise<T | undefined> {
    return this.byId.get(id);
  }

  async list(q: Query): Promise<ListPage<T>> {
    const { order, after, limit } = q;
    const matching = [...this.byId.values()].filter((o) => matchesQuery(this.kind, o, q));
    const pos = (o: T): Cursor => ({ key: sortKeyOf(this.kind, o, order.field), id: o.id });
    const dir = order.desc ? -1 : 1;
    const keyed = matching.map((o) => ({ o, p: pos(o) }));
    keyed.sort((a, b) => dir * compareCursor(a.p, b.p));
    const start = after ? keyed.filter((x) => dir * compareCursor(x.p, after) > 0) : keyed;
    const items = start.slice(0, limit).map((x) => x.o);
    return { items, totalCount: q.countTotal === false ? -1 : matching.length, revision: this.currentRevision(), hasMore: start.length > limit };
  }

  async update(id: string, mutate: (current: T) => T | undefined, options?: WriteOptions): Promise<T> {
    const current = this.mustGet(id);
    checkBase(this.kind as Kind<Resource>, current, options?.expectedVersion);
    const next = mutate(this.copy(current));
    if (next === undefined) return current;
    if (next.id !== id) throw new QuantixError("internal", `${this.kind.name} update changed the id`);
    return this.writer.commitNow([{ op: "update", kind: this.kind as Kind<Resource>, object: next, base: current.resourceVersion }], options?.actor)[0] as T;
  }

  async delete(id: string, check?: (current: T) => void, options?: WriteOptions): Promise<T> {
    const current = this.mustGet(id);
    checkBase(this.kind as Kind<Resource>, current, options?.expectedVersion);
    check?.(this.copy(current));
    return this.writer.commitNow([{ op: "delete", kind: this.kind as Kind<Resource>, object: this.copy(current), base: current.resourceVersion }], options?.actor)[0] as T;
  }

  watch(fromRevision: bigint, signal: AbortSignal): AsyncIterable<WatchEvent<T>> {
    return this.hub.watch(fromRevision, signal);
  }

  /** A private, changeable copy of a stored object. */
  copy(o: T): T {
    return clone(this.kind.schema as DescMessage, o as never) as unknown as T;
  }

  private mustGet(id: string): T {
    const o = this.byId.get(id);
    if (!o) throw notFound(this.kind.name, id);
    return o;
  }
}
