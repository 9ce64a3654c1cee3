import { CloneMode, StoragePoolType, VolumeFormat, type CreateVolumeRequest, type EnsurePoolRequest, type ImportVolumeRequest, type ResizeVolumeRequest, type UploadVolumeRequest } from "@quantix/api/gen/vmm/v1/storage_pb.js";
import { QuantixError, throwIfViolations, Violations } from "@quantix/core";
import { checkStorageId, checkVolumeSize } from "./ids.js";
import type { ManagedPoolType } from "./pools.js";
import type { ImportSpec } from "./import-volume.js";
import { UPLOAD_LIMITS, type UploadSpec } from "./upload-volume.js";
import type { CreateVolumeSpec, VolumeFormatName } from "./volumes.js";

// Request validation of StorageService: every violation at once, with its field path
// (INVALID_ARGUMENT), before anything touches the disk.

/** Throws INVALID_ARGUMENT unless every named field is a storage id. */
export function requireIds(ids: Record<string, string>): void {
  const v = new Violations();
  for (const [field, value] of Object.entries(ids)) checkStorageId(v, field, value);
  throwIfViolations(v.list);
}

/** An EnsurePool request as the pool layer takes it. */
export function ensurePoolArgs(req: EnsurePoolRequest): { id: string; type: ManagedPoolType; path: string } {
  const v = new Violations();
  checkStorageId(v, "pool_id", req.poolId);
  let type: ManagedPoolType | "other" | undefined;
  switch (req.type) {
    case StoragePoolType.DIR:
      type = "DIR";
      if (req.path !== "") v.add("path", "NOT_ALLOWED", "must be empty for DIR: a DIR pool's directory is <pool root>/<pool_id>");
      break;
    case StoragePoolType.SHARED_DIR:
      type = "SHARED_DIR";
      break;
    case StoragePoolType.NFS:
    case StoragePoolType.CEPH_RBD:
    case StoragePoolType.LVM:
    case StoragePoolType.ISCSI:
      type = "other";
      break;
    case StoragePoolType.UNSPECIFIED:
      v.add("type", "REQUIRED", "is required: STORAGE_POOL_TYPE_DIR or STORAGE_POOL_TYPE_SHARED_DIR");
      break;
    default:
      v.add("type", "INVALID_VALUE", `unknown pool type ${req.type as number}`);
  }
  throwIfViolations(v.list);
  if (type === "other" || type === undefined) {
    throw new QuantixError(
      "failed_precondition",
      `STORAGE_POOL_TYPE_${StoragePoolType[req.type]} pools are not managed by this agent yet: it manages DIR and SHARED_DIR pools (GetStorageCapabilities reports what the host could support)`,
    );
  }
  return { id: req.poolId, type, path: req.path };
}

const FORMATS: Partial<Record<VolumeFormat, VolumeFormatName>> = { [VolumeFormat.QCOW2]: "qcow2", [VolumeFormat.RAW]: "raw" };

/** A CreateVolume request as the volume layer takes it. */
export function createVolumeSpec(req: CreateVolumeRequest): CreateVolumeSpec {
  const v = new Violations();
  checkStorageId(v, "pool_id", req.poolId);
  checkStorageId(v, "volume_id", req.volumeId);
  const format = FORMATS[req.format];
  if (format === undefined) v.add("format", req.format === VolumeFormat.UNSPECIFIED ? "REQUIRED" : "INVALID_VALUE", "must be VOLUME_FORMAT_QCOW2 or VOLUME_FORMAT_RAW");
  let source: CreateVolumeSpec["source"];
  if (req.source) {
    if (checkStorageId(v, "source.volume_id", req.source.volumeId) && req.source.volumeId === req.volumeId) {
      v.add("source.volume_id", "INVALID_VALUE", "must name another volume than volume_id");
    }
    const mode = req.source.mode === CloneMode.LINKED ? "linked" : req.source.mode === CloneMode.FULL ? "full" : undefined;
    if (mode === undefined) v.add("source.mode", req.source.mode === CloneMode.UNSPECIFIED ? "REQUIRED" : "INVALID_VALUE", "must be CLONE_MODE_LINKED or CLONE_MODE_FULL");
    if (mode === "linked" && format === "raw") v.add("format", "NOT_ALLOWED", "a linked clone is a qcow2 overlay: use VOLUME_FORMAT_QCOW2 or CLONE_MODE_FULL");
    if (req.source.snapshotId !== "") {
      checkStorageId(v, "source.snapshot_id", req.source.snapshotId);
      if (mode === "linked") v.add("source.snapshot_id", "NOT_ALLOWED", "a linked clone follows the source's current data; copy a snapshot with CLONE_MODE_FULL");
    }
    if (mode !== undefined) source = { volumeId: req.source.volumeId, mode, ...(req.source.snapshotId !== "" ? { snapshotId: req.source.snapshotId } : {}) };
    if (req.sizeBytes !== 0n) checkVolumeSize(v, "size_bytes", req.sizeBytes);
  } else {
    checkVolumeSize(v, "size_bytes", req.sizeBytes);
  }
  throwIfViolations(v.list);
  return { poolId: req.poolId, id: req.volumeId, format: format!, sizeBytes: req.sizeBytes, ...(source ? { source } : {}) };
}

