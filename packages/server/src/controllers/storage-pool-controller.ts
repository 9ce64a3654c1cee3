import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { StoragePoolNodeStatusSchema, StoragePoolState, StoragePoolType, type StoragePool, type StoragePoolNodeStatus } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { allOf, isLocalPool, NODE_KIND, POOL_FINALIZER, QuantixError, STORAGE_POOL_CONTROLLER, STORAGE_POOL_KIND, VOLUME_KIND, type Clock, type Store, type Timers } from "@quantix/core";
import type { Logger } from "@quantix/rpc";
import { Controller, watching } from "../runtime/controller.js";
import type { NodeStorage, NodePoolType } from "../storage/node-storage.js";
import type { NodeStorages } from "../storage/node-storages.js";
import { setCondition } from "./conditions.js";


const GIB = 1n << 30n;

/** The node-side type of a pool, or FAILED_PRECONDITION for a type nodes are not driven for. */
export function nodePoolType(pool: StoragePool): { type: NodePoolType; path?: string } {
  const spec = pool.spec;
  if (spec?.type === StoragePoolType.LOCAL_DIR) return { type: "DIR" };
  if (spec?.type === StoragePoolType.SHARED_DIR && spec.backend.case === "sharedDir") return { type: "SHARED_DIR", path: spec.backend.value.path };
  throw new QuantixError("failed_precondition", `the control plane drives LOCAL_DIR and SHARED_DIR pools only; this pool is ${StoragePoolType[spec?.type ?? 0]}`);
}

/** The nodes that can reach a pool: its node_ids (all registered nodes when empty), narrowed by node_selector. */
export async function poolNodes(store: Store, pool: StoragePool): Promise<Node[]> {
  const ids = pool.spec?.nodeIds ?? [];
  const selector = Object.entries(pool.spec?.nodeSelector ?? {});
  const out: Node[] = [];
  for await (const n of allOf(store.of(NODE_KIND))) {
    if (ids.length > 0 && !ids.includes(n.id)) continue;
    if (selector.some(([k, v]) => n.labels[k] !== v)) continue;
    out.push(n);
  }
  return out.sort((a, b) => a.id.localeCompare(b.id));
}

/**
 * Sets every pool up on the nodes that reach it (NodeStorage.ensurePool, idempotent) and
 * writes what it observes: per node, whether the pool is usable and its capacity, or why
 * not; the pool READY when usable on every node, DEGRADED on some, UNAVAILABLE on none
 * (error_message and the Ready condition say why); capacity, allocated bytes (the sum of
 * its volumes' sizes) and the volume count. Level-based; every pool is measured again at
 * each resync.
 */
