import { posix } from "node:path";
import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import type { StoragePool } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import type { Volume } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { isLocalPool, NODE_KIND, QuantixError, SNAPSHOT_KIND, STORAGE_POOL_KIND, VOLUME_CONTROLLER, VOLUME_KIND, volumePlacement, type Resource, type Store, type VolumeReach } from "@quantix/core";
import type { Logger } from "@quantix/rpc";
import { nodePoolType, poolNodes } from "../controllers/storage-pool-controller.js";
import { writeStatusOf } from "../controllers/storage-steps.js";
import type { NodeStorages } from "./node-storages.js";

/**
 * Live migration of a VM whose disks are volumes (issue 13).
 *
 * - A volume of a SHARED_DIR pool is used in place: the target's config names the file
 *   the target's own storage reports for it (same pool, same path below the shared
 *   directory). Nothing is copied; its attachment follows the VM (the volume attachment
 *   controller keeps `attachments[].node_id` on the VM's node).
 * - A volume of a LOCAL_DIR pool is copied during the migration (the agents'
 *   copy_storage): the target's copy goes to `<the target's pool directory>/<volume id>.<format>`,
 *   the pool being set up on the target first. After a successful migration the volume's
 *   `status.node_id` becomes the target and the source's file is removed. After a failed
 *   or cancelled one nothing moves; the target's partial copy goes with the target's VM
 *   (DeleteVm removes a migration's incoming copies).
 * - A linked clone on a local pool (`spec.source.linked`: an overlay on a volume or on an
 *   image's per-node copy) is copied like any other local volume: blockdev-mirror
 *   sync=full reads through the chain, so the target's copy is a standalone qcow2. After
 *   the move the volume says so (`status.flattened`), and no longer holds its source
 *   volume or image against deletion. (As Proxmox and OpenStack do: a migrated local
 *   clone arrives flattened.)
 */

type V = Volume & Resource;

/** A local-pool volume whose file is copied to the target and whose record moves there. */
export interface VolumeMove {
  readonly volumeId: string;
  readonly poolId: string;
  readonly diskId: string;
  /** Its file on the target. */
  readonly targetPath: string;
}

/** What a migration does with a VM's volume disks. */
export interface MigrationVolumePlan {
  /** Volume id to its file on the target, for the target's VmConfig. */
  readonly targetPaths: ReadonlyMap<string, string>;
  /** Local-pool volumes copied to the target (moved after a successful migration). */
  readonly moves: readonly VolumeMove[];
}

const SAFE_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$/;

interface VolumeDisk {
  readonly field: string;
  readonly diskId: string;
  readonly volume: V;
  readonly pool: StoragePool & Resource;
}

/** The VM's volume disks with their volumes and pools; FAILED_PRECONDITION naming a volume or pool that is gone. */
async function volumeDisks(store: Store, vm: VirtualMachine): Promise<VolumeDisk[]> {
  const out: VolumeDisk[] = [];
  for (const [i, d] of (vm.spec?.disks ?? []).entries()) {
    if (d.volumeId === "") continue;
    const volume = await store.of(VOLUME_KIND).get(d.volumeId);
    if (!volume) throw new QuantixError("failed_precondition", `VM '${vm.id}' cannot migrate: disk '${d.id}' names volume '${d.volumeId}', which no longer exists`);
    const pool = await store.of(STORAGE_POOL_KIND).get(volume.spec?.poolId ?? "");
    if (!pool) throw new QuantixError("failed_precondition", `VM '${vm.id}' cannot migrate: the pool '${volume.spec?.poolId ?? ""}' of volume '${volume.id}' (disk '${d.id}') no longer exists`);
    out.push({ field: `spec.disks[${i}].volume_id`, diskId: d.id, volume, pool });
  }
  return out;
}

