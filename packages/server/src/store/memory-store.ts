import { ALL_KINDS, checkBase, deepFreeze, notFound, planWrite, QuantixError, shareUnchanged, systemClock, type Clock, type Kind, type Resource, type Store, type StoreHealth, type Transaction, type TxOp, type WriteOptions } from "@quantix/core";
import { MemoryCollection } from "./memory-collection.js";
import { runTransaction } from "./transaction.js";
import type { WatchHubLimits } from "./watch-hub.js";

/** Options of a memory store. */
export interface MemoryStoreOptions {
  /** The kinds it keeps; default: every kind the control plane has (ALL_KINDS). */
  readonly kinds?: readonly Kind<Resource>[];
  readonly limits?: WatchHubLimits;
  readonly clock?: Clock;
}

/** One write as the memory store plans it: `base` is the version it is conditional on. */
type Op = { op: "create" | "update" | "delete"; kind: Kind<Resource>; object: Resource; base?: bigint | undefined; mutate?: ((current: Resource) => Resource | undefined) | undefined };

/** A store that keeps everything in memory: for tests and for `QUANTIX_STORE=memory`. */
export class MemoryStore implements Store {
  private revisionValue = 0n;
  private readonly cluster = globalThis.crypto.randomUUID();
  private seeded = false;
  private readonly collections = new Map<Kind<Resource>, MemoryCollection<Resource>>();
  private readonly clock: Clock;

  constructor(options: MemoryStoreOptions = {}) {
    this.clock = options.clock ?? systemClock;
    for (const kind of options.kinds ?? ALL_KINDS) {
      this.collections.set(kind, new MemoryCollection(kind, this, () => this.revisionValue, options.limits));
    }
  }

  of<T extends Resource>(kind: Kind<T>): MemoryCollection<T> {
    const c = this.collections.get(kind as unknown as Kind<Resource>);
    if (!c) throw new QuantixError("internal", `kind ${kind.name} is not registered with this store`);
    return c as unknown as MemoryCollection<T>;
  }

  async commit(ops: readonly TxOp[], options?: Pick<WriteOptions, "actor">): Promise<Resource[]> {
    return this.commitNow(ops.map((o) => ({ op: o.op, kind: o.kind, object: o.object, base: o.op === "create" ? undefined : o.object.resourceVersion, mutate: o.op === "update" ? o.mutate : undefined })), options?.actor);
  }

  transact<R>(fn: (tx: Transaction) => Promise<R>, options?: Pick<WriteOptions, "actor">): Promise<{ result: R; written: Resource[] }> {
    return runTransaction(this, fn, options);
  }

  /**
   * Applies writes atomically, in one synchronous step: every write is planned against the
   * state the earlier ones of the same call leave (ids, unique keys, versions), and only
   * when all are valid are they stored, with consecutive revisions, and published.
   */
  commitNow(ops: readonly Op[], actor: string | undefined): Resource[] {
    const nowMs = this.clock.now();
    const staged = new Map<string, Resource | null>();
    const stagedKeys = new Map<string, string | null>();
    const planned: { coll: MemoryCollection<Resource>; type: "ADDED" | "MODIFIED" | "DELETED"; object: Resource; previous: Resource | undefined; unchanged?: Resource }[] = [];
    for (const op of ops) {
      const coll = this.collection(op.kind);
      const slot = `${op.kind.table}\u0000${op.object.id}`;
      const current = staged.has(slot) ? (staged.get(slot) ?? undefined) : coll.byId.get(op.object.id);
      let object = op.object;
      if (op.mutate) {
        if (!current) throw notFound(op.kind.name, op.object.id);
        checkBase(op.kind, current, op.base);
        const next = op.mutate(coll.copy(current));
        if (next === undefined) {
          planned.push({ coll, type: "MODIFIED", object: current, previous: undefined, unchanged: current });
          continue;
        }
        if (next.id !== current.id) throw new QuantixError("internal", `${op.kind.name} update changed the id`);
        object = next;
      }
      const plan = planWrite(op.kind, op.op, coll.checkedCopy(object), current, { base: op.base, actor, nowMs });
      if (!plan) {
        planned.push({ coll, type: "MODIFIED", object: current!, previous: undefined, unchanged: current! });
        continue;
      }
      const unique = op.kind.unique;
      if (unique) {
        const oldKey = current ? `${op.kind.table}\u0000${unique.key(current)}` : undefined;
        if (plan.type === "DELETED") {
          if (oldKey) stagedKeys.set(oldKey, null);
        } else {
          const newKey = `${op.kind.table}\u0000${unique.key(plan.object)}`;
          const holder = stagedKeys.has(newKey) ? stagedKeys.get(newKey) : coll.byKey.get(unique.key(plan.object));
          if (holder && holder !== op.object.id) throw new QuantixError("already_exists", unique.describe(plan.object));
          if (oldKey && oldKey !== newKey) stagedKeys.set(oldKey, null);
          stagedKeys.set(newKey, op.object.id);
        }
      }
      staged.set(slot, plan.type === "DELETED" ? null : plan.object);
      planned.push({ coll, type: plan.type, object: plan.object, previous: plan.previous });
    }
    return planned.map((p) => (p.unchanged ? p.unchanged : this.store(p.coll, p.type, p.object, p.previous)));
  }

  async revision(): Promise<bigint> {
    return this.revisionValue;
  }

  async clusterId(): Promise<string> {
    return this.cluster;
  }

  async health(): Promise<StoreHealth> {
    return { ok: true, kind: "memory", revision: this.revisionValue.toString() };
  }

  async seedOnce(seed: () => Promise<void>): Promise<boolean> {
    if (this.seeded || this.revisionValue !== 0n) return false;
    this.seeded = true;
    await seed();
    return true;
  }

  lead(onChange: (leader: boolean) => void): () => Promise<void> {
    // Nothing else shares a memory store.
    queueMicrotask(() => onChange(true));
    return async () => undefined;
  }

  async close(): Promise<void> {}

  private collection(kind: Kind<Resource>): MemoryCollection<Resource> {
    return this.of(kind) as MemoryCollection<Resource>;
  }

  private store(coll: MemoryCollection<Resource>, type: "ADDED" | "MODIFIED" | "DELETED", object: Resource, previous: Resource | undefined): Resource {
    this.revisionValue += 1n;
    // A planned object is the write's private checked copy (planWrite), stored as it is; only
    // a stored one (a delete's) is frozen already and needs a copy to take the new revision.
    const stored = Object.isFrozen(object) ? coll.copy(object) : object;
    stored.resourceVersion = this.revisionValue;
    // The change history keeps both versions: what did not change is kept once.
    if (type === "MODIFIED" && previous) shareUnchanged(stored, previous);
    deepFreeze(stored);
    const unique = coll.kind.unique;
    if (previous && unique) coll.byKey.delete(unique.key(previous));
    if (type === "DELETED") {
      coll.put(stored.id, undefined);
    } else {
      coll.put(stored.id, stored);
      if (unique) coll.byKey.set(unique.key(stored), stored.id);
    }
    coll.hub.publish({ type, object: stored, previous: type === "MODIFIED" ? previous : undefined, revision: this.revisionValue });
    return stored;
  }
}
