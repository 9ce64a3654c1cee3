import { VolumeSchema, VolumeState } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { boolField, defineKind, intField, textField, timeField } from "../resource/kind.js";

/** The finalizer every volume carries until the volume controller has removed its file from its node. */
export const VOLUME_FINALIZER = "quantix.io/volume";

/** The component that alone writes a volume's status after its create, but its attachments (STYLE rule 2). */
export const VOLUME_CONTROLLER = "volume-controller";

/**
 * The writer of a volume's status.attachments: the commits that claim a volume for a VM
 * (CreateVM, AttachVolume: in the same commit as the VM's spec.disks) or release it
 * (DetachVolume, and the volume-attachment controller once the VM is gone).
 */
export const VOLUME_ATTACHER = "volume-attachments";

/** Volumes (Quantixkvm.storage.v1.Volume): virtual disks in a storage pool, in a project. */
export const VOLUME_KIND = defineKind(VolumeSchema, {
  name: "volume",
  table: "quantix_volumes",
  fields: {
    project_id: textField((v) => v.projectId, { column: "project_id", filter: "eq" }),
    name: textField((v) => v.name, { column: "name", filter: "eq", order: true }),
    state: intField((v) => v.status?.state ?? 0, { column: "state", filter: "in" }),
    // WatchVolumes' volume_id: one volume among the filtered set.
    volume_id: textField((v) => v.id, { column: "volume_id", filter: "eq" }),
    pool_id: textField((v) => v.spec?.poolId ?? "", { column: "pool_id", filter: "eq" }),
    // The volume this one was made from (a clone's source): a volume that backs others is found by it.
    source_volume_id: textField((v) => (v.spec?.source?.source.case === "volumeId" ? v.spec.source.source.value : ""), { column: "source_volume_id", filter: "eq" }),
    // The image it was made from: the volumes that use an image (linked clones of its copy) are found by it.
    source_image_id: textField((v) => (v.spec?.source?.source.case === "imageId" ? v.spec.source.source.value : ""), { column: "source_image_id", filter: "eq" }),
    // The first VM it is attached to (at most one unless multi_attach).
    vm_id: textField((v) => v.status?.attachments[0]?.vmId ?? "", { column: "vm_id", filter: "eq" }),
    bootable: boolField((v) => v.spec?.bootable ?? false, { column: "bootable", filter: "eq" }),
    size_gib: { type: "bigint", column: "size_gib", order: true, value: (v) => Number(v.spec?.sizeGib ?? 0n) },
    created_at: timeField((v) => v.createdAt, { column: "created_ms", order: true }),
  },
  orderBy: ["name", "created_at", "size_gib"],
  labels: (v) => v.labels,
  unique: { key: (v) => `${v.projectId}/${v.name}`, describe: (v) => `a volume named '${v.name}' already exists in project '${v.projectId}'` },
  projectScoped: true,
  finalizers: [VOLUME_FINALIZER],
  owned: [
    { path: "status", value: (v) => (v.status ? { ...v.status, attachments: [] } : undefined), owners: [VOLUME_CONTROLLER] },
    { path: "status.attachments", value: (v) => v.status?.attachments ?? [], owners: [VOLUME_ATTACHER] },
  ],
  // A volume no node has started to create has no file anywhere (only the volume
  // controller creates files, after it marks the volume CREATING): nothing to wait for.
  pendingFinalizers: (v) => {
    const s = v.status?.state ?? VolumeState.UNSPECIFIED;
    return s === VolumeState.UNSPECIFIED || s === VolumeState.PENDING ? [] : [VOLUME_FINALIZER];
  },
});