/** Why a volume disk cannot migrate at all (wherever it goes), or undefined. */
async function refusal(store: Store, vm: VirtualMachine, d: VolumeDisk): Promise<string | undefined> {
  const type = d.pool.spec?.type ?? 0;
  if (!isLocalPool(type)) return undefined;
  // A copy made while the guest runs carries the disk's data, not its internal snapshots:
  // the snapshots of the volume (or of the VM) would be lost with the source's file.
  const snaps = store.of(SNAPSHOT_KIND);
  const first = async (where: Record<string, string>) => (await snaps.list({ where, order: { field: "created_at", desc: false }, limit: 1 })).items[0];
  const held = (await first({ volume_id: d.volume.id })) ?? (await first({ vm_id: vm.id }));
  if (held) return `VM '${vm.id}' cannot migrate: disk '${d.diskId}' is volume '${d.volume.id}' on the node-local pool '${d.pool.id}', and snapshot '${held.id}' (${held.name}) is kept inside the volume's file, which a copy to another node does not carry; delete the snapshots first, or use a shared pool`;
  return undefined;
}

/**
 * The nodes a VM's volumes let it migrate to (undefined: any node), for the scheduler's
 * volume filter. A volume's pool must reach the node (node_ids and node_selector): a
 * local-pool volume is copied to any node that has the pool, a shared one is used on the
 * pool's nodes. FAILED_PRECONDITION for a volume that cannot migrate at all (a local one
 * whose file keeps snapshots) or when no node reaches them all.
 */
export async function migrationVolumeNodes(store: Store, vm: VirtualMachine): Promise<readonly string[] | undefined> {
  const disks = await volumeDisks(store, vm);
  if (disks.length === 0) return undefined;
  const reaches: VolumeReach[] = [];
  for (const d of disks) {
    const why = await refusal(store, vm, d);
    if (why) throw new QuantixError("failed_precondition", why);
    nodePoolType(d.pool); // LOCAL_DIR or SHARED_DIR, else FAILED_PRECONDITION naming the type
    const ids = (await poolNodes(store, d.pool)).map((n) => n.id);
    reaches.push({ field: d.field, volumeId: d.volume.id, nodeIds: ids });
  }
  try {
    return volumePlacement(reaches);
  } catch (err) {
    throw new QuantixError("failed_precondition", `VM '${vm.id}' cannot migrate: no node reaches all its volumes (${err instanceof Error ? err.message : String(err)})`);
  }
}

/**
 * Where the VM's volumes go on the target node: asks the target's storage (pool set up
 * there first). FAILED_PRECONDITION naming the volume when the target cannot hold it (the
 * pool does not reach the target, a shared volume's file is not seen there, a local
 * volume's file already exists there, it is not on the source).
 */
export async function planMigrationVolumes(store: Store, storages: NodeStorages | undefined, vm: VirtualMachine, sourceId: string, targetId: string): Promise<MigrationVolumePlan> {
  const disks = await volumeDisks(store, vm);
  const targetPaths = new Map<string, string>();
  const moves: VolumeMove[] = [];
  if (disks.length === 0) return { targetPaths, moves };
  if (!storages) throw new QuantixError("failed_precondition", `VM '${vm.id}' cannot migrate: its disks are volumes and this control plane has no node storage to place them on the target`);
  const target = await node(store, targetId);
  const storage = storages.of(target);
  for (const d of disks) {
    const why = await refusal(store, vm, d);
    if (why) throw new QuantixError("failed_precondition", why);
    const kind = nodePoolType(d.pool);
    const reach = (await poolNodes(store, d.pool)).map((n) => n.id);
    if (!reach.includes(targetId)) throw new QuantixError("failed_precondition", `VM '${vm.id}' cannot migrate to node '${targetId}': the pool '${d.pool.id}' of volume '${d.volume.id}' (disk '${d.diskId}') does not reach that node`);
    const ref = { poolId: d.pool.id, volumeId: d.volume.id };
    const pool = await storage.ensurePool({ poolId: d.pool.id, ...kind });
    if (kind.type === "SHARED_DIR") {
      const info = await storage.volumeInfo(ref);
      if (!info) throw new QuantixError("failed_precondition", `VM '${vm.id}' cannot migrate to node '${targetId}': volume '${d.volume.id}' of the shared pool '${d.pool.id}' (disk '${d.diskId}') has no file there`);
      targetPaths.set(d.volume.id, info.path);
      continue;
    }
    const on = d.volume.status?.nodeId ?? "";
    if (on !== sourceId) throw new QuantixError("failed_precondition", `VM '${vm.id}' cannot migrate: volume '${d.volume.id}' (disk '${d.diskId}') is on node '${on}', not on the VM's node '${sourceId}'`);
    if (!SAFE_ID.test(d.volume.id)) throw new QuantixError("failed_precondition", `volume '${d.volume.id}': its id cannot name a file`);
    if (!pool.path) throw new QuantixError("failed_precondition", `VM '${vm.id}' cannot migrate to node '${targetId}': its storage does not report the directory of pool '${d.pool.id}' (an agent from before the pool path)`);
    if (await storage.volumeInfo(ref)) throw new QuantixError("failed_precondition", `VM '${vm.id}' cannot migrate to node '${targetId}': volume '${d.volume.id}' (disk '${d.diskId}') already has a file there; delete the stale copy first`);
    const format = (await storages.of(await node(store, sourceId)).volumeInfo(ref))?.format;
    if (!format) throw new QuantixError("failed_precondition", `VM '${vm.id}' cannot migrate: volume '${d.volume.id}' (disk '${d.diskId}') has no file on node '${sourceId}'`);
    const targetPath = posix.join(pool.path, `${d.volume.id}.${format}`);
    targetPaths.set(d.volume.id, targetPath);
    moves.push({ volumeId: d.volume.id, poolId: d.pool.id, diskId: d.diskId, targetPath });
  }
  return { targetPaths, moves };
}

