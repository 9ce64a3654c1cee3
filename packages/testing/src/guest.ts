import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createWriteStream, existsSync } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp, readdir, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { pipeline } from "node:stream/promises";
import { promisify } from "node:util";
import { createGzip } from "node:zlib";

/**
 * A tiny bootable test guest: Debian's kernel plus a busybox initramfs that prints a
 * marker, then a counter line five times a second, and powers off on the ACPI power
 * button (QMP system_powerdown). Built once per machine and cached under os.tmpdir().
 */

const run = promisify(execFile);

/** The line the guest prints on its serial console once userspace runs. */
export const GUEST_MARKER = "QUANTIX-GUEST-BOOTED";
/** The prefix of the counter lines the guest prints forever after the marker. */
export const GUEST_TICK = "quantix-tick";

/**
 * A kernel argument that turns the guest into a shell guest: after the marker it runs an
 * interactive busybox sh on the serial console (respawned when it exits) instead of the
 * counter lines, so a test can type commands and read their answers.
 */
export const GUEST_SHELL_ARG = "quantix.shell";
/** The shell guest's prompt. */
export const GUEST_SHELL_PROMPT = "quantix-sh# ";

/** Paths of a built test guest. */
export interface TestGuest {
  readonly kernelPath: string;
  readonly initrdPath: string;
  /** Printed once on ttyS0 when the init starts. */
  readonly marker: string;
  /** A kernel command line that sends the console to ttyS0 and keeps boot quick. */
  readonly kernelArgs: string;
  /** The cache directory holding the kernel and initrd: an agent's VMCP_IMAGE_DIRS must include it. */
  readonly imageDir: string;
}

// The Debian kernel has evdev and the ACPI button as modules: without them the power
// button never reaches userspace. devtmpfs is mounted first because the initramfs has
// no /dev/console node (building one would need mknod on the host). acpid stays in the
// foreground (-f -d, backgrounded by the shell) because, daemonised, it exits at once
// here (it wants a log file and syslog this initramfs does not have). The marker is
// printed once acpid holds an input event device open (at most 10 s later), so a power
// button pressed after the marker is never lost to a loaded machine's slow start. With
// GUEST_SHELL_ARG on the kernel command line, a shell follows the marker: setsid makes it
// a session leader (a script's child is no process group leader, so setsid does not
// fork) and cttyhack opens the real console (ttyS0) as its controlling terminal.
const INIT_SCRIPT = `#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
exec 0</dev/console 1>/dev/console 2>&1
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
insmod /lib/modules/evdev.ko
insmod /lib/modules/button.ko
acpid -f -d -c /etc/acpi &
n=0
while [ $n -lt 200 ] && ! ls -l /proc/$!/fd 2>/dev/null | grep -q /dev/input/event; do n=$((n+1)); usleep 50000; done
echo ${GUEST_MARKER}
if grep -qw ${GUEST_SHELL_ARG} /proc/cmdline; then
  export PS1='${GUEST_SHELL_PROMPT}'
  while true; do setsid cttyhack sh; done
fi
i=0
while true; do i=$((i+1)); echo "${GUEST_TICK} $i"; usleep 200000; done
`;

// busybox acpid maps the power button key to the action file PWRF/00000080.
const POWER_SCRIPT = "#!/bin/sh\necho quantix-guest-powering-off\npoweroff -f\n";

const MODULES = ["kernel/drivers/input/evdev.ko", "kernel/drivers/acpi/button.ko"];

/** Builds (or reuses from the cache) the test guest. */
export async function buildTestGuest(): Promise<TestGuest> {
  await ensureDebianPackages(["busybox-static", "cpio"]);
  const cache = path.join(os.tmpdir(), "quantix-test-guest");
  await mkdir(cache, { recursive: true });
  const kernelPkg = await kernelPackage();
  const kernelDir = await cached(cache, `kernel-${kernelPkg}`, (dir) => extractKernel(kernelPkg, dir));
  const hash = createHash("sha256").update(INIT_SCRIPT).update(POWER_SCRIPT).digest("hex").slice(0, 16);
  const guestDir = await cached(cache, `initrd-${kernelPkg}-${hash}`, (dir) => packInitrd(kernelDir, dir));
  return {
    kernelPath: path.join(kernelDir, "vmlinuz"),
    initrdPath: path.join(guestDir, "initrd.gz"),
    marker: GUEST_MARKER,
    kernelArgs: "console=ttyS0 panic=-1 quiet",
    imageDir: cache,
  };
}

/**
 * Makes sure the Debian packages are installed: installs the missing ones with apt-get
 * when running as root or with CI=true, and fails naming them otherwise.
 */
export async function ensureDebianPackages(packages: readonly string[]): Promise<void> {
  const missing: string[] = [];
  for (const p of packages) {
    const status = await run("dpkg-query", ["-W", "-f=${Status}", p]).then((r) => r.stdout, () => "");
    if (!status.includes("install ok installed")) missing.push(p);
  }
  if (missing.length === 0) return;
  const allowed = process.env["CI"] === "true" || process.getuid?.() === 0;
  if (!allowed) throw new Error(`missing Debian packages: ${missing.join(", ")}; install them with: apt-get install -y --no-install-recommends ${missing.join(" ")}`);
  const install = ["install", "-y", "--no-install-recommends", ...missing];
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  try {
    await run("apt-get", install, { env, maxBuffer: 64 << 20 });
  } catch {
    await run("apt-get", ["update"], { env, maxBuffer: 64 << 20 });
    await run("apt-get", install, { env, maxBuffer: 64 << 20 });
  }
}

