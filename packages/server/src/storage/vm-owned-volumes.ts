import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { VmSpec } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { VolumeFormat, type StoragePool } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { VolumeSchema, VolumeState, type Volume } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { claimVolume, guestDeviceHint, invalidArgument, QuantixError, volumeNodeIds, volumeUsage, VOLUME_KIND, type IdGenerator, type Resource, type Store, type TxOp, type Usage, type VolumeReach } from "@quantix/core";
import { imageMinGib, sourceImage } from "../services/source-image.js";
import { usablePool } from "../services/usable-pool.js";

/**
 * The volumes CreateVM makes for the VM (issue 13): a disk with `size_gib` or `image_id`
 * and no `volume_id` or `host_path` gets a new volume in the default storage pool (from
 * the image as a linked clone, or blank), named in the disk's `volume_id`, with
 * `spec.owner_vm_id` the VM's id. The volumes are created and claimed in the VM's own
 * commit, their quota charged with it; they carry no node yet: the scheduler places the
 * VM on a node of the pool, and the volume controller makes each volume on that node
 * (volume-controller.ts), the VM starting once they are AVAILABLE. The volume attachment
 * controller deletes them once their VM is gone.
 *
 * Without a default pool nothing is made: such disks stay as they are, which agent nodes
 * refuse with the reason (and the demo's simulated hosts take as they always have).
 */

type V = Volume & Resource;

/** The volumes planned for a new VM, before its id is known. */
export interface OwnedVolumes {
  readonly volumes: readonly V[];
  /** Where each is reachable (any node of its pool), for the placement check. */
  readonly reaches: readonly VolumeReach[];
  /** Their quota use, charged with the VM's. */
  readonly usage: readonly Usage[];
}

const NONE: OwnedVolumes = { volumes: [], reaches: [], usage: [] };

/**
 * Plans a volume for each disk of `spec` that needs one, and names it in the disk's
 * `volume_id` (spec is changed in place). INVALID_ARGUMENT / NOT_FOUND / FAILED_PRECONDITION
 * naming the disk's field when its image cannot be used or the size is below the image's.
 */
export async function planOwnedVolumes(deps: { store: Store; ids: IdGenerator; nowMs: number }, projectId: string, vmName: string, spec: VmSpec): Promise<OwnedVolumes> {
  const wanting = [...spec.disks.entries()].filter(([, d]) => d.volumeId === "" && d.hostPath === "");
  if (wanting.length === 0) return NONE;
  const pool = await defaultPoolOrNone(deps.store);
  if (!pool) return NONE;
  const volumes: V[] = [];
  const reaches: VolumeReach[] = [];
  for (const [i, d] of wanting) {
    const field = `spec.disks[${i}]`;
    let img;
    if (d.imageId !== "") {
      try {
        img = await sourceImage(deps.store, d.imageId, projectId);
      } catch (err) {
        if (err instanceof QuantixError && err.code === "not_found") throw new QuantixError("not_found", `${field}.image_id: image '${d.imageId}' not found in the VM's project`);
        if (err instanceof QuantixError) throw new QuantixError(err.code, `${field}.image_id: ${err.message}`);
        throw err;
      }
    }
    const least = img ? imageMinGib(img) : 1n;
    const sizeGib = d.sizeGib === 0n ? least : d.sizeGib;
    if (d.sizeGib === 0n && !img) throw invalidArgument([{ field: `${field}.size_gib`, reason: "REQUIRED", description: "is required for a new blank disk (or name an image_id, a volume_id or a host_path)" }]);
    if (sizeGib < least) throw invalidArgument([{ field: `${field}.size_gib`, reason: "OUT_OF_RANGE", description: `must be at least the image's size (${least} GiB)` }]);
    const id = deps.ids.newId();
    const now = timestampFromMs(deps.nowMs);
    const v = create(VolumeSchema, {
      id,
      name: ownedName(vmName, d.id, id),
      projectId,
      description: `disk '${d.id}' of VM '${vmName}', made by CreateVM`,
      createdAt: now,
      updatedAt: now,
      generation: 1n,
      spec: {
        sizeGib,
        poolId: pool.id,
        // A linked clone of the image's copy on the VM's node, as Nova's qcow2 backend does.
        format: img ? VolumeFormat.QCOW2 : pool.spec?.defaultVolumeFormat || VolumeFormat.QCOW2,
        ...(img ? { source: { source: { case: "imageId", value: img.id }, linked: true } } : {}),
        bootable: img !== undefined || d.bootIndex > 0,
      },
      status: { state: VolumeState.PENDING },
    }) as V;
    d.volumeId = id;
    volumes.push(v);
    reaches.push({ field: `${field}.volume_id`, volumeId: id, nodeIds: volumeNodeIds(v, pool) });
  }
  return { volumes, reaches, usage: volumes.map((v) => volumeUsage(v)) };
}

/** The commit ops that create the planned volumes for VM `vmId`, owned by it and claimed for its disks. */
export function ownedVolumeOps(planned: OwnedVolumes, vmId: string, spec: VmSpec, nowMs: number): TxOp[] {
  return planned.volumes.map((v) => {
    const disk = spec.disks.find((d) => d.volumeId === v.id)!;
    const object = { ...v, spec: { ...v.spec!, ownerVmId: vmId } } as V;
    claimVolume(object, { vmId, disk, nodeId: "", nowMs, guestDeviceHint: guestDeviceHint(spec.disks, disk.id), owned: true });
    return { op: "create" as const, kind: VOLUME_KIND as never, object };
  });
}

/** The default storage pool, if there is one that takes new volumes; undefined when no pool is the default. */
async function defaultPoolOrNone(store: Store): Promise<StoragePool | undefined> {
  try {
    return await usablePool(store, "");
  } catch (err) {
    // No default pool (usablePool's INVALID_ARGUMENT on spec.pool_id): nothing to make volumes in.
    if (err instanceof QuantixError && err.code === "invalid_argument") return undefined;
    throw new QuantixError(err instanceof QuantixError ? err.code : "failed_precondition", `the VM's new disks need the default storage pool: ${err instanceof Error ? err.message : String(err)}`);
  }
}

/** `<vm>-<disk>-<8 hex of the volume id>`, within a volume name's limits (the id keeps it unique). */
function ownedName(vmName: string, diskId: string, id: string): string {
  return `${vmName.slice(0, 100)}-${diskId}-${id.replace(/-/g, "").slice(0, 8)}`;
}
