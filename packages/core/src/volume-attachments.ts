import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { DiskBus, type DiskDevice } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { StoragePoolType, type StoragePool } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { VolumeAttachmentSchema, VolumeState, VolumeStatusSchema, type Volume } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { invalidArgument, QuantixError } from "./errors.js";
import { isLocalPool } from "./storage-validation.js";

/**
 * The pure rules of a VM's disks that are volumes: which nodes can reach a volume, where a
 * VM with several volumes may run, and what a claim of a volume for a VM's disk (or its
 * release) does to the volume's status.attachments. The services run claimVolume inside
 * the store commit that changes the VM's disks, so that of two VMs claiming one volume at
 * once exactly one wins: the other's commit reads the winner's attachment.
 */

/** The nodes that reach a volume: its node in a local pool, the pool's nodes (or any: undefined) in a shared one. */
export function volumeNodeIds(volume: Volume, pool: StoragePool | undefined): readonly string[] | undefined {
  const type = pool?.spec?.type ?? StoragePoolType.UNSPECIFIED;
  const node = volume.status?.nodeId ?? "";
  if (isLocalPool(type)) return node !== "" ? [node] : pool?.spec?.nodeIds.length ? [...pool.spec.nodeIds] : undefined;
  return pool?.spec?.nodeIds.length ? [...pool.spec.nodeIds] : undefined;
}

/** One volume disk of a VM, with where its volume is reachable. */
export interface VolumeReach {
  /** The disk's field path, e.g. "spec.disks[1].volume_id". */
  readonly field: string;
  readonly volumeId: string;
  /** The nodes that reach the volume; undefined: every node. */
  readonly nodeIds: readonly string[] | undefined;
}

/**
 * The nodes a VM whose volume disks reach as `reaches` say may run on: their
 * intersection (undefined: any node). INVALID_ARGUMENT naming the disk's field when no
 * node reaches them all (volumes on two different nodes), or when `nodeId` (the VM's
 * node, when it has one) is not among them.
 */
export function volumePlacement(reaches: readonly VolumeReach[], nodeId = ""): readonly string[] | undefined {
  let allowed: readonly string[] | undefined;
  let first: VolumeReach | undefined;
  for (const r of reaches) {
    if (!r.nodeIds) continue;
    if (nodeId !== "" && !r.nodeIds.includes(nodeId)) {
      throw invalidArgument([{ field: r.field, reason: "CONFLICT", description: `volume '${r.volumeId}' is on ${nodesText(r.nodeIds)}, not on node '${nodeId}' where the VM is` }]);
    }
    const next: readonly string[] = allowed ? allowed.filter((n) => r.nodeIds!.includes(n)) : r.nodeIds;
    if (next.length === 0) {
      throw invalidArgument([{ field: r.field, reason: "CONFLICT", description: `volume '${r.volumeId}' is on ${nodesText(r.nodeIds)} and volume '${first!.volumeId}' on ${nodesText(first!.nodeIds!)}: a VM's volumes must be reachable from one node` }]);
    }
    allowed = next;
    first ??= r;
  }
  return allowed;
}

function nodesText(ids: readonly string[]): string {
  return ids.length === 1 ? `node '${ids[0]}'` : `nodes ${ids.map((n) => `'${n}'`).join(", ")}`;
}

/** What a claim records: the VM, its disk, and where it runs (if placed). */
export interface VolumeClaim {
  readonly vmId: string;
  readonly disk: DiskDevice;
  readonly nodeId: string;
  readonly nowMs: number;
  /** The device name the guest most likely gives the disk (guestDeviceHint). */
  readonly guestDeviceHint?: string;
  /** The volume was made for this VM (spec.owner_vm_id): claimed while it is still being made. */
  readonly owned?: boolean;
}

/**
 * The name a Linux guest most likely gives disk `diskId` of `disks`: virtio disks are
 * /dev/vda, /dev/vdb, ... in PCI order, which is their order in the spec (a hot-plugged
 * one comes last); empty for other buses, whose names depend on the guest's drivers.
 */
export function guestDeviceHint(disks: readonly DiskDevice[], diskId: string): string {
  const virtio = disks.filter((d) => d.bus === DiskBus.VIRTIO || d.bus === DiskBus.UNSPECIFIED);
  const i = virtio.findIndex((d) => d.id === diskId);
  return i >= 0 && i < 26 ? `/dev/vd${String.fromCharCode(97 + i)}` : "";
}

/**
 * The volume with `claim` added to its attachments, or undefined when it already has it
 * (idempotent). FAILED_PRECONDITION when the volume is being deleted, is not AVAILABLE or
 * IN_USE, or is attached to another VM without multi_attach (naming that VM).
 */
export function claimVolume(volume: Volume, claim: VolumeClaim): Volume | undefined {
  const status = (volume.status ??= create(VolumeStatusSchema));
  if (status.attachments.some((a) => a.vmId === claim.vmId && a.diskId === claim.disk.id)) return undefined;
  if (volume.deletionRequestedAt) throw new QuantixError("failed_precondition", `volume '${volume.id}' is being deleted`);
  const state = status.state;
  // IN_USE without attachments is a state the volume controller has not rewritten yet.
  if (state !== VolumeState.AVAILABLE && state !== VolumeState.IN_USE && !(claim.owned && volume.spec?.ownerVmId === claim.vmId)) {
    throw new QuantixError("failed_precondition", `volume '${volume.id}' is ${VolumeState[state]}: a VM's disk needs it AVAILABLE`);
  }
  const holders = [...new Set(status.attachments.filter((a) => a.vmId !== claim.vmId).map((a) => a.vmId))];
  if (holders.length > 0 && !volume.spec?.multiAttach) {
    throw new QuantixError("failed_precondition", `volume '${volume.id}' is attached to VM ${holders.map((h) => `'${h}'`).join(", ")}: detach it there first (or set spec.multi_attach on the volume)`);
  }
  if (status.attachments.some((a) => a.vmId === claim.vmId)) {
    throw new QuantixError("failed_precondition", `volume '${volume.id}' is already a disk of VM '${claim.vmId}'`);
  }
  status.attachments.push(
    create(VolumeAttachmentSchema, {
      vmId: claim.vmId,
      diskId: claim.disk.id,
      bus: claim.disk.bus === DiskBus.UNSPECIFIED ? DiskBus.VIRTIO : claim.disk.bus,
      readOnly: claim.disk.readonly,
      nodeId: claim.nodeId,
      guestDeviceHint: claim.guestDeviceHint ?? "",
      attachedAt: timestampFromMs(claim.nowMs),
    }),
  );
  return volume;
}

/** The volume without its attachment to `vmId` (undefined when it had none). */
export function releaseVolume(volume: Volume, vmId: string): Volume | undefined {
  const list = volume.status?.attachments ?? [];
  if (!list.some((a) => a.vmId === vmId)) return undefined;
  volume.status!.attachments = list.filter((a) => a.vmId !== vmId);
  return volume;
}
