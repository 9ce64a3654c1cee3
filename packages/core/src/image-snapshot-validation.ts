import type { CreateImageRequest } from "@quantix/api/gen/Quantixkvm/storage/v1/image_service_pb.js";
import { ImageFormatSchema, ImageVisibility, ImageVisibilitySchema } from "@quantix/api/gen/Quantixkvm/storage/v1/image_pb.js";
import type { CreateSnapshotRequest } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_service_pb.js";
import type { DescEnum } from "@bufbuild/protobuf";
import type { FieldViolation } from "./errors.js";
import { PROJECT_ID_FORMAT } from "./resource/id-format.js";
import { STORAGE_LIMITS, VOLUME_NAME_PATTERN } from "./storage-validation.js";
import { CONTROL_CHARS, validateRef, Violations } from "./violations.js";

/** Limits of images and snapshots (the contract's). */
export const IMAGE_LIMITS = { nameMax: 255, urlMax: 4096, sharedProjectsMax: 100, excludedDisksMax: 32 } as const;

const SHA256 = /^[0-9a-f]{64}$/;
const known = (e: DescEnum, n: number) => e.values.some((x) => x.number === n);

/**
 * Validates a CreateImageRequest (and ImportImage's `create`); every violation with its
 * field path. The URL is only checked for form here: it reaches no shell and no option,
 * and the node's importer fetches it.
 */
export function validateCreateImage(req: CreateImageRequest): FieldViolation[] {
  const v = new Violations();
  if (v.required("name", req.name !== "") && v.length("name", req.name, 1, IMAGE_LIMITS.nameMax)) {
    if (CONTROL_CHARS.test(req.name)) v.add("name", "INVALID_FORMAT", "must not contain control characters");
  }
  if (req.projectId !== "") v.pattern("project_id", req.projectId, PROJECT_ID_FORMAT.pattern, PROJECT_ID_FORMAT.description);
  const spec = req.spec;
  if (!spec) {
    v.add("spec", "REQUIRED", "is required (spec.source at least)");
    return v.list;
  }
  const src = spec.source;
  switch (src?.source.case) {
    case undefined:
      v.add("spec.source", "REQUIRED", "is required: one of url, upload, volume_id or snapshot_id");
      break;
    case "url": {
      const url = src.source.value;
      if (url.length > IMAGE_LIMITS.urlMax) v.add("spec.source.url", "INVALID_LENGTH", `must be at most ${IMAGE_LIMITS.urlMax} characters long`);
      else if (CONTROL_CHARS.test(url) || !isHttpUrl(url)) v.add("spec.source.url", "INVALID_FORMAT", "must be an http or https URL with a host");
      break;
    }
    case "volumeId":
      validateRef(v, "spec.source.volume_id", src.source.value, true);
      break;
    case "snapshotId":
      validateRef(v, "spec.source.snapshot_id", src.source.value, true);
      break;
    case "upload":
      break;
  }
  if (src && src.expectedSha256 !== "" && !SHA256.test(src.expectedSha256)) v.add("spec.source.expected_sha256", "INVALID_FORMAT", "must be 64 lowercase hex digits");
  if (!known(ImageFormatSchema, spec.diskFormat)) v.add("spec.disk_format", "INVALID_ENUM", `unknown value ${spec.diskFormat}`);
  if (!known(ImageVisibilitySchema, spec.visibility)) v.add("spec.visibility", "INVALID_ENUM", `unknown value ${spec.visibility}`);
  if (spec.sharedProjectIds.length > 0 && spec.visibility !== ImageVisibility.SHARED) v.add("spec.shared_project_ids", "CONFLICT", "needs spec.visibility SHARED");
  if (spec.sharedProjectIds.length > IMAGE_LIMITS.sharedProjectsMax) v.add("spec.shared_project_ids", "TOO_MANY", `at most ${IMAGE_LIMITS.sharedProjectsMax}`);
  else spec.sharedProjectIds.forEach((id, i) => v.pattern(`spec.shared_project_ids[${i}]`, id, PROJECT_ID_FORMAT.pattern, PROJECT_ID_FORMAT.description));
  if (spec.minDiskGib > BigInt(STORAGE_LIMITS.volumeMaxGib)) v.add("spec.min_disk_gib", "OUT_OF_RANGE", `must be at most ${STORAGE_LIMITS.volumeMaxGib}`);
  validateRef(v, "spec.pool_id", spec.poolId);
  return v.list;
}

/** Validates a CreateSnapshotRequest; every violation with its field path. */
export function validateCreateSnapshot(req: CreateSnapshotRequest): FieldViolation[] {
  const v = new Violations();
  if (v.required("name", req.name !== "") && v.length("name", req.name, 1, STORAGE_LIMITS.volumeNameMax)) {
    v.pattern("name", req.name, VOLUME_NAME_PATTERN, "must start with a letter and contain only letters, digits, '.', '-' and '_'");
  }
  const spec = req.spec;
  if (!spec || spec.target.case === undefined) {
    v.add("spec.volume_id", "REQUIRED", "one of spec.volume_id or spec.vm_id is required");
    return v.list;
  }
  validateRef(v, spec.target.case === "vmId" ? "spec.vm_id" : "spec.volume_id", spec.target.value, true);
  if (spec.excludedDiskIds.length > 0 && spec.target.case !== "vmId") v.add("spec.excluded_disk_ids", "CONFLICT", "needs spec.vm_id");
  if (spec.excludedDiskIds.length > IMAGE_LIMITS.excludedDisksMax) v.add("spec.excluded_disk_ids", "TOO_MANY", `at most ${IMAGE_LIMITS.excludedDisksMax}`);
  else spec.excludedDiskIds.forEach((id, i) => validateRef(v, `spec.excluded_disk_ids[${i}]`, id, true));
  return v.list;
}

function isHttpUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return (u.protocol === "http:" || u.protocol === "https:") && u.hostname !== "" && u.username === "" && u.password === "";
  } catch {
    return false;
  }
}