/** Validates a ResizeVolume request. */
export function checkResize(req: ResizeVolumeRequest): void {
  const v = new Violations();
  checkStorageId(v, "pool_id", req.poolId);
  checkStorageId(v, "volume_id", req.volumeId);
  checkVolumeSize(v, "size_bytes", req.sizeBytes);
  throwIfViolations(v.list);
}

/** An ImportVolume request as the import takes it: an http(s) URL without credentials, an optional sha256. */
export function importSpec(req: ImportVolumeRequest): ImportSpec {
  const v = new Violations();
  checkStorageId(v, "pool_id", req.poolId);
  checkStorageId(v, "volume_id", req.volumeId);
  const format = FORMATS[req.format];
  if (format === undefined) v.add("format", req.format === VolumeFormat.UNSPECIFIED ? "REQUIRED" : "INVALID_VALUE", "must be VOLUME_FORMAT_QCOW2 or VOLUME_FORMAT_RAW");
  let url: URL | undefined;
  if (v.required("url", req.url !== "", "is required: an http or https URL") && v.length("url", req.url, 1, 2048)) {
    try {
      url = new URL(req.url);
    } catch {
      url = undefined;
    }
    if (url === undefined || (url.protocol !== "http:" && url.protocol !== "https:")) v.add("url", "INVALID_FORMAT", "must be an http or https URL");
    else if (url.username !== "" || url.password !== "") v.add("url", "NOT_ALLOWED", "must not carry credentials");
  }
  if (req.sha256 !== "") v.pattern("sha256", req.sha256, /^[0-9a-f]{64}$/, "must be 64 lowercase hex digits, or empty");
  throwIfViolations(v.list);
  return { poolId: req.poolId, id: req.volumeId, format: format!, url: url!, sha256: req.sha256 };
}

/** The formats a sender may declare for an upload (what the content detection names). */
const DETECTED_FORMATS = ["qcow2", "raw", "vmdk", "vdi", "vhdx", "vpc", "iso"];

/** UploadVolume's first message as the upload takes it: the header, every field checked (paths under `header.`). */
export function uploadSpec(first: UploadVolumeRequest | undefined): UploadSpec {
  const v = new Violations();
  if (first?.content.case !== "header") {
    v.add("header", "REQUIRED", "the first message must carry the header (pool_id, volume_id, format, size_bytes); the data follows in chunks");
    throwIfViolations(v.list);
  }
  const h = first!.content.value as Extract<UploadVolumeRequest["content"], { case: "header" }>["value"];
  checkStorageId(v, "header.pool_id", h.poolId);
  checkStorageId(v, "header.volume_id", h.volumeId);
  const format = FORMATS[h.format];
  if (format === undefined) v.add("header.format", h.format === VolumeFormat.UNSPECIFIED ? "REQUIRED" : "INVALID_VALUE", "must be VOLUME_FORMAT_QCOW2 or VOLUME_FORMAT_RAW");
  if (h.sizeBytes < 0n || h.sizeBytes > UPLOAD_LIMITS.maxBytes) v.add("header.size_bytes", "OUT_OF_RANGE", `must be 0 (not known) to ${UPLOAD_LIMITS.maxBytes} bytes`);
  if (h.sha256 !== "") v.pattern("header.sha256", h.sha256, /^[0-9a-f]{64}$/, "must be 64 lowercase hex digits, or empty");
  if (h.expectedFormat !== "" && !DETECTED_FORMATS.includes(h.expectedFormat)) v.add("header.expected_format", "INVALID_VALUE", `must be empty or one of ${DETECTED_FORMATS.join(", ")}`);
  throwIfViolations(v.list);
  return { poolId: h.poolId, id: h.volumeId, format: format!, sizeBytes: h.sizeBytes, sha256: h.sha256, expectedFormat: h.expectedFormat };
}
