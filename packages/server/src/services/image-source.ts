import { VmStatus_State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import type { ImageSource } from "@quantix/api/gen/Quantixkvm/storage/v1/image_pb.js";
import { SnapshotState } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_pb.js";
import { VolumeState, type Volume } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { notFound, QuantixError, SNAPSHOT_KIND, VOLUME_KIND, type Resource, type Store } from "@quantix/core";
import type { NodeVolumeSource } from "../storage/node-storage.js";
import { vmsNamingVolume } from "./volume-service.js";

/** VM states in which its disks are not held open by a hypervisor. */
const VM_STOPPED: ReadonlySet<VmStatus_State> = new Set([VmStatus_State.PENDING, VmStatus_State.STOPPED, VmStatus_State.CRASHED, VmStatus_State.ERROR]);

/** The volume an image is copied from, and what its node copies (the volume now, or at a snapshot). */
export interface ImageSourceVolume {
  readonly volume: Volume & Resource;
  readonly node: NodeVolumeSource;
}

/**
 * The volume an image with a `volume_id` or `snapshot_id` source is copied from, checked
 * now (at CreateImage, and again when the node copies it): a volume of the image's project,
 * AVAILABLE (attached to no VM: a running VM's disk changes under the copy, and the node's
 * qemu-img cannot open a file a VM holds), and named by no VM that is not stopped; a
 * snapshot of the project, AVAILABLE, of a volume (not a VM), whose volume no running VM
 * holds. A volume or snapshot of another project is NOT_FOUND, as a missing one.
 * CreateImage has no force flag: a running VM's disk is refused, always.
 */
export async function imageSourceVolume(store: Store, source: ImageSource["source"], projectId: string): Promise<ImageSourceVolume> {
  let volumeId: string;
  let snapshotId: string | undefined;
  if (source.case === "snapshotId") {
    const snap = await store.of(SNAPSHOT_KIND).get(source.value);
    if (!snap || snap.projectId !== projectId) throw notFound("snapshot", source.value);
    if (snap.spec?.target.case !== "volumeId") throw new QuantixError("failed_precondition", `snapshot '${snap.id}' is of a VM: make the image from one of its volumes' snapshots`);
    const state = snap.status?.state ?? SnapshotState.UNSPECIFIED;
    if (snap.deletionRequestedAt || state !== SnapshotState.AVAILABLE) throw new QuantixError("failed_precondition", `snapshot '${snap.id}' is ${snap.deletionRequestedAt ? "being deleted" : SnapshotState[state]}: an image is made from an AVAILABLE snapshot`);
    volumeId = snap.spec.target.value;
    snapshotId = snap.id;
  } else if (source.case === "volumeId") {
    volumeId = source.value;
  } else {
    throw new QuantixError("internal", `image source ${source.case ?? "unset"} is not a volume or a snapshot`);
  }
  const what = snapshotId ? "the snapshot's volume" : "volume";
  const volume = await store.of(VOLUME_KIND).get(volumeId);
  if (!volume || volume.projectId !== projectId) throw notFound("volume", volumeId);
  if (volume.deletionRequestedAt) throw new QuantixError("failed_precondition", `${what} '${volumeId}' is being deleted`);
  const state = volume.status?.state ?? VolumeState.UNSPECIFIED;
  // A snapshot's data does not change while its volume is attached to a stopped VM; a volume's own data may as soon as the VM starts.
  const allowed = snapshotId ? state === VolumeState.AVAILABLE || state === VolumeState.IN_USE : state === VolumeState.AVAILABLE;
  if (!allowed) throw new QuantixError("failed_precondition", `${what} '${volumeId}' is ${VolumeState[state]}: an image is made from ${snapshotId ? "a snapshot of an AVAILABLE or IN_USE volume" : "an AVAILABLE volume (detach it from its VM first)"}`);
  const running = (await vmsNamingVolume(store, volume)).filter((vm) => !VM_STOPPED.has(vm.status?.state ?? VmStatus_State.STATE_UNSPECIFIED)).map((vm) => vm.id);
  if (running.length > 0) throw new QuantixError("failed_precondition", `${what} '${volumeId}' is a disk of VM ${running.map((x) => `'${x}'`).join(", ")}, which is not stopped: stop it first`);
  return { volume, node: { volumeId, linked: false, ...(snapshotId ? { snapshotId } : {}) } };
}
