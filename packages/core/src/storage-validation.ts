import { StoragePoolType, VolumeFormat, type StoragePool, type StoragePoolSpec } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import type { VolumeSpec } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import type { FieldViolation } from "./errors.js";
import { CONTROL_CHARS, NAME_PATTERN, validateLabels, validateRef, Violations } from "./violations.js";

/** Limits of pools and volumes (the contract's). */
export const STORAGE_LIMITS = {
  poolNameMax: 63,
  volumeNameMax: 255,
  pathMax: 4096,
  overcommitMin: 1,
  overcommitMax: 20,
  reservedGibMax: 1_048_576,
  volumeMinGib: 1,
  volumeMaxGib: 65_536,
  nodeIdsMax: 1000,
} as const;

/** Volume names: a letter, then letters, digits, '.', '_' or '-'. */
export const VOLUME_NAME_PATTERN = /^[a-zA-Z][a-zA-Z0-9_.-]*$/;

/** Pool types the control plane serves itself (directories of files driven by qemu-img). */
export const SERVED_POOL_TYPES: ReadonlySet<StoragePoolType> = new Set([StoragePoolType.LOCAL_DIR, StoragePoolType.SHARED_DIR]);

/** Pool types whose volumes are files (qcow2 possible). */
const FILE_POOL_TYPES: ReadonlySet<StoragePoolType> = new Set([StoragePoolType.LOCAL_DIR, StoragePoolType.SHARED_DIR, StoragePoolType.NFS]);

/** Pool types that exist separately on each node (a volume is usable on its node only). */
export function isLocalPool(type: StoragePoolType): boolean {
  return type === StoragePoolType.LOCAL_DIR || type === StoragePoolType.LVM || type === StoragePoolType.ZFS;
}

/**
 * The node capability that says a node can serve pools of `type` ("storage-pool-nfs"),
 * as the node's status.hypervisor.capabilities lists it.
 */
export function poolTypeCapability(type: StoragePoolType): string {
  return `storage-pool-${(StoragePoolType[type] ?? "unspecified").toLowerCase().replace(/_/g, "-")}`;
}

/** The backend config each type needs (the `backend` oneof's case). */
const BACKEND_OF: Readonly<Record<number, StoragePoolSpec["backend"]["case"]>> = {
  [StoragePoolType.LOCAL_DIR]: "localDir",
  [StoragePoolType.LVM]: "lvm",
  [StoragePoolType.ZFS]: "zfs",
  [StoragePoolType.CEPH_RBD]: "cephRbd",
  [StoragePoolType.NFS]: "nfs",
  [StoragePoolType.ISCSI]: "iscsi",
  [StoragePoolType.SHARED_DIR]: "sharedDir",
};

const snake = (s: string) => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** Validates a pool's name (create and rename). */
export function validatePoolName(v: Violations, name: string): void {
  if (v.required("name", name !== "") && v.length("name", name, 1, STORAGE_LIMITS.poolNameMax)) {
    v.pattern("name", name, NAME_PATTERN, "must start with a letter and contain only letters, digits, '-' and '_'");
  }
}

