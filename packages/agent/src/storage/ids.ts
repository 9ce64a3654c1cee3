import type { Violations } from "@quantix/core";

/**
 * Storage ids: canonical lowercase UUIDs. Pool directories and volume files are named
 * after them, so this pattern is what keeps user strings off the disk: no '/', no '.',
 * no leading '-' (never read as a qemu-img option), a fixed length.
 */
export const STORAGE_ID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Records a violation at `field` unless `value` is a storage id; returns whether it is. */
export function checkStorageId(v: Violations, field: string, value: string): boolean {
  if (!v.required(field, value !== "", "is required: a UUID such as 2f0b6a4e-5c1d-4e8a-9b7f-0a1b2c3d4e5f")) return false;
  return v.pattern(field, value, STORAGE_ID_PATTERN, "must be a UUID in lowercase hex, 8-4-4-4-12 digits (36 characters)");
}

/** The largest volume the agent creates or resizes to: 64 TiB. */
export const MAX_VOLUME_BYTES = 64n * 1024n ** 4n;

/** Records a violation unless `size` is a positive multiple of 512 of at most {@link MAX_VOLUME_BYTES}. */
export function checkVolumeSize(v: Violations, field: string, size: bigint): void {
  if (size <= 0n || size > MAX_VOLUME_BYTES) v.add(field, "OUT_OF_RANGE", `must be between 512 and ${MAX_VOLUME_BYTES} bytes (64 TiB), got ${size}`);
  else if (size % 512n !== 0n) v.add(field, "INVALID_VALUE", `must be a multiple of 512 bytes, got ${size}`);
}
