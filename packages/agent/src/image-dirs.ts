import { realpath, stat } from "node:fs/promises";
import { create } from "@bufbuild/protobuf";
import { VmConfigSchema, type VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import type { FieldViolation } from "@quantix/core";
import { underShared, vmHostPaths } from "./migration-storage.js";

/**
 * The image allow-list (VMCP_IMAGE_DIRS): a VM's kernel, initrd and disks are host files
 * the hypervisor opens with the agent's rights (root), so a config may name only files
 * below directories the operator set aside for images. Otherwise any caller could boot
 * `/etc/shadow` as an initrd or attach `/dev/sda` as a disk. Paths are compared after
 * realpath, so a symlink or `..` inside an image directory cannot lead out of it; and
 * by kind, as the hypervisors take them: a kernel or initrd is a regular file, a disk a
 * regular file or a block device (never a directory, a FIFO or a character device).
 */

/** One violation per kernel, initrd or disk path of a config that the host cannot give a guest. */
export type ImageCheck = (config: VmConfig) => Promise<FieldViolation[]>;

/** The allow-list's directories as they really are (a directory that does not exist yet stays as given). */
export async function resolveDirs(dirs: readonly string[]): Promise<string[]> {
  return Promise.all(dirs.map((d) => realpath(d).catch(() => d)));
}

/** Whether a file of this kind may serve as `field` (a kernel, an initrd or a disk). */
export function acceptableKind(field: string, kind: { isFile(): boolean; isBlockDevice(): boolean }): boolean {
  return kind.isFile() || (field.startsWith("storage[") && kind.isBlockDevice());
}

/** What `field` must be, for an error message. */
export function kindRule(field: string): string {
  return field.startsWith("storage[") ? "a regular file or a block device" : "a regular file";
}

/**
 * One violation per kernel/initrd/disk path of `config` that does not resolve to an
 * existing file strictly below one of `dirs`, or is not of a kind its field takes; each
 * names the field and the allowed dirs.
 */
export async function checkImagePaths(config: VmConfig, dirs: readonly string[], prefix = "config"): Promise<FieldViolation[]> {
  const allowed = await resolveDirs(dirs);
  const where = dirs.length === 0 ? "no image directory is configured (VMCP_IMAGE_DIRS)" : `the image directories (VMCP_IMAGE_DIRS) are ${dirs.join(", ")}`;
  const out: FieldViolation[] = [];
  for (const { field, path } of vmHostPaths(config)) {
    const real = await realpath(path).catch(() => undefined);
    if (real === undefined) {
      out.push({ field: `${prefix}.${field}`, reason: "NOT_FOUND", description: `${path} does not exist or the agent cannot reach it; ${where}` });
    } else if (!allowed.some((d) => real !== d && underShared(real, [d]))) {
      out.push({ field: `${prefix}.${field}`, reason: "NOT_ALLOWED", description: `${path} is not a file under an image directory; ${where}` });
    } else if (!acceptableKind(field, await stat(real))) {
      out.push({ field: `${prefix}.${field}`, reason: "NOT_ALLOWED", description: `${path} is not ${kindRule(field)}` });
    }
  }
  return out;
}

/** How many of a simulated host's images an error lists before it says "and N more". */
const LISTED_IMAGES = 8;

/**
 * The image check of a simulated host in a process (the demo's nodes): its "disk" holds
 * exactly `images`, and a config naming any other path is refused as the agent process
 * refuses a file that is not there (NOT_FOUND, naming the field and what the host has).
 */
export function simulatedImages(images: readonly string[], volumeDirs: readonly string[] = []): ImageCheck {
  const have = new Set(images);
  const sorted = [...have].sort();
  const listed = sorted.length === 0 ? "it has no images" : `its images are ${sorted.slice(0, LISTED_IMAGES).join(", ")}${sorted.length > LISTED_IMAGES ? ` and ${sorted.length - LISTED_IMAGES} more` : ""}`;
  return async (config) => {
    const out: FieldViolation[] = [];
    for (const { field, path } of vmHostPaths(config)) {
      if (have.has(path)) continue;
      // A volume's file: a real file below the host's volume directories, checked as an agent checks its pool root.
      if (volumeDirs.length > 0 && field.startsWith("storage[") && (await checkImagePaths(create(VmConfigSchema, { storage: [{ id: "v", path }] }), volumeDirs)).length === 0) continue;
      out.push({ field: `config.${field}`, reason: "NOT_FOUND", description: `${path} is not an image on this simulated host; ${listed}` });
    }
    return out;
  };
}