/** Validates a pool spec as a write leaves it; every violation, with field paths under `spec`. */
export function validatePoolSpec(spec: StoragePoolSpec | undefined): FieldViolation[] {
  const v = new Violations();
  if (!spec) {
    v.add("spec", "REQUIRED", "is required (spec.type and its backend config)");
    return v.list;
  }
  if (spec.type === StoragePoolType.UNSPECIFIED) v.add("spec.type", "REQUIRED", "is required");
  else if (!(spec.type in BACKEND_OF)) v.add("spec.type", "INVALID_ENUM", `unknown value ${spec.type}`);
  else {
    const want = BACKEND_OF[spec.type]!;
    const got = spec.backend.case;
    if (got !== undefined && got !== want) v.add(`spec.${snake(got)}`, "CONFLICT", `does not match spec.type ${StoragePoolType[spec.type]}: give spec.${snake(want)}`);
    else if (got === undefined && spec.type !== StoragePoolType.LOCAL_DIR) v.add(`spec.${snake(want)}`, "REQUIRED", `is required for spec.type ${StoragePoolType[spec.type]}`);
  }
  if (spec.backend.case === "localDir" && spec.backend.value.path !== "") {
    // Paths on the nodes derive from ids only: a directory pool is `<pool root>/<pool id>` on each node.
    v.add("spec.local_dir.path", "UNSUPPORTED", "must be empty: a LOCAL_DIR pool is the directory <pool root>/<pool id> on each node (the agent's VMCP_POOL_ROOT)");
  }
  if (spec.backend.case === "sharedDir") validateAbsolutePath(v, "spec.shared_dir.path", spec.backend.value.path);
  if (spec.overcommitRatio !== 0 && !(spec.overcommitRatio >= STORAGE_LIMITS.overcommitMin && spec.overcommitRatio <= STORAGE_LIMITS.overcommitMax)) {
    v.add("spec.overcommit_ratio", "OUT_OF_RANGE", `must be 0 (no overcommit) or ${STORAGE_LIMITS.overcommitMin}-${STORAGE_LIMITS.overcommitMax}`);
  }
  if (spec.nodeIds.length > STORAGE_LIMITS.nodeIdsMax) v.add("spec.node_ids", "TOO_MANY", `at most ${STORAGE_LIMITS.nodeIdsMax}`);
  else spec.nodeIds.forEach((id, i) => validateRef(v, `spec.node_ids[${i}]`, id, true));
  if (new Set(spec.nodeIds).size !== spec.nodeIds.length) v.add("spec.node_ids", "DUPLICATE", "must not repeat a node");
  validateLabels(v, "spec.node_selector", spec.nodeSelector);
  if (![VolumeFormat.UNSPECIFIED, VolumeFormat.RAW, VolumeFormat.QCOW2].includes(spec.defaultVolumeFormat)) v.add("spec.default_volume_format", "INVALID_ENUM", `unknown value ${spec.defaultVolumeFormat}`);
  else if (spec.defaultVolumeFormat === VolumeFormat.QCOW2 && !FILE_POOL_TYPES.has(spec.type)) v.add("spec.default_volume_format", "CONFLICT", "QCOW2 needs a file pool (LOCAL_DIR, SHARED_DIR, NFS)");
  if (spec.reservedGib > BigInt(STORAGE_LIMITS.reservedGibMax)) v.add("spec.reserved_gib", "OUT_OF_RANGE", `must be at most ${STORAGE_LIMITS.reservedGibMax}`);
  return v.list;
}

/** An absolute path without "..", "." or empty segments, control characters, or a trailing slash. */
function validateAbsolutePath(v: Violations, field: string, path: string): void {
  if (!v.required(field, path !== "")) return;
  if (path.length > STORAGE_LIMITS.pathMax) return v.add(field, "INVALID_LENGTH", `must be at most ${STORAGE_LIMITS.pathMax} characters long`);
  if (CONTROL_CHARS.test(path)) return v.add(field, "INVALID_FORMAT", "must not contain control characters");
  if (!path.startsWith("/") || path === "/") return v.add(field, "INVALID_FORMAT", "must be an absolute path below /");
  const parts = path.slice(1).split("/");
  if (parts.some((p) => p === "" || p === "." || p === "..")) v.add(field, "INVALID_FORMAT", "must be a normalised path: no '.', '..', empty segments or trailing '/'");
}

/** The fields of a pool's spec that are fixed after creation (type and the backend's location). */
export function fixedPoolSpecChanges(cur: StoragePool, next: StoragePool): FieldViolation[] {
  const v = new Violations();
  const a = cur.spec;
  const b = next.spec;
  if ((a?.type ?? 0) !== (b?.type ?? 0)) v.add("spec.type", "IMMUTABLE", "is fixed after creation");
  if (a?.backend.case !== b?.backend.case) v.add("spec", "IMMUTABLE", "the backend config is fixed after creation");
  else if (a?.backend.case === "sharedDir" && b?.backend.case === "sharedDir" && a.backend.value.path !== b.backend.value.path) v.add("spec.shared_dir.path", "IMMUTABLE", "is fixed after creation");
  return v.list;
}

