import { realpath } from "node:fs/promises";
import { posix } from "node:path";
import type { VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError, type FieldViolation } from "@quantix/core";

/**
 * Storage reachability for live migration: the target opens the same files the source
 * has open (kernel, initrd, disks), so a VM may move only if every host path it uses
 * lies under a directory the agents declare shared (VMCP_SHARED_DIRS). The check is
 * lexical (normalised paths, no symlink resolution): the operator who declares a
 * directory shared vouches for what lies below it.
 */

/** The host paths a VM config uses, each with the field naming it. */
export function vmHostPaths(config: VmConfig): { field: string; path: string }[] {
  const out: { field: string; path: string }[] = [];
  if (config.boot?.kernelPath) out.push({ field: "boot.kernel_path", path: config.boot.kernelPath });
  if (config.boot?.initrdPath) out.push({ field: "boot.initrd_path", path: config.boot.initrdPath });
  config.storage.forEach((d, i) => out.push({ field: `storage[${i}].path`, path: d.path }));
  return out;
}

/** Whether `file` lies under one of `dirs` (all absolute). */
export function underShared(file: string, dirs: readonly string[]): boolean {
  const f = posix.normalize(file);
  return dirs.some((d) => {
    const dir = posix.normalize(d).replace(/\/+$/, "");
    return f === dir || f.startsWith(`${dir}/`);
  });
}

/** FAILED_PRECONDITION naming every path of `config` outside `dirs`. */
export function requireSharedStorage(vmId: string, config: VmConfig, dirs: readonly string[]): void {
  const outside = vmHostPaths(config).filter((p) => !underShared(p.path, dirs));
  if (outside.length === 0) return;
  const where = dirs.length === 0 ? "this agent declares no shared directory (VMCP_SHARED_DIRS)" : `this agent shares only ${dirs.join(", ")}`;
  throw new QuantixError("failed_precondition", `VM '${vmId}' cannot migrate: ${outside.map((p) => `${p.field} ${p.path}`).join(", ")} ${outside.length === 1 ? "is" : "are"} not on storage the other host can reach (${where})`);
}

/**
 * The disks a migration with copy_storage copies: the writable ones not under `dirs`
 * (read-only disks, like the kernel and initrd, are images the target must already hold).
 */
export function disksToCopy(config: VmConfig, dirs: readonly string[]): number[] {
  return config.storage.flatMap((d, i) => (!d.readOnly && !underShared(d.path, dirs) ? [i] : []));
}

/** One requested copy, as PrepareMigration receives it. */
export interface RequestedCopy {
  readonly diskId: string;
  readonly format: string;
  readonly virtualSizeBytes: bigint;
}

/** Largest virtual size of a copied disk: 64 TiB, QEMU's qcow2 limit. */
const MAX_COPY_BYTES = 64n << 40n;

/**
 * Checks PrepareMigration's disk_copies against its config: each names a writable disk of
 * it once, not under `dirs` (a shared disk is used in place), with format raw or qcow2 and
 * a size QEMU takes; and every writable disk not under `dirs` is among them (a local disk
 * silently used as this host has it would give the guest another disk than its own).
 * Answers the violations (INVALID_ARGUMENT) and, separately, the precondition failures.
 */
export function checkCopies(config: VmConfig, copies: readonly RequestedCopy[], dirs: readonly string[]): { violations: FieldViolation[]; unshared: string[]; indexes: number[] } {
  const violations: FieldViolation[] = [];
  const indexes: number[] = [];
  if (copies.length > 32) violations.push({ field: "disk_copies", reason: "OUT_OF_RANGE", description: "at most 32 disks" });
  copies.forEach((c, k) => {
    const field = `disk_copies[${k}]`;
    const index = config.storage.findIndex((d) => d.id === c.diskId);
    const disk = config.storage[index];
    if (!disk) violations.push({ field: `${field}.disk_id`, reason: "NOT_FOUND", description: `config has no disk '${c.diskId}'` });
    else if (indexes.includes(index)) violations.push({ field: `${field}.disk_id`, reason: "DUPLICATE", description: `disk '${c.diskId}' is named twice` });
    else if (disk.readOnly) violations.push({ field: `${field}.disk_id`, reason: "NOT_ALLOWED", description: `disk '${c.diskId}' is read-only: it is not copied, the target must hold it` });
    else if (underShared(disk.path, dirs)) violations.push({ field: `${field}.disk_id`, reason: "NOT_ALLOWED", description: `disk '${c.diskId}' is on shared storage: it is used in place, not copied` });
    else indexes.push(index);
    if (c.format !== "raw" && c.format !== "qcow2") violations.push({ field: `${field}.format`, reason: "INVALID_VALUE", description: "must be raw or qcow2" });
    if (c.virtualSizeBytes <= 0n || c.virtualSizeBytes > MAX_COPY_BYTES || c.virtualSizeBytes % 512n !== 0n) violations.push({ field: `${field}.virtual_size_bytes`, reason: "OUT_OF_RANGE", description: "must be a positive multiple of 512 of at most 64 TiB" });
  });
  const unshared = disksToCopy(config, dirs)
    .filter((i) => !copies.some((c) => c.diskId === config.storage[i]!.id))
    .map((i) => `storage[${i}].path ${config.storage[i]!.path}`);
  return { violations, unshared, indexes };
}

/**
 * The paths of copied disks (`indexes` in config.storage), which do not exist yet: each
 * must lie in a directory that exists below one of `allowed` (the image directories),
 * compared after resolving that directory, as openHostFiles checks again at launch.
 */
export async function checkCopyPaths(config: VmConfig, indexes: readonly number[], allowed: readonly string[]): Promise<FieldViolation[]> {
  const dirs = await Promise.all(allowed.map((d) => realpath(d).catch(() => d)));
  const out: FieldViolation[] = [];
  for (const i of indexes) {
    const path = config.storage[i]!.path;
    const parent = await realpath(posix.dirname(posix.normalize(path))).catch(() => undefined);
    const inside = parent !== undefined && dirs.some((d) => underShared(posix.join(parent, posix.basename(path)), [d]) && posix.join(parent, posix.basename(path)) !== d);
    if (!inside) out.push({ field: `config.storage[${i}].path`, reason: "NOT_ALLOWED", description: `${path}: a copied disk is created only in an existing directory below an image directory (VMCP_IMAGE_DIRS) of this host` });
  }
  return out;
}