/** The versioned kernel image package linux-image-amd64 depends on, e.g. linux-image-6.1.0-56-amd64. */
async function kernelPackage(): Promise<string> {
  const lookup = async (): Promise<string | undefined> => {
    const out = await run("apt-cache", ["depends", "linux-image-amd64"]).then((r) => r.stdout, () => "");
    return /Depends:\s*(linux-image-[0-9][A-Za-z0-9.+-]*)/.exec(out)?.[1];
  };
  let pkg = await lookup();
  if (!pkg) {
    await run("apt-get", ["update"], { maxBuffer: 64 << 20 });
    pkg = await lookup();
  }
  if (!pkg) throw new Error("cannot find the kernel package linux-image-amd64 depends on (apt-cache depends linux-image-amd64)");
  return pkg;
}

/** Downloads the kernel package and keeps only vmlinuz and the modules the init loads. */
async function extractKernel(pkg: string, dir: string): Promise<void> {
  const work = await mkdtemp(path.join(os.tmpdir(), "quantix-kernel-"));
  try {
    // apt-get download drops privileges to _apt, which must be able to write here.
    await chmod(work, 0o777);
    await run("apt-get", ["download", pkg], { cwd: work, maxBuffer: 64 << 20 }).catch(async () => {
      await run("apt-get", ["update"], { maxBuffer: 64 << 20 });
      await run("apt-get", ["download", pkg], { cwd: work, maxBuffer: 64 << 20 });
    });
    const deb = (await readdir(work)).find((f) => f.endsWith(".deb"));
    if (!deb) throw new Error(`apt-get download ${pkg} produced no .deb`);
    const root = path.join(work, "root");
    await run("dpkg-deb", ["-x", path.join(work, deb), root]);
    const vmlinuz = (await readdir(path.join(root, "boot"))).find((f) => f.startsWith("vmlinuz-"));
    if (!vmlinuz) throw new Error(`${pkg} has no boot/vmlinuz-*`);
    await copyFile(path.join(root, "boot", vmlinuz), path.join(dir, "vmlinuz"));
    const [release] = await readdir(path.join(root, "lib", "modules"));
    if (!release) throw new Error(`${pkg} has no lib/modules`);
    for (const m of MODULES) await copyFile(path.join(root, "lib", "modules", release, m), path.join(dir, path.basename(m)));
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** Packs busybox, the init, the ACPI action and the modules into a gzipped newc cpio. */
async function packInitrd(kernelDir: string, dir: string): Promise<void> {
  const tree = path.join(dir, "tree");
  for (const d of ["bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "lib/modules", "etc/acpi/PWRF"]) await mkdir(path.join(tree, d), { recursive: true });
  await copyFile("/bin/busybox", path.join(tree, "bin/busybox"));
  await writeFile(path.join(tree, "init"), INIT_SCRIPT, { mode: 0o755 });
  await writeFile(path.join(tree, "etc/acpi/PWRF/00000080"), POWER_SCRIPT, { mode: 0o755 });
  for (const m of MODULES) await copyFile(path.join(kernelDir, path.basename(m)), path.join(tree, "lib/modules", path.basename(m)));
  const files = await listTree(tree);
  const cpio = spawn("cpio", ["-o", "-H", "newc", "--quiet"], { cwd: tree, stdio: ["pipe", "pipe", "inherit"] });
  const exited = new Promise<void>((resolve, reject) => {
    cpio.on("error", reject);
    cpio.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`cpio exited with ${code}`))));
  });
  cpio.stdin.end(files.join("\n") + "\n");
  await Promise.all([pipeline(cpio.stdout, createGzip(), createWriteStream(path.join(dir, "initrd.gz"))), exited]);
  await rm(tree, { recursive: true, force: true });
}

/** Every path under `root`, relative, parents before children (what cpio wants on stdin). */
async function listTree(root: string, rel = "."): Promise<string[]> {
  const out: string[] = [rel];
  for (const e of await readdir(path.join(root, rel), { withFileTypes: true })) {
    const child = path.join(rel, e.name);
    if (e.isDirectory()) out.push(...(await listTree(root, child)));
    else out.push(child);
  }
  return out;
}

/**
 * Returns `<cache>/<name>`, building it first if absent. Builds into a private temp dir
 * and renames it into place, so concurrent builders never see a half-built entry: the
 * loser of the rename race throws its copy away and uses the winner's.
 */
async function cached(cache: string, name: string, build: (dir: string) => Promise<void>): Promise<string> {
  const final = path.join(cache, name);
  if (existsSync(final)) return final;
  const tmp = await mkdtemp(path.join(cache, `.${name}-`));
  try {
    await chmod(tmp, 0o755);
    await build(tmp);
    await rename(tmp, final).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
    });
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return final;
}
