import type { VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import type { Quota } from "@quantix/api/gen/Quantixkvm/quota/v1/quota_pb.js";
import { vmUsage, charge, checkBase, copyMessage, isZero, newQuota, notFound, QUOTA_KIND, QuantixError, usageDelta, type Clock, type Kind, type Limits, type Resource, type Store, type TxOp, type Usage } from "@quantix/core";

/** Attempts of a charged write whose object changed between its read and its commit. */
const ATTEMPTS = 20;

/** Projects whose quota's existence a ledger remembers at most. */
const SEEN_PROJECTS = 10_000;

/** How a kind's objects count against their project's quota. */
export interface Charging<T> {
  readonly ledger: QuotaLedger;
  /** What an object uses (the VM kind: vmUsage). */
  readonly usage: (o: T | undefined) => Usage;
  readonly projectOf: (o: T) => string;
}

/**
 * Keeps every project's quota use (Quota.used) in step with its resources: a write that
 * creates, resizes or finally removes one commits its quota's change with it, in one
 * commit, and a growth that would pass a limit refuses the whole commit with
 * RESOURCE_EXHAUSTED (QuotaExceededError). The quota is read and charged under the
 * commit's lock (a `mutate` update), so concurrent creates in a project serialize there
 * and a limit holds however many race: no retries, no lost charge.
 */
export class QuotaLedger {
  /** `defaults`: the cluster's default limits (QUANTIX_DEFAULT_QUOTA), for projects whose quota sets none. */
  constructor(private readonly deps: { store: Store; clock: Clock; defaults: Limits }) {}

  /** Projects whose quota this ledger has seen exist (most recent last), so a charge need not read it first. */
  private readonly seen = new Set<string>();

  private remember(projectId: string): void {
    this.seen.delete(projectId);
    this.seen.add(projectId);
    if (this.seen.size > SEEN_PROJECTS) this.seen.delete(this.seen.values().next().value!);
  }

  /**
   * Commits `ops` with `projectId`'s use changed by `delta` first, all or nothing, and
   * returns what `ops` wrote. A project's first charge creates its quota (unlimited
   * except for the defaults). A release from a project without a quota charges nothing
   * (what was never charged; the usage controller recounts such projects).
   */
  async commit(projectId: string, delta: Usage, ops: readonly TxOp[], actor: string): Promise<Resource[]> {
    if (isZero(delta)) return this.deps.store.commit(ops, { actor });
    for (let attempt = 1; ; attempt++) {
      // A quota seen before is charged without reading it first: the charge reads it under
      // the commit's lock anyway, and a quota gone meanwhile fails the commit (NOT_FOUND), read below.
      const assumed = this.seen.has(projectId);
      const quota = assumed ? true : await this.deps.store.of(QUOTA_KIND).get(projectId);
      if (quota) this.remember(projectId);
      const pre: TxOp[] = [];
      if (!quota) {
        if (!Object.values(delta).some((d) => d > 0)) return this.deps.store.commit(ops, { actor });
        pre.push({ op: "create", kind: QUOTA_KIND as never, object: newQuota(projectId, this.deps.clock.now()) });
      }
      const defaults = this.deps.defaults;
      const nowMs = this.deps.clock.now();
      pre.push({ op: "update", kind: QUOTA_KIND as never, object: { id: projectId, resourceVersion: 0n }, mutate: (q) => charge(q as Quota & Resource, delta, defaults, nowMs) as Quota & Resource });
      try {
        const written = await this.deps.store.commit([...pre, ...ops], { actor });
        return written.slice(pre.length);
      } catch (err) {
        // Another write created the project's quota first: charge that one.
        if (!quota && err instanceof QuantixError && err.code === "already_exists" && attempt < ATTEMPTS && (await this.deps.store.of(QUOTA_KIND).get(projectId))) continue;
        // The quota assumed is gone (or the NOT_FOUND is another op's): read it and try again.
        if (assumed && err instanceof QuantixError && err.code === "not_found") {
          this.seen.delete(projectId);
          if (attempt < ATTEMPTS && !(await this.deps.store.of(QUOTA_KIND).get(projectId))) continue;
        }
        throw err;
      }
    }
  }

  /**
   * Collection.update of an object that counts against a quota, with its change of use
   * (a resize; a removal when the update drops the last finalizer of an object being
   * deleted) charged in the same commit. Without `extra`, as Collection.update, a write
   * without `expectedVersion` never fails for contention: one that changes no use is the
   * collection's own update, one that does reads the object and charges the quota under
   * the commit's lock. With `extra(before, after)` (its events, written with it) it is
   * optimistic and runs again on fresh reads when the object changed meanwhile.
   */
  async update<T extends Resource>(
    kind: Kind<T>,
    id: string,
    mutate: (current: T) => T | undefined,
    c: Charging<T>,
    options: { actor: string; expectedVersion?: bigint | undefined; extra?: (before: T, after: T) => readonly TxOp[] },
  ): Promise<T> {
    const coll = this.deps.store.of(kind);
    const deltaOf = (cur: T, next: T) => usageDelta(c.usage(removes(kind, next) ? undefined : next), c.usage(cur));
    for (let attempt = 1; ; attempt++) {
      const cur = await coll.get(id);
      if (!cur) throw notFound(kind.name, id);
      checkBase(kind as unknown as Kind<Resource>, cur, options.expectedVersion);
      // cur is the store's own object: copied without protobuf-es's reflection (copyMessage).
      const next = mutate(copyMessage(cur));
      if (next === undefined) return cur;
      const extra = options.extra;
      try {
        if (extra) {
          next.resourceVersion = cur.resourceVersion;
          const [written] = await this.commit(c.projectOf(cur), deltaOf(cur, next), [{ op: "update", kind: kind as never, object: next }, ...extra(cur, next)], options.actor);
          return written as T;
        }
        if (isZero(deltaOf(cur, next))) {
          // No use changes (labels, a description): the collection's update, refused if a
          // concurrent change made it charge. The object unchanged since it was read (the same
          // version), the change already made from it is the one to write: mutate runs again
          // only on an object another write changed meanwhile.
          return await coll.update(id, (x) => guarded(x, x.resourceVersion === cur.resourceVersion ? next : mutate(x), deltaOf), { ...(options.expectedVersion !== undefined ? { expectedVersion: options.expectedVersion } : {}), actor: options.actor });
        }
        return await this.chargedUpdate(kind, id, mutate, c, deltaOf, cur, options);
      } catch (err) {
        if (err === CHARGES) return this.chargedUpdate(kind, id, mutate, c, deltaOf, cur, options);
        if (extra && err instanceof QuantixError && err.code === "aborted" && attempt < ATTEMPTS) continue;
        throw err;
      }
    }
  }

  /** An update whose use changes: the object is read, changed and charged under one commit's lock (no conflicts). */
  private async chargedUpdate<T extends Resource>(
    kind: Kind<T>,
    id: string,
    mutate: (current: T) => T | undefined,
    c: Charging<T>,
    deltaOf: (cur: T, next: T) => Usage,
    seen: T,
    options: { actor: string; expectedVersion?: bigint | undefined },
  ): Promise<T> {
    const quotas = this.deps.store.of(QUOTA_KIND);
    const projectId = c.projectOf(seen);
    for (let attempt = 1; ; attempt++) {
      const exists = (await quotas.get(projectId)) !== undefined;
      let delta = usageDelta(c.usage(seen), c.usage(seen));
      const nowMs = this.deps.clock.now();
      const defaults = this.deps.defaults;
      const ops: TxOp[] = [];
      if (!exists) ops.push({ op: "create", kind: QUOTA_KIND as never, object: newQuota(projectId, nowMs) });
      ops.push({
        op: "update",
        kind: kind as never,
        object: { id, resourceVersion: options.expectedVersion ?? 0n },
        mutate: (cur) => {
          const next = mutate(cur as T);
          if (next !== undefined) delta = deltaOf(cur as T, next);
          return next;
        },
      });
      ops.push({ op: "update", kind: QUOTA_KIND as never, object: { id: projectId, resourceVersion: 0n }, mutate: (q) => (isZero(delta) ? undefined : (charge(q as Quota & Resource, delta, defaults, nowMs) as Quota & Resource)) });
      try {
        const written = await this.deps.store.commit(ops, { actor: options.actor });
        return written[exists ? 0 : 1] as T;
      } catch (err) {
        if (err instanceof QuantixError && attempt < ATTEMPTS && ((!exists && err.code === "already_exists") || (exists && err.code === "not_found" && !(await quotas.get(projectId))))) continue;
        throw err;
      }
    }
  }

  /**
   * Collection.delete of an object that counts against a quota: when the delete removes it
   * (no finalizer has work to do) its use is released in the same commit; when it only
   * marks it for deletion, nothing is released yet (the update that drops its last
   * finalizer releases it). `check` may refuse the current state.
   */
  async delete<T extends Resource>(kind: Kind<T>, id: string, c: Charging<T>, options: { actor: string; check?: (current: T) => void }): Promise<T> {
    const coll = this.deps.store.of(kind);
    for (let attempt = 1; ; attempt++) {
      const cur = await coll.get(id);
      if (!cur) throw notFound(kind.name, id);
      options.check?.(cur);
      const f = cur as unknown as { finalizers?: string[] };
      const pending = kind.pendingFinalizers ? kind.pendingFinalizers(cur).filter((x) => f.finalizers?.includes(x)) : (f.finalizers ?? []);
      const removesNow = !kind.finalizers || pending.length === 0;
      const delta = removesNow ? usageDelta(c.usage(undefined), c.usage(cur)) : usageDelta(c.usage(cur), c.usage(cur));
      try {
        const [written] = await this.commit(c.projectOf(cur), delta, [{ op: "delete", kind: kind as never, object: cur }], options.actor);
        return written as T;
      } catch (err) {
        if (!(err instanceof QuantixError && err.code === "aborted") || attempt >= ATTEMPTS) throw err;
      }
    }
  }
}

/** Thrown out of a collection update that turned out to change quota use: it is charged instead. */
const CHARGES = new Error("the update changes quota use");

/** `next`, unless it changes quota use (then CHARGES). */
function guarded<T>(cur: T, next: T | undefined, deltaOf: (cur: T, next: T) => Usage): T | undefined {
  if (next !== undefined && !isZero(deltaOf(cur, next))) throw CHARGES;
  return next;
}

/** Whether an update deletes the object: it drops the last finalizer of an object being deleted. */
function removes<T extends Resource>(kind: Kind<T>, next: T): boolean {
  const f = next as unknown as { finalizers?: string[]; deletionRequestedAt?: unknown };
  return kind.finalizers !== undefined && f.deletionRequestedAt !== undefined && (f.finalizers?.length ?? 0) === 0;
}

/** How VMs count: one VM, its vCPUs and its memory, in its project, until it is finally removed. */
export function vmCharging(ledger: QuotaLedger): Charging<VirtualMachine & Resource> {
  return { ledger, usage: vmUsage, projectOf: (vm) => vm.projectId };
}
