import type { DescMessage } from "@bufbuild/protobuf";
import { compareCursor, matchesQuery, sortKeyOf, whereFieldOf, type ChangeEvent, type Collection, type Cursor, type FieldValue, type Kind, type ListPage, type Query, type Resource, type WatchEvent, type WriteOptions } from "@quantix/core";
import { checkBase, checkMessage, copyMessage, notFound, QuantixError } from "@quantix/core";
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
  /** The objects by id; written only through {@link put}, which keeps the orders and indexes. */
  readonly byId = new Map<string, T>();
  readonly byKey = new Map<string, string>();
  readonly hub: WatchHub<T>;
  /**
   * Per order field a page has asked for, every object sorted by (key, id) ascending, kept
   * up to date by each write from then on: a page is a binary search and a walk, not a sort
   * of the whole kind (which made reading 100,000 VMs a page at a time quadratic).
   */
  private readonly orders = new Map<string, { p: Cursor; o: T }[]>();
  /** Per where field a query has filtered on, the ids of the objects with each value; kept like the orders. */
  private readonly indexes = new Map<string, Map<FieldValue, Set<string>>>();

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
    const dir = order.desc ? -1 : 1;
    const few = this.candidates(q.where);
    if (few) {
      // A where that picks a small part of the kind: those objects, filtered and sorted.
      const matching: T[] = [];
      for (const id of few) {
        const o = this.byId.get(id);
        if (o && matchesQuery(this.kind, o, q)) matching.push(o);
      }
      const keyed = matching.map((o) => ({ o, p: this.pos(o, order.field) }));
      keyed.sort((a, b) => dir * compareCursor(a.p, b.p));
      const start = after ? keyed.filter((x) => dir * compareCursor(x.p, after) > 0) : keyed;
      const items = start.slice(0, limit).map((x) => x.o);
      return { items, totalCount: q.countTotal === false ? -1 : matching.length, revision: this.currentRevision(), hasMore: start.length > limit };
    }
    // Otherwise a walk along the order from the cursor, up to limit + 1 matches.
    const sorted = this.orderOf(order.field);
    let i = after ? (dir > 0 ? bound(sorted, after, true) : bound(sorted, after, false) - 1) : dir > 0 ? 0 : sorted.length - 1;
    const items: T[] = [];
    let hasMore = false;
    for (; i >= 0 && i < sorted.length; i += dir) {
      const o = sorted[i]!.o;
      if (!matchesQuery(this.kind, o, q)) continue;
      if (items.length === limit) {
        hasMore = true;
        break;
      }
      items.push(o);
    }
    let totalCount = -1;
    if (q.countTotal !== false) {
      if (isEmpty(q.where) && isEmpty(q.labels) && isEmpty(q.range)) totalCount = this.byId.size;
      else {
        totalCount = 0;
        for (const o of this.byId.values()) if (matchesQuery(this.kind, o, q)) totalCount++;
      }
    }
    return { items, totalCount, revision: this.currentRevision(), hasMore };
  }

  /** Stores `stored` as object `id` (undefined: removes it), keeping the orders and indexes; the store's one way to write. */
  put(id: string, stored: T | undefined): void {
    const old = this.byId.get(id);
    if (stored) this.byId.set(id, stored);
    else this.byId.delete(id);
    for (const [field, sorted] of this.orders) {
      const p = stored ? this.pos(stored, field) : undefined;
      if (old) {
        const i = this.at(sorted, old, field);
        // A write that keeps the object's place (a heartbeat, a status): replaced where it is,
        // not spliced out and back in (two moves of the whole order at 100,000 VMs).
        if (p && compareCursor(sorted[i]!.p, p) === 0) {
          sorted[i] = { p, o: stored! };
          continue;
        }
        sorted.splice(i, 1);
      }
      if (p) sorted.splice(bound(sorted, p, true), 0, { p, o: stored! });
    }
    for (const [field, index] of this.indexes) {
      const value = whereFieldOf(this.kind, field).value;
      // The same value before and after: the index already holds the id under it.
      if (old && stored && value(old) === value(stored)) continue;
      if (old) {
        const v = value(old);
        const ids = index.get(v);
        ids?.delete(id);
        if (ids?.size === 0) index.delete(v);
      }
      if (stored) {
        const v = value(stored);
        let ids = index.get(v);
        if (!ids) index.set(v, (ids = new Set()));
        ids.add(id);
      }
    }
  }

  private pos(o: T, field: string): Cursor {
    return { key: sortKeyOf(this.kind, o, field), id: o.id };
  }

  /** The sorted order of `field`, built at the first page that asks for it. */
  private orderOf(field: string): { p: Cursor; o: T }[] {
    let sorted = this.orders.get(field);
    if (!sorted) {
      sorted = [...this.byId.values()].map((o) => ({ p: this.pos(o, field), o }));
      sorted.sort((a, b) => compareCursor(a.p, b.p));
      this.orders.set(field, sorted);
    }
    return sorted;
  }

  /** Where `o` sits in `sorted` (its cursor is unique: key, then id). */
  private at(sorted: readonly { p: Cursor; o: T }[], o: T, field: string): number {
    const i = bound(sorted, this.pos(o, field), false);
    if (sorted[i]?.o.id === o.id) return i;
    const j = sorted.findIndex((e) => e.o.id === o.id);
    if (j < 0) throw new QuantixError("internal", `${this.kind.name} '${o.id}' is missing from its order by ${field}`);
    return j;
  }

  /**
   * The ids a where narrows the kind to, when one of its fields picks at most an eighth of
   * it (from that field's index, built at the first query on it); undefined otherwise.
   */
  private candidates(where: Query["where"]): Iterable<string> | undefined {
    if (!where) return undefined;
    let best: { size: number; sets: readonly ReadonlySet<string>[] } | undefined;
    for (const name in where) {
      const want = where[name]!;
      const values: readonly FieldValue[] = Array.isArray(want) ? want : [want as FieldValue];
      const sets = name === "id" ? [new Set(values.filter((v): v is string => typeof v === "string"))] : values.map((v) => this.indexOf(name).get(v) ?? EMPTY);
      const size = sets.reduce((n, x) => n + x.size, 0);
      if (!best || size < best.size) best = { size, sets };
    }
    if (!best || best.size > this.byId.size / 8) return undefined;
    return best.sets.length === 1 ? best.sets[0]! : new Set(best.sets.flatMap((x) => [...x]));
  }

  private indexOf(field: string): Map<FieldValue, Set<string>> {
    let index = this.indexes.get(field);
    if (!index) {
      index = new Map();
      const value = whereFieldOf(this.kind, field).value;
      for (const o of this.byId.values()) {
        const v = value(o);
        let ids = index.get(v);
        if (!ids) index.set(v, (ids = new Set()));
        ids.add(o.id);
      }
      this.indexes.set(field, index);
    }
    return index;
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

  changesOf(id: string, listener: (event: ChangeEvent<T> | undefined) => void): () => void {
    return this.hub.changesOf(id, listener);
  }

  /** A private, changeable copy of a stored object (or of one checkedCopy made). */
  copy(o: T): T {
    return copyMessage(o);
  }

  /**
   * A private copy of an object a caller wrote, checked as protobuf-es's clone checks it
   * (every string valid UTF-16, every field of its type; checkMessage, as the durable
   * stores check what they encode): each write is planned on one, so a bad value fails the
   * write before any of its transaction is stored.
   */
  checkedCopy(o: T): T {
    const copy = copyMessage(o);
    checkMessage(this.kind.schema as DescMessage, copy);
    return copy;
  }

  private mustGet(id: string): T {
    const o = this.byId.get(id);
    if (!o) throw notFound(this.kind.name, id);
    return o;
  }
}

const EMPTY: ReadonlySet<string> = new Set();

const isEmpty = (o: object | undefined) => o === undefined || Object.keys(o).length === 0;

/**
 * In `sorted` (ascending), the first index whose cursor is after `c` (`after`: true) or
 * at or after it (false).
 */
function bound(sorted: readonly { p: Cursor }[], c: Cursor, after: boolean): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    const cmp = compareCursor(sorted[mid]!.p, c);
    if (cmp < 0 || (after && cmp === 0)) lo = mid + 1;
    else hi = mid;
  }
  return hi;
}
