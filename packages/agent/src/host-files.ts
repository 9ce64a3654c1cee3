import { closeSync, constants, fstatSync, openSync, readlinkSync, readSync } from "node:fs";
import { realpath } from "node:fs/promises";
import type { VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";
import { acceptableKind, kindRule, resolveDirs } from "./image-dirs.js";
import { underShared, vmHostPaths } from "./migration-storage.js";

/**
 * A VM's kernel, initrd and disks, opened by the agent and checked as opened, so that
 * the hypervisor is handed these descriptors and never a name it would resolve again
 * (as libvirt hands QEMU file descriptors). A name is checked when CreateVm accepts it
 * (image-dirs.ts), but anyone who can write to an image directory could swap the file
 * for a symlink to a secret between that check and the moment the hypervisor opens it.
 * Here each file is opened by its resolved name with O_NOFOLLOW (a symlink put in its
 * place fails to open) and then checked through the descriptor itself: the file it
 * reaches (/proc/self/fd/N) must be the one resolved just before, inside the allowed
 * directories, and of a kind its field takes (fstat).
 */

/** One opened file of a VM's config. */
export interface HostFile {
  /** The config field it serves: `boot.kernel_path`, `boot.initrd_path`, `storage[2].path`. */
  readonly field: string;
  readonly path: string;
  /** The agent's descriptor: give it to the hypervisor's process, then close it. */
  readonly fd: number;
  readonly blockDevice: boolean;
}

/** The files of one boot; `close()` closes the agent's descriptors (the child keeps its copies). */
export interface HostFiles {
  readonly kernel: HostFile | undefined;
  readonly initrd: HostFile | undefined;
  /** Parallel to config.storage. */
  readonly disks: readonly HostFile[];
  /** Every descriptor: kernel, initrd, then the disks (the order a child gets them from fd 3). */
  readonly all: readonly HostFile[];
  close(): void;
}

/**
 * Opens and checks every host file of `config`; `allowedDirs` (the image and shared
 * directories) undefined: any directory (unit tests). A file that cannot be opened, that
 * is outside the allowed directories, that changed while it was opened, or that is of
 * the wrong kind is FAILED_PRECONDITION naming the field; nothing stays open then.
 */
export async function openHostFiles(config: VmConfig, allowedDirs: readonly string[] | undefined): Promise<HostFiles> {
  const allowed = allowedDirs && (await resolveDirs(allowedDirs));
  const opened: HostFile[] = [];
  const closeAll = () => {
    for (const f of opened) closeSync(f.fd);
  };
  try {
    for (const { field, path } of vmHostPaths(config)) {
      const disk = /^storage\[(\d+)\]/.exec(field);
      const writable = disk !== null && !config.storage[Number(disk[1])]!.readOnly;
      opened.push(await openOne(field, path, writable, allowed));
    }
  } catch (err) {
    closeAll();
    throw err;
  }
  const kernel = opened.find((f) => f.field === "boot.kernel_path");
  const initrd = opened.find((f) => f.field === "boot.initrd_path");
  return { kernel, initrd, disks: opened.filter((f) => f.field.startsWith("storage[")), all: opened, close: closeAll };
}

async function openOne(field: string, path: string, writable: boolean, allowed: readonly string[] | undefined): Promise<HostFile> {
  const refuse = (why: string): never => {
    throw new QuantixError("failed_precondition", `${field} ${path} ${why}`);
  };
  const inside = (real: string) => !allowed || allowed.some((d) => real !== d && underShared(real, [d]));
  const before = await realpath(path).catch(() => refuse("does not exist or the agent cannot reach it"));
  if (!inside(before)) refuse("is not a file under an image directory (VMCP_IMAGE_DIRS) or a shared one (VMCP_SHARED_DIRS)");
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO put in its place must not hang the open; files ignore it.
    fd = openSync(before, (writable ? constants.O_RDWR : constants.O_RDONLY) | constants.O_NOFOLLOW | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return refuse(code === "ELOOP" ? "was replaced by a symbolic link after it was checked" : `cannot be opened (${code ?? String(err)})`);
  }
  try {
    const after = readlinkSync(`/proc/self/fd/${fd}`);
    if (after !== before) refuse("changed while it was being opened");
    const kind = fstatSync(fd);
    if (!acceptableKind(field, kind)) refuse(`is not ${kindRule(field)}`);
    if (field.startsWith("storage[") && hasBackingFile(fd)) refuse("is a qcow2 image with a backing file, which the hypervisor would open by name; flatten it (qemu-img convert) first");
    return { field, path, fd, blockDevice: kind.isBlockDevice() };
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

/** Whether the image on `fd` is qcow2 and names a backing file (header: magic, version, then the backing file's offset, big-endian). */
function hasBackingFile(fd: number): boolean {
  const head = Buffer.alloc(16);
  if (readSync(fd, head, 0, 16, 0) < 16 || head.readUInt32BE(0) !== 0x514649fb) return false;
  return head.readBigUInt64BE(8) !== 0n;
}
