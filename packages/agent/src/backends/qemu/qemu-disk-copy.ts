import { execFile } from "node:child_process";
import { open, rm, stat } from "node:fs/promises";
import { promisify } from "node:util";
import { QuantixError } from "@quantix/core";
import type { DiskFormat } from "./disk-format.js";
import type { Qmp } from "./qemu-nbd-export.js";

/**
 * The files of a migration that copies disks: the source measures each disk (format and
 * virtual size, what the target needs to create its copy); the target creates the empty
 * copy, exclusively (never over a file that exists, which may be another VM's disk or,
 * on one machine, the source's own), and removes it again if the migration fails.
 */

const run = promisify(execFile);
const QCOW2_MAGIC = 0x514649fb;

/** A disk's virtual size: QEMU's own answer while it runs, else the qcow2 header or the raw file's length. */
export async function diskVirtualSize(path: string, format: DiskFormat, qmp: Qmp | undefined, node: string): Promise<bigint> {
  const info = await stat(path);
  if (!info.isFile()) throw new QuantixError("failed_precondition", `disk ${path} is not a regular file: only image files are copied by a migration; put it on shared storage`);
  if (qmp) {
    const blocks = await qmp.execute<{ inserted?: { "node-name"?: string; image?: { "virtual-size"?: number } } }[]>("query-block");
    const size = blocks.find((b) => b.inserted?.["node-name"] === node)?.inserted?.image?.["virtual-size"];
    if (size !== undefined) return BigInt(size);
  }
  if (format === "raw") return BigInt(info.size);
  const handle = await open(path, "r");
  try {
    const head = Buffer.alloc(32);
    const { bytesRead } = await handle.read(head, 0, 32, 0);
    if (bytesRead < 32 || head.readUInt32BE(0) !== QCOW2_MAGIC) throw new QuantixError("failed_precondition", `disk ${path} is not a qcow2 image any more`);
    return head.readBigUInt64BE(24);
  } finally {
    await handle.close();
  }
}

/**
 * Creates an empty disk of `format` and `sizeBytes` at `path`, which must not exist (an
 * exclusive create first, then qemu-img fills in the qcow2 header). ALREADY_EXISTS when
 * it does; a half-made file is removed.
 */
export async function createDiskCopy(path: string, format: DiskFormat, sizeBytes: bigint, qemuImg = "qemu-img"): Promise<void> {
  const handle = await open(path, "wx", 0o600).catch((err: unknown) => {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "EEXIST") throw new QuantixError("already_exists", `${path} already exists on this host: a migration never copies a disk over an existing file`);
    throw new QuantixError("failed_precondition", `${path} cannot be created on this host (${code ?? String(err)})`);
  });
  try {
    if (format === "raw") await handle.truncate(Number(sizeBytes));
  } finally {
    await handle.close();
  }
  if (format === "raw") return;
  try {
    // Argument array, no shell; the path is absolute (checked by the caller), so qemu-img never reads it as an option or a protocol.
    await run(qemuImg, ["create", "-q", "-f", "qcow2", path, String(sizeBytes)], { timeout: 60_000 });
  } catch (err) {
    await rm(path, { force: true });
    throw new QuantixError("internal", `qemu-img could not create the copy of a qcow2 disk: ${(err as { stderr?: string }).stderr?.trim() || String(err)}`);
  }
}
