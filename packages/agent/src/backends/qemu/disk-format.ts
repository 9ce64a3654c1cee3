import { readSync } from "node:fs";
import { open, stat } from "node:fs/promises";

/** A disk image format QEMU is told explicitly (it is never allowed to probe). */
export type DiskFormat = "raw" | "qcow2";

/** The first four bytes of every qcow2 image: "QFI" and 0xfb. */
const QCOW2_MAGIC = [0x51, 0x46, 0x49, 0xfb] as const;

/**
 * Detects a disk's format from its magic bytes; anything that is not qcow2 is raw.
 * QEMU is never allowed to probe: a guest that writes a qcow2 header into its raw disk
 * could then make a later boot open a backing file of its choosing on the host. For
 * the same reason the backend detects once, before the guest first runs, and keeps the
 * answer with the VM instead of detecting again at every boot.
 */
export async function detectDiskFormat(path: string): Promise<DiskFormat> {
  const handle = await open(path, "r");
  try {
    const head = new Uint8Array(4);
    const { bytesRead } = await handle.read(head, 0, 4, 0);
    return bytesRead === 4 && QCOW2_MAGIC.every((b, i) => head[i] === b) ? "qcow2" : "raw";
  } finally {
    await handle.close();
  }
}

/** {@link detectDiskFormat} on a descriptor the agent opened (host-files.ts). */
export function detectDiskFormatOf(fd: number): DiskFormat {
  const head = new Uint8Array(4);
  const bytesRead = readSync(fd, head, 0, 4, 0);
  return bytesRead === 4 && QCOW2_MAGIC.every((b, i) => head[i] === b) ? "qcow2" : "raw";
}

/** Format and kind of a disk path, detected before the guest first runs. */
export async function detectDiskSource(path: string): Promise<{ format: DiskFormat; blockDevice: boolean }> {
  const [format, info] = await Promise.all([detectDiskFormat(path), stat(path)]);
  return { format, blockDevice: info.isBlockDevice() };
}
