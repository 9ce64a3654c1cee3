import { posix } from "node:path";
import type { VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";

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