/**
 * After a successful migration: each copied volume's record moves to the target
 * (`status.node_id`; a linked clone is `status.flattened` from then on), then the
 * source's file is removed through the source's storage. A
 * source file that cannot be removed is logged and left (the record already names the
 * target, which holds the data); it is not a volume any more.
 */
export async function completeVolumeMoves(deps: { store: Store; storages?: NodeStorages | undefined; log: Logger }, plan: MigrationVolumePlan, sourceId: string, targetId: string): Promise<void> {
  if (plan.moves.length === 0) return;
  for (const m of plan.moves) {
    await writeStatusOf(deps.store, VOLUME_KIND, VOLUME_CONTROLLER, m.volumeId, (v) => {
      v.status!.nodeId = targetId;
      // The copy was made through the chain: a linked clone arrives standalone.
      if (v.spec?.source?.linked) v.status!.flattened = true;
    });
  }
  const source = await deps.store.of(NODE_KIND).get(sourceId);
  for (const m of plan.moves) {
    try {
      if (!source || !deps.storages) throw new QuantixError("unavailable", `node '${sourceId}' is gone`);
      await deps.storages.of(source).deleteVolume({ poolId: m.poolId, volumeId: m.volumeId, force: false });
    } catch (err) {
      if (err instanceof QuantixError && err.code === "not_found") continue;
      deps.log.log("warn", "a migrated volume's old file on the source could not be removed", { volume_id: m.volumeId, node_id: sourceId, error: String(err) });
    }
  }
}

/**
 * The moves of a migration that completed while no run of this process followed it (an
 * interrupted migration resolved as completed): the VM's local-pool volumes still
 * recorded on the source. The copies are on the target already (the agents made them).
 */
export async function interruptedVolumeMoves(store: Store, vm: VirtualMachine, sourceId: string): Promise<MigrationVolumePlan> {
  const moves: VolumeMove[] = [];
  for (const d of await volumeDisks(store, vm).catch(() => [])) {
    if (isLocalPool(d.pool.spec?.type ?? 0) && (d.volume.status?.nodeId ?? "") === sourceId) moves.push({ volumeId: d.volume.id, poolId: d.pool.id, diskId: d.diskId, targetPath: "" });
  }
  return { targetPaths: new Map(), moves };
}

async function node(store: Store, id: string): Promise<Node> {
  const n = await store.of(NODE_KIND).get(id);
  if (!n) throw new QuantixError("failed_precondition", `node '${id}' no longer exists`);
  return n;
}
