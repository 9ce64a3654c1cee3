import { closeSync, constants, fstatSync, openSync, readlinkSync } from "node:fs";
import { realpath } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";
import { acceptableKind, kindRule, resolveDirs } from "./image-dirs.js";
import { underShared, vmHostPaths } from "./migration-storage.js";
import { readQcow2Links } from "./qcow2-header.js";

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
  /** The path it was opened by, symlinks resolved. */
  readonly real: string;
}

/** One read-only layer under a qcow2 disk (a linked clone's backing volume), opened and checked like the disk. */
export interface BackingFile extends HostFile {
  /** Its format, from its name and checked against its content. */
  readonly format: "qcow2" | "raw";
}

/** The deepest backing chain a disk may have (a clone of a clone of ... an image). */
export const MAX_BACKING_CHAIN = 16;

/** A backing file the agent opens: a volume of the same pool, named by its id, with its format explicit. */
const VOLUME_FILE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\.(qcow2|raw)$/;

/** The files of one boot; `close()` closes the agent's descriptors (the child keeps its copies). */
export interface HostFiles {
  readonly kernel: HostFile | undefined;
  readonly initrd: HostFile | undefined;
  /** Parallel to config.storage. */
  readonly disks: readonly HostFile[];
  /** Parallel to config.storage: each disk's backing chain, nearest layer first (empty: none). */
  readonly backing: readonly (readonly BackingFile[])[];
  /** Every descriptor, in the order they were opened (the order a child gets them from fd 3). */
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
  const disks: HostFile[] = [];
  const backing: BackingFile[][] = [];
  try {
    for (const { field, path } of vmHostPaths(config)) {
      const disk = /^storage\[(\d+)\]/.exec(field);
      const writable = disk !== null && !config.storage[Number(disk[1])]!.readOnly;
      const file = await openOne(field, path, writable, allowed);
      opened.push(file);
      if (!disk) continue;
      disks.push(file);
      backing.push(await openChain(file, allowed, opened));
    }
  } catch (err) {
    closeAll();
    throw err;
  }
  const kernel = opened.find((f) => f.field === "boot.kernel_path");
  const initrd = opened.find((f) => f.field === "boot.initrd_path");
  return { kernel, initrd, disks, backing, all: opened, close: closeAll };
}

/**
 * Opens the backing chain of a qcow2 disk, layer by layer, read-only, each checked as
 * the disk was (allowed directory, no symlink swap, a regular file or device). A layer
 * is accepted only as a volume of the disk's own pool: a bare `<uuid>.<qcow2|raw>` name
 * in the directory of the layer above, with that format stated in the header and found
 * in the content; anything else (a path elsewhere, no explicit format, an external data
 * file, a chain deeper than {@link MAX_BACKING_CHAIN}) is refused, because QEMU would
 * open it by the name the image gives. Each opened layer is added to `opened`.
 */
async function openChain(top: HostFile, allowed: readonly string[] | undefined, opened: HostFile[]): Promise<BackingFile[]> {
  const chain: BackingFile[] = [];
  const refuse = (why: string): never => {
    throw new QuantixError("failed_precondition", `${top.field} ${top.path} ${why}`);
  };
  let current: HostFile = top;
  for (;;) {
    const links = readQcow2Links(current.fd);
    const of = current === top ? "" : ` (through its backing file ${current.real})`;
    if (!links) return chain;
    if (links.externalDataFile) refuse(`is a qcow2 image with an external data file${of}, which the hypervisor would open by name; convert it (qemu-img convert) first`);
    const name = links.backingFile;
    if (name === undefined) return chain;
    const format = VOLUME_FILE.exec(name)?.[1] as "qcow2" | "raw" | undefined;
    if (format === undefined || links.backingFormat !== format) {
      refuse(`is a qcow2 image with a backing file${of} that is not a volume of its own pool (a bare '<volume id>.<qcow2|raw>' name with that backing format stated), which the hypervisor would open by name; flatten it (qemu-img convert) first`);
    }
    if (chain.length >= MAX_BACKING_CHAIN) refuse(`has a backing chain deeper than ${MAX_BACKING_CHAIN} layers; flatten it (qemu-img convert) first`);
    const layer: BackingFile = { ...(await openOne(`${top.field}.backing[${chain.length}]`, join(dirname(current.real), name!), false, allowed)), format: format! };
    opened.push(layer);
    if ((readQcow2Links(layer.fd) !== undefined) !== (format === "qcow2")) refuse(`has a backing file ${layer.real} whose content is not the ${format} its name says`);
    chain.push(layer);
    current = layer;
  }
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
    return { field, path, fd, blockDevice: kind.isBlockDevice(), real: before };
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

/**
 * Checks one disk file and its backing chain as a boot would (the rules of
 * {@link openHostFiles}), then closes them: for a disk hot-plugged by path, whose
 * layers QEMU is then told by their resolved paths, nearest first. Refused as at boot.
 */
export async function checkDiskChain(field: string, path: string, writable: boolean, allowedDirs: readonly string[] | undefined): Promise<{ real: string; backing: { real: string; format: "qcow2" | "raw"; blockDevice: boolean }[] }> {
  const allowed = allowedDirs && (await resolveDirs(allowedDirs));
  const opened: HostFile[] = [];
  try {
    const disk = await openOne(field, path, writable, allowed);
    opened.push(disk);
    const chain = await openChain(disk, allowed, opened);
    return { real: disk.real, backing: chain.map((b) => ({ real: b.real, format: b.format, blockDevice: b.blockDevice })) };
  } finally {
    for (const f of opened) closeSync(f.fd);
  }
}