export function storagePoolController(deps: { store: Store; storages: NodeStorages; clock: Clock; timers?: Timers; log: Logger; resyncMs?: number }): Controller {
  const pools = deps.store.of(STORAGE_POOL_KIND);
  /** Writes the status `change` makes (nothing when it changes nothing). */
  async function writeStatus(id: string, change: (s: NonNullable<StoragePool["status"]>, p: StoragePool) => void): Promise<void> {
    await pools
      .update(
        id,
        (cur) => {
          const before = JSON.stringify(cur.status ?? {}, big);
          change(cur.status!, cur);
          return JSON.stringify(cur.status ?? {}, big) === before ? undefined : cur;
        },
        { actor: STORAGE_POOL_CONTROLLER },
      )
      .catch((err: unknown) => {
        if (!(err instanceof QuantixError && err.code === "not_found")) throw err;
      });
  }

  /**
   * A pool being deleted: DELETING; once it holds no volume (one created while the delete
   * was asked for waits here, with the reason), removed from every node it was set up on,
   * then its finalizer dropped, which deletes it.
   */
  async function removePool(pool: StoragePool & { id: string }): Promise<{ requeueAfterMs: number } | void> {
    if (!pool.finalizers.includes(POOL_FINALIZER)) return;
    const nowMs = deps.clock.now();
    const fail = async (reason: string, message: string) => {
      await writeStatus(pool.id, (s, p) => {
        s.state = StoragePoolState.DELETING;
        s.errorMessage = message;
        s.conditions = setCondition(s.conditions, { type: "Ready", status: false, reason, message, generation: p.generation }, nowMs);
      });
      return { requeueAfterMs: 15_000 };
    };
    const page = await deps.store.of(VOLUME_KIND).list({ where: { pool_id: pool.id }, order: { field: "name", desc: false }, limit: 1, countTotal: true });
    if (page.totalCount > 0) return fail("PoolNotEmpty", `the pool still holds ${page.totalCount} volume(s); it goes when they are deleted`);
    const ids = new Set((pool.status?.nodes ?? []).map((n) => n.nodeId));
    const why: string[] = [];
    for (const id of ids) {
      // A node that is gone has nothing left to remove.
      const n = await deps.store.of(NODE_KIND).get(id);
      if (!n) continue;
      try {
        const shape = nodePoolType(pool);
        await deps.storages.of(n).deletePool({ poolId: pool.id, ...shape });
      } catch (err) {
        if (err instanceof QuantixError && err.code === "not_found") continue;
        why.push(`node '${n.id}': ${err instanceof QuantixError ? err.message : "failed to remove the pool"}`);
      }
    }
    if (why.length > 0) return fail("RemoveFailed", why.join("; "));
    await pools
      .update(
        pool.id,
        (cur) => {
          if (!cur.finalizers.includes(POOL_FINALIZER)) return undefined;
          cur.finalizers = cur.finalizers.filter((f) => f !== POOL_FINALIZER);
          return cur;
        },
        { actor: STORAGE_POOL_CONTROLLER },
      )
      .catch((err: unknown) => {
        if (!(err instanceof QuantixError && err.code === "not_found")) throw err;
      });
  }

  return new Controller(
    {
      name: STORAGE_POOL_CONTROLLER,
      watches: [
        // Its own status writes (observed_generation caught up) enqueue nothing: capacity moves
        // with every write on the disk, and the resync measures it again.
        watching(pools, (e) => (e.type === "MODIFIED" && !e.object.deletionRequestedAt && e.object.status?.observedGeneration === e.object.generation && e.previous?.generation === e.object.generation ? [] : e.type === "DELETED" ? [] : [e.object.id])),
        // A volume's size counts in its pool's allocation.
        watching(deps.store.of(VOLUME_KIND), (e) => [e.object.spec?.poolId ?? ""].filter((x) => x !== "")),
      ],
      keys: async function* () {
        for await (const p of allOf(pools)) yield p.id;
      },
      reconcile: async (id) => {
        const pool = await pools.get(id);
        if (!pool) return;
        if (pool.deletionRequestedAt) return removePool(pool);
        const nodes = await poolNodes(deps.store, pool);
        const nowMs = deps.clock.now();
        const perNode: StoragePoolNodeStatus[] = [];
        let shape: { type: NodePoolType; path?: string } | undefined;
        let refusal = "";
        try {
          shape = nodePoolType(pool);
        } catch (err) {
          refusal = (err as Error).message;
        }
        for (const n of nodes) {
          const storage: NodeStorage = deps.storages.of(n);
          try {
            if (!shape) throw new QuantixError("failed_precondition", refusal);
            const m = await storage.ensurePool({ poolId: pool.id, ...shape });
            perNode.push(create(StoragePoolNodeStatusSchema, { nodeId: n.id, available: true, capacityBytes: m.capacityBytes, availableBytes: m.availableBytes }));
          } catch (err) {
            const message = err instanceof QuantixError ? err.message : "the node failed to set the pool up";
            if (!(err instanceof QuantixError)) deps.log.log("warn", "setting a storage pool up failed", { pool_id: pool.id, node_id: n.id, error: String(err) });
            // The node's last measurement stays (marked unavailable): a node that missed a
            // heartbeat does not make the pool look empty, so the room check still counts it.
            const last = pool.status?.nodes.find((x) => x.nodeId === n.id);
            perNode.push(create(StoragePoolNodeStatusSchema, { nodeId: n.id, available: false, message, capacityBytes: last?.capacityBytes ?? 0n, availableBytes: last?.availableBytes ?? 0n }));
          }
        }
        let allocated = 0n;
        let count = 0;
        for await (const v of allOf(deps.store.of(VOLUME_KIND), { where: { pool_id: pool.id } })) {
          allocated += (v.spec?.sizeGib ?? 0n) * GIB;
          count++;
        }
        const up = perNode.filter((x) => x.available);
        const local = isLocalPool(pool.spec?.type ?? 0);
        // Capacity counts each node's latest measurement (a node unreachable now keeps its
        // last one); a shared pool is one file system: measured once, not summed over its nodes.
        const measured = perNode.filter((x) => x.capacityBytes > 0n).sort((a, b) => Number(b.available) - Number(a.available));
        const capacity = local ? measured.reduce((s, x) => s + x.capacityBytes, 0n) : (measured[0]?.capacityBytes ?? 0n);
        const free = local ? measured.reduce((s, x) => s + x.availableBytes, 0n) : (measured[0]?.availableBytes ?? 0n);
        const reserved = (pool.spec?.reservedGib ?? 0n) * GIB;
        const ratio = pool.spec?.overcommitRatio || 1;
        const room = capacity > reserved ? BigInt(Math.floor(Number(capacity - reserved) * ratio)) - allocated : 0n;
        const state = nodes.length === 0 || up.length === 0 ? StoragePoolState.UNAVAILABLE : up.length === nodes.length ? StoragePoolState.READY : StoragePoolState.DEGRADED;
        const why =
          nodes.length === 0
            ? "no node reaches the pool (spec.node_ids, spec.node_selector)"
            : perNode
                .filter((x) => !x.available)
                .map((x) => `node '${x.nodeId}': ${x.message}`)
                .join("; ");
        await pools.update(
          id,
          (cur) => {
            const before = JSON.stringify(cur.status ?? {}, big);
            const s = cur.status!;
            s.state = state;
            s.capacityBytes = capacity;
            s.availableBytes = free;
            s.usedBytes = capacity - free;
            s.allocatedBytes = allocated;
            s.provisionableBytes = room > 0n ? room : 0n;
            s.volumeCount = count;
            s.shared = !local;
            s.nodes = perNode.map((x) => ({ ...x, checkedAt: s.nodes.find((o) => o.nodeId === x.nodeId && o.available === x.available && o.message === x.message)?.checkedAt ?? timestampFromMs(nowMs) }));
            s.errorMessage = why;
            s.observedGeneration = cur.generation;
            s.conditions = setCondition(s.conditions, { type: "Ready", status: state === StoragePoolState.READY, reason: state === StoragePoolState.READY ? "Ready" : StoragePoolState[state] === "DEGRADED" ? "SomeNodesFailed" : "NoNodeAvailable", message: why, generation: cur.generation }, nowMs);
            if (JSON.stringify(s, big) === before) return undefined;
            s.lastRefreshedAt = timestampFromMs(nowMs);
            return cur;
          },
          { actor: STORAGE_POOL_CONTROLLER },
        );
      },
      resyncMs: deps.resyncMs ?? 60_000,
      concurrency: 2,
    },
    { clock: deps.clock, ...(deps.timers ? { timers: deps.timers } : {}), log: deps.log, revision: () => deps.store.revision() },
  );
}

function big(_k: string, v: unknown): unknown {
  return typeof v === "bigint" ? v.toString() : v;
}
