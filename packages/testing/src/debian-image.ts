import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import { DEBIAN_IMAGE_RECIPE as RECIPE, extlinuxConfig, KERNEL_ARGS, recipeHash } from "./debian-image-recipe.js";
import { ensureDebianPackages } from "./guest.js";
import { cachedEntry, imageCacheRoot } from "./image-cache.js";

/**
 * The journey's real OS image: a minimal Debian (bookworm) with the cloud kernel,
 * systemd and cloud-init, made by Debian's own tools (mmdebstrap, mkfs.ext4, extlinux,
 * sfdisk, qemu-img) and cached per machine (image-cache.ts). A whole bootable disk, as a
 * user imports one: an MBR with syslinux's boot code, one ext4 partition with extlinux,
 * the kernel and an initramfs that finds the root by its label; then compressed qcow2.
 * The kernel and initrd are also kept beside it, for a direct kernel boot.
 */

const run = promisify(execFile);

/** A built image. */
export interface DebianCloudImage {
  /** The compressed qcow2 disk; never write to it (make a linked clone or a copy). */
  readonly path: string;
  readonly format: "qcow2";
  /** The kernel and initrd of the image, for a direct kernel boot with {@link kernelArgs}. */
  readonly kernel: string;
  readonly initrd: string;
  readonly kernelArgs: string;
  /** The kernel's release, e.g. 6.1.0-28-cloud-amd64. */
  readonly kernelRelease: string;
  /** sha256 of the qcow2 file, hex. */
  readonly sha256: string;
  /** The qcow2 file's size, and the disk's virtual size. */
  readonly sizeBytes: number;
  readonly virtualSizeBytes: number;
  /** How long the build took (when this process read it from the cache: the build that made it). */
  readonly buildMs: number;
}

/** The tools the build runs, by Debian package. */
const BUILD_PACKAGES = ["mmdebstrap", "e2fsprogs", "fdisk", "extlinux", "syslinux-common", "qemu-utils", "mount"];
/** syslinux's MBR boot code (syslinux-common): boots the partition marked active. */
const MBR_BIN = "/usr/lib/syslinux/mbr/mbr.bin";
const MIB = 1024 * 1024;

/** The image, built first when this machine's cache does not hold it (progress on stderr). */
export async function debianCloudImage(options: { cacheRoot?: string; log?: (line: string) => void } = {}): Promise<DebianCloudImage> {
  const log = options.log ?? ((line: string) => process.stderr.write(`debian-image: ${line}\n`));
  const dir = await cachedEntry(options.cacheRoot ?? imageCacheRoot(), `debian-${RECIPE.suite}-${recipeHash()}`, (d) => buildImage(d, log), { log });
  const manifest = JSON.parse(await readFile(path.join(dir, "manifest.json"), "utf8")) as Omit<DebianCloudImage, "path" | "kernel" | "initrd" | "format">;
  return { ...manifest, format: "qcow2", path: path.join(dir, "disk.qcow2"), kernel: path.join(dir, "vmlinuz"), initrd: path.join(dir, "initrd.img") };
}

