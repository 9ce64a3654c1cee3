import { clone, create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { StoragePoolSchema, StoragePoolSpecSchema, StoragePoolState, StoragePoolStatusSchema, StoragePoolType, type StoragePool } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { UpdateStoragePoolRequestSchema, type CreateStoragePoolRequest, type DeleteStoragePoolRequest, type UpdateStoragePoolRequest } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import {
  allOf,
  commonViolations,
  fixedPoolSpecChanges,
  invalidArgument,
  notFound,
  isLocalPool,
  NODE_KIND,
  poolTypeCapability,
  QuantixError,
  SERVED_POOL_TYPES,
  STORAGE_POOL_KIND,
  throwIfViolations,
  validatePoolName,
  validatePoolSpec,
  Violations,
  VOLUME_KIND,
  type Clock,
  type IdGenerator,
  type Store,
  type TxOp,
} from "@quantix/core";
import { ResourceWriter, type Budget } from "../resources/resource-writer.js";
import { waitGone } from "./wait.js";
import { requireWellFormedId } from "../resources/resource-service.js";

/** The spec fields an update may change (type and the backend's location are fixed). */
const MUTABLE_SPEC = ["overcommit_ratio", "node_ids", "node_selector", "is_default", "default_volume_format", "disabled", "reserved_gib"] as const;
const MUTABLE_LOCAL = ["overcommitRatio", "nodeIds", "nodeSelector", "isDefault", "defaultVolumeFormat", "disabled", "reservedGib"] as const;

/**
 * StoragePoolService's writes: pools are the cluster's, managed by operators. LOCAL_DIR
 * and SHARED_DIR are served (directories of qemu-img files); another type is accepted
 * only when a node reports it can serve it (its status.hypervisor.capabilities lists
 * `storage-pool-<type>`), else refused with FAILED_PRECONDITION saying so. At most one
 * pool is the default: setting it clears it on the previous one in the same commit.
 */
export class StoragePoolService {
  private readonly writer: ResourceWriter<StoragePool & { id: string; resourceVersion: bigint }>;

  constructor(private readonly deps: { store: Store; clock: Clock; ids: IdGenerator }) {
    this.writer = new ResourceWriter(STORAGE_POOL_KIND, deps.store, deps.clock, deps.ids, {
      writable: ["name", "labels", "description", ...MUTABLE_SPEC.map((f) => `spec.${f}`)],
      unmasked: (draft, req) => {
        const r = req as unknown as UpdateStoragePoolRequest;
        if (r.name !== "") draft["name"] = r.name;
        if (Object.keys(r.labels).length > 0) draft["labels"] = { ...r.labels };
        if (r.description !== "") draft["description"] = r.description;
        if (r.spec) {
          const spec = (draft["spec"] ??= create(StoragePoolSpecSchema)) as Record<string, unknown>;
          const given = clone(StoragePoolSpecSchema, r.spec);
          for (const f of MUTABLE_LOCAL) spec[f] = given[f];
        }
      },
      check: (next, cur) => {
        const v = new Violations();
        validatePoolName(v, next.name);
        throwIfViolations([...v.list, ...validatePoolSpec(next.spec), ...(cur ? fixedPoolSpecChanges(cur, next) : [])]);
      },
    });
  }

  async create(req: CreateStoragePoolRequest): Promise<StoragePool> {
    const nowMs = this.deps.clock.now();
    const pool = create(StoragePoolSchema, { name: req.name, description: req.description, labels: req.labels, ...(req.spec ? { spec: clone(StoragePoolSpecSchema, req.spec) } : {}) });
    const v = new Violations();
    validatePoolName(v, pool.name);
    throwIfViolations([...v.list, ...validatePoolSpec(pool.spec), ...commonViolations(pool)]);
    const spec = pool.spec!;
    await this.checkNodes(spec.nodeIds);
    await this.checkServed(spec.type, spec.nodeIds);
    pool.id = this.deps.ids.newId();
    pool.createdAt = pool.updatedAt = timestampFromMs(nowMs);
    pool.generation = 1n;
    pool.status = create(StoragePoolStatusSchema, { state: StoragePoolState.PENDING, shared: !isLocalPool(spec.type) });
    const ops: TxOp[] = [{ op: "create", kind: STORAGE_POOL_KIND as never, object: pool as never }];
    if (spec.isDefault) ops.push(...(await this.clearDefaults(pool.id, nowMs)));
    const [created] = await this.deps.store.commit(ops, { actor: "api" });
    return created as unknown as StoragePool;
  }

  async update(req: UpdateStoragePoolRequest): Promise<StoragePool> {
    if (req.spec && (req.updateMask === undefined || req.updateMask.paths.includes("spec.node_ids"))) await this.checkNodes(req.spec.nodeIds);
    const updated = await this.writer.update(req.id, UpdateStoragePoolRequestSchema, req);
    if (updated.spec?.isDefault) {
      const ops = await this.clearDefaults(updated.id, this.deps.clock.now());
      if (ops.length > 0) await this.deps.store.commit(ops, { actor: "api" });
    }
    return updated;
  }

  /**
   * DeleteStoragePool: refused while the pool holds volumes (the error says how many).
   * Then marked: the pool controller removes it from its nodes and the pool goes; the
   * call waits for that within `budget`. A pool already being deleted is only waited for.
   */
  async delete(req: DeleteStoragePoolRequest, budget: Budget): Promise<void> {
    requireWellFormedId("id", req.id);
    const pools = this.deps.store.of(STORAGE_POOL_KIND);
    const cur = await pools.get(req.id);
    if (!cur) throw notFound("storage pool", req.id);
    if (!cur.deletionRequestedAt) {
      const page = await this.deps.store.of(VOLUME_KIND).list({ where: { pool_id: req.id }, order: { field: "name", desc: false }, limit: 1, countTotal: true });
      if (page.totalCount > 0) {
        throw new QuantixError("failed_precondition", `storage pool '${req.id}' holds ${page.totalCount} volume${page.totalCount === 1 ? "" : "s"}: delete ${page.totalCount === 1 ? "it" : "them"} first`);
      }
      await pools.delete(req.id, undefined, { actor: "api" });
    }
    await waitGone(pools, req.id, budget.ms, budget.signal);
  }

  /** INVALID_ARGUMENT naming each node id that is not a registered node. */
  private async checkNodes(nodeIds: readonly string[]): Promise<void> {
    const v = new Violations();
    for (const [i, id] of nodeIds.entries()) if (!(await this.deps.store.of(NODE_KIND).get(id))) v.add(`spec.node_ids[${i}]`, "NOT_FOUND", `node '${id}' is not registered`);
    throwIfViolations(v.list);
  }

  /** FAILED_PRECONDITION for a pool type nobody serves: not one of ours, and no node (of `nodeIds`, when given) reports it. */
  private async checkServed(type: StoragePoolType, nodeIds: readonly string[]): Promise<void> {
    if (SERVED_POOL_TYPES.has(type)) return;
    const capability = poolTypeCapability(type);
    for await (const n of allOf(this.deps.store.of(NODE_KIND))) {
      if (nodeIds.length > 0 && !nodeIds.includes(n.id)) continue;
      if (n.status?.hypervisor?.capabilities.includes(capability)) return;
    }
    throw new QuantixError(
      "failed_precondition",
      `no ${nodeIds.length > 0 ? "node of spec.node_ids" : "node"} reports the capability '${capability}': ${StoragePoolType[type]} pools need a node whose agent serves them; pool types served today: LOCAL_DIR, SHARED_DIR`,
    );
  }

  /** Updates that clear is_default on every other pool. */
  private async clearDefaults(keepId: string, nowMs: number): Promise<TxOp[]> {
    const ops: TxOp[] = [];
    for await (const p of allOf(this.deps.store.of(STORAGE_POOL_KIND))) {
      if (p.id === keepId || !p.spec?.isDefault) continue;
      ops.push({
        op: "update",
        kind: STORAGE_POOL_KIND as never,
        object: { id: p.id, resourceVersion: 0n } as never,
        mutate: (o) => {
          const q = o as unknown as StoragePool;
          if (!q.spec?.isDefault) return undefined;
          q.spec.isDefault = false;
          q.updatedAt = timestampFromMs(nowMs);
          q.generation += 1n;
          return o;
        },
      });
    }
    return ops;
  }
}

/** The pool a volume that names none goes to: the default pool, or FAILED_PRECONDITION saying there is none. */
export async function defaultPool(store: Store): Promise<StoragePool> {
  for await (const p of allOf(store.of(STORAGE_POOL_KIND))) if (p.spec?.isDefault) return p;
  throw invalidArgument([{ field: "spec.pool_id", reason: "REQUIRED", description: "is required: no storage pool is the default (CreateStoragePool with spec.is_default)" }]);
}