/** What a CreateVolume request carries that the rules look at. */
export interface VolumeCreateInput {
  readonly name: string;
  readonly nodeId: string;
  readonly spec?: VolumeSpec | undefined;
}

/** Validates a CreateVolume (or CloneVolume) request; every violation with its field path. */
export function validateCreateVolume(req: VolumeCreateInput): FieldViolation[] {
  const v = new Violations();
  validateVolumeName(v, req.name);
  validateRef(v, "node_id", req.nodeId);
  const spec = req.spec;
  if (!spec) {
    v.add("spec", "REQUIRED", "is required (spec.size_gib at least)");
    return v.list;
  }
  const source = spec.source?.source;
  if (source === undefined || source.case === undefined) {
    if (spec.sizeGib === 0n) v.add("spec.size_gib", "REQUIRED", `is required for a blank volume (${STORAGE_LIMITS.volumeMinGib}-${STORAGE_LIMITS.volumeMaxGib})`);
    if (spec.source?.linked) v.add("spec.source.linked", "CONFLICT", "needs spec.source.volume_id");
  } else {
    validateRef(v, `spec.source.${snake(source.case)}`, source.value, true);
    if (spec.source?.linked && source.case !== "volumeId" && source.case !== "imageId") v.add("spec.source.linked", "CONFLICT", "needs spec.source.volume_id or spec.source.image_id");
  }
  if (spec.sizeGib !== 0n) v.range("spec.size_gib", spec.sizeGib, STORAGE_LIMITS.volumeMinGib, STORAGE_LIMITS.volumeMaxGib, "GiB");
  validateRef(v, "spec.pool_id", spec.poolId);
  if (spec.ownerVmId !== "") v.add("spec.owner_vm_id", "OUTPUT_ONLY", "is set by CreateVM for the volumes it makes; leave it empty");
  if (![VolumeFormat.UNSPECIFIED, VolumeFormat.RAW, VolumeFormat.QCOW2].includes(spec.format)) v.add("spec.format", "INVALID_ENUM", `unknown value ${spec.format}`);
  validateQos(v, spec.qos);
  // Not built yet: refused rather than stored and ignored.
  if (spec.preallocate) v.add("spec.preallocate", "UNSUPPORTED", "preallocated (thick) volumes are not supported yet; volumes are thin");
  if (spec.encrypted) v.add("spec.encrypted", "UNSUPPORTED", "encrypted volumes are not supported yet");
  return v.list;
}

/** Validates a volume's name (create, clone, rename). */
export function validateVolumeName(v: Violations, name: string): void {
  if (v.required("name", name !== "") && v.length("name", name, 1, STORAGE_LIMITS.volumeNameMax)) {
    v.pattern("name", name, VOLUME_NAME_PATTERN, "must start with a letter and contain only letters, digits, '.', '-' and '_'");
  }
}

/** QoS: a total limit excludes its read and write limits. */
export function validateQos(v: Violations, qos: VolumeSpec["qos"]): void {
  if (!qos) return;
  if (qos.maxTotalIops !== 0n && (qos.maxReadIops !== 0n || qos.maxWriteIops !== 0n)) v.add("spec.qos.max_total_iops", "CONFLICT", "excludes max_read_iops and max_write_iops");
  if (qos.maxTotalBytesPerSecond !== 0n && (qos.maxReadBytesPerSecond !== 0n || qos.maxWriteBytesPerSecond !== 0n)) {
    v.add("spec.qos.max_total_bytes_per_second", "CONFLICT", "excludes max_read_bytes_per_second and max_write_bytes_per_second");
  }
  if (qos.burstDurationSeconds > 3600) v.add("spec.qos.burst_duration_seconds", "OUT_OF_RANGE", "must be 0-3600");
}