async function buildImage(dir: string, log: (line: string) => void): Promise<void> {
  const started = Date.now();
  const step = (what: string) => log(`${what} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
  if (process.getuid?.() !== 0) throw new Error("building the Debian test image needs root (mmdebstrap's root mode, losetup and mount for extlinux): run `npm run image:debian` as root once, with QUANTIX_IMAGE_CACHE set to a directory the tests can read and given to them too");
  await ensureDebianPackages(BUILD_PACKAGES);
  const work = path.join(dir, "work");
  const root = path.join(work, "root");
  await mkdir(work);
  step(`mmdebstrap ${RECIPE.suite} into ${root}`);
  await runLogged("mmdebstrap", ["--variant=minbase", `--include=${RECIPE.packages.join(",")}`, RECIPE.suite, root, ...RECIPE.mirrors], log);
  step("configuring the root filesystem");
  const release = await customize(root);
  await copyFile(path.join(root, "boot", `vmlinuz-${release}`), path.join(dir, "vmlinuz"));
  await copyFile(path.join(root, "boot", `initrd.img-${release}`), path.join(dir, "initrd.img"));
  const part = path.join(work, "root.ext4");
  step("mkfs.ext4 from the tree");
  // No 64bit feature: extlinux cannot boot from an ext4 with it.
  await run("mkfs.ext4", ["-q", "-F", "-L", "quantix-root", "-O", "^64bit", "-d", root, part, `${RECIPE.diskMib - 1}M`]);
  await rm(root, { recursive: true, force: true });
  step("installing extlinux");
  await installExtlinux(part, work);
  step("partitioning the disk");
  const raw = path.join(work, "disk.raw");
  await run("truncate", ["-s", `${RECIPE.diskMib}M`, raw]);
  await runWithInput("sfdisk", ["--quiet", raw], "label: dos\nstart=2048, type=83, bootable\n");
  await run("dd", [`if=${MBR_BIN}`, `of=${raw}`, "bs=440", "count=1", "conv=notrunc", "status=none"]);
  await run("dd", [`if=${part}`, `of=${raw}`, `bs=${MIB}`, "seek=1", "conv=notrunc,sparse", "status=none"]);
  await rm(part);
  step("qemu-img convert to compressed qcow2");
  const qcow2 = path.join(dir, "disk.qcow2");
  await run("qemu-img", ["convert", "-c", "-f", "raw", "-O", "qcow2", raw, qcow2]);
  await rm(work, { recursive: true, force: true });
  const manifest = {
    kernelArgs: KERNEL_ARGS,
    sha256: await sha256(qcow2),
    sizeBytes: (await stat(qcow2)).size,
    virtualSizeBytes: RECIPE.diskMib * MIB,
    buildMs: Date.now() - started,
    kernelRelease: release,
  };
  await writeFile(path.join(dir, "manifest.json"), JSON.stringify(manifest, null, 2) + "\n");
  step(`built ${qcow2}: ${(manifest.sizeBytes / MIB).toFixed(0)} MiB`);
}

/** Writes the recipe's files, masks its units, drops apt's caches, writes extlinux.conf; returns the kernel release. */
async function customize(root: string): Promise<string> {
  for (const [rel, content] of Object.entries(RECIPE.files)) {
    const file = path.join(root, rel);
    await mkdir(path.dirname(file), { recursive: true });
    await rm(file, { force: true });
    await writeFile(file, content);
  }
  for (const unit of RECIPE.masked) {
    const link = path.join(root, "etc/systemd/system", unit);
    await rm(link, { force: true });
    await symlink("/dev/null", link);
  }
  for (const d of ["var/lib/apt/lists", "var/cache/apt"]) {
    for (const e of await readdir(path.join(root, d), { withFileTypes: true })) if (e.isFile()) await rm(path.join(root, d, e.name));
  }
  const kernels = (await readdir(path.join(root, "boot"))).filter((f) => f.startsWith("vmlinuz-"));
  if (kernels.length !== 1) throw new Error(`expected one kernel in ${root}/boot, found ${kernels.length}`);
  const release = kernels[0]!.slice("vmlinuz-".length);
  await mkdir(path.join(root, "boot/extlinux"), { recursive: true });
  await writeFile(path.join(root, "boot/extlinux/extlinux.conf"), extlinuxConfig(release));
  return release;
}

/**
 * Installs extlinux's boot sector and ldlinux.sys into the ext4 image `part`: extlinux
 * works on a mounted file system, so the image is mounted on a loop device for that
 * moment; both are undone whatever happens.
 */
async function installExtlinux(part: string, work: string): Promise<void> {
  const mnt = await mkdtemp(path.join(work, "mnt-"));
  const loop = (await run("losetup", ["--find", "--show", part])).stdout.trim();
  try {
    await run("mount", ["-t", "ext4", loop, mnt]);
    try {
      await run("extlinux", ["--install", path.join(mnt, "boot/extlinux")]);
    } finally {
      await run("umount", [mnt]);
    }
  } finally {
    await run("losetup", ["--detach", loop]);
    await rm(mnt, { recursive: true, force: true });
  }
}

/** Runs a long command, passing its output to `log` line by line. */
function runLogged(cmd: string, args: readonly string[], log: (line: string) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ["ignore", "pipe", "pipe"] });
    let tail: string[] = [];
    const onData = (chunk: Buffer) => {
      for (const line of chunk.toString().split(/\r?\n/)) {
        if (line.trim() === "") continue;
        tail = [...tail.slice(-19), line];
        if (line.startsWith("I: ") || line.startsWith("E: ") || line.startsWith("W: ")) log(`${cmd}: ${line}`);
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("error", reject);
    child.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} exited with ${code}:\n${tail.join("\n")}`))));
  });
}

function runWithInput(cmd: string, args: readonly string[], input: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile(cmd, args, (err) => (err ? reject(err) : resolve()));
    child.stdin?.end(input);
  });
}

async function sha256(file: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}
