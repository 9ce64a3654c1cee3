import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readdir, readFile, readlink, rename, rm, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { create } from "@bufbuild/protobuf";
import { VmConfigSchema, type VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";
import { buildTestGuest, ensureDebianPackages, GUEST_MARKER, until, type TestGuest } from "@quantix/testing";
import { VmManager } from "../../vm-manager.js";
import { QemuBackend } from "./qemu-backend.js";
import { vmPaths } from "./qemu-vm-dir.js";

/**
 * The agent checks a VM's files against its image directories, then QEMU uses them: a
 * file swapped for a symlink to a secret in between must not reach the guest. Real QEMU
 * (TCG) with the test guest; the secrets are an initrd that would announce itself on the
 * console and a disk of known bytes, both outside the image directory.
 */

const run = promisify(execFile);
const BOOT_MS = 90_000;
const SECRET_MARKER = "QUANTIX-SECRET-INITRD-BOOTED";
const CHECKED_DISK = "CHECKED-DISK-BYTES-0123456789abc";
const SECRET_DISK = "SECRET-DISK-BYTES-0123456789abcd";

let guest: TestGuest;
let root: string;
let images: string;
let secrets: string;

before(async () => {
  await ensureDebianPackages(["qemu-system-x86", "busybox-static", "cpio"]);
  guest = await buildTestGuest();
  root = await mkdtemp(path.join(os.tmpdir(), "quantix-host-files-"));
  images = path.join(root, "images");
  secrets = path.join(root, "secrets");
  await mkdir(images);
  await mkdir(secrets);
  await copyFile(guest.kernelPath, path.join(images, "vmlinuz"));
  await writeFile(path.join(secrets, "disk.img"), Buffer.concat([Buffer.from(SECRET_DISK), Buffer.alloc(1 << 20)]));
  await packSecretInitrd(path.join(secrets, "initrd.cpio"));
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A valid initramfs that only prints SECRET_MARKER: a guest that boots it shows QEMU opened the secret. */
async function packSecretInitrd(out: string): Promise<void> {
  const tree = path.join(root, "secret-tree");
  await mkdir(path.join(tree, "bin"), { recursive: true });
  await mkdir(path.join(tree, "dev"));
  await copyFile("/bin/busybox", path.join(tree, "bin", "busybox"));
  await writeFile(path.join(tree, "init"), `#!/bin/busybox sh\n/bin/busybox mount -t devtmpfs dev /dev\nexec 1>/dev/console\necho ${SECRET_MARKER}\nwhile true; do /bin/busybox sleep 1; done\n`, { mode: 0o755 });
  await run("sh", ["-c", 'cd "$1" && find . | cpio -o -H newc --quiet > "$2"', "sh", tree, out]);
}

/** A fresh VM directory in the image dir: the checked initrd and a disk of known bytes. */
async function vmFiles(name: string): Promise<{ dir: string; config: VmConfig }> {
  const dir = path.join(images, name);
  await mkdir(dir);
  await copyFile(guest.initrdPath, path.join(dir, "initrd.gz"));
  await writeFile(path.join(dir, "disk.img"), Buffer.concat([Buffer.from(CHECKED_DISK), Buffer.alloc(1 << 20)]));
  const config = create(VmConfigSchema, {
    cpu: { vcpuCount: 1 },
    memory: { sizeBytes: 192n * 1048576n },
    boot: { kernelPath: path.join(images, "vmlinuz"), initrdPath: path.join(dir, "initrd.gz"), kernelArgs: guest.kernelArgs },
    storage: [{ id: "data", path: path.join(dir, "disk.img") }],
  });
  return { dir, config };
}

/** Puts a symlink to `secret` where `file` was (the checked file itself moves aside, still open if it was). */
async function swapForSymlink(file: string, secret: string): Promise<void> {
  await rename(file, `${file}.moved`);
  await symlink(secret, file);
}

const consoleText = async (b: QemuBackend, vmId: string) => new TextDecoder().decode(await b.consoleTail(vmId, 1 << 20));

test("a file swapped for a symlink to a secret after CreateVm checked it: BootVm refuses it and QEMU never opens the secret", { timeout: 180_000 }, async () => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), "quantix-host-files-state-"));
  const backend = new QemuBackend({ stateDir, kvm: false, imageDirs: [images] });
  const manager = new VmManager({ backend, imageDirs: [images] });
  await manager.start();
  const vmId = `swap-before-${process.pid}`;
  try {
    const { dir, config } = await vmFiles("before");
    await manager.create(vmId, config);
    await swapForSymlink(path.join(dir, "initrd.gz"), path.join(secrets, "initrd.cpio"));
    const err = await manager.boot(vmId).then(() => undefined, (e: unknown) => e);
    if (err === undefined) {
      // The guest's console tells what QEMU loaded.
      await until(async () => ((await consoleText(backend, vmId)).match(new RegExp(`${SECRET_MARKER}|${GUEST_MARKER}`)) ? true : undefined), "a boot marker", BOOT_MS, 200).catch(() => undefined);
      assert.fail(`BootVm started QEMU on the swapped name; console: ${(await consoleText(backend, vmId)).slice(-200)}`);
    }
    assert.ok(err instanceof QuantixError, String(err));
    assert.equal(err.code, "failed_precondition");
    assert.match(err.message, /boot\.initrd_path .*initrd\.gz is not a file under an image directory/);
    assert.notEqual((await backend.getVMInfo(vmId)).state, "running");
  } finally {
    await manager.delete(vmId, true).catch(() => undefined);
    manager.close();
    await backend.close();
    await rm(stateDir, { recursive: true, force: true });
  }
});

test("files swapped for symlinks after the agent opened and checked them: the guest gets the checked initrd and disk, not the secrets", { timeout: 240_000 }, async () => {
  const stateDir = await mkdtemp(path.join(os.tmpdir(), "quantix-host-files-state-"));
  const { dir, config } = await vmFiles("after");
  let swapped = false;
  const backend = new QemuBackend({
    stateDir,
    kvm: false,
    imageDirs: [images],
    // Between the agent's check and QEMU's start: the names now lead to the secrets.
    beforeSpawn: async () => {
      await swapForSymlink(path.join(dir, "initrd.gz"), path.join(secrets, "initrd.cpio"));
      await swapForSymlink(path.join(dir, "disk.img"), path.join(secrets, "disk.img"));
      swapped = true;
    },
  });
  const vmId = `swap-after-${process.pid}`;
  try {
    await backend.createVM(vmId, config);
    await backend.bootVM(vmId);
    assert.ok(swapped, "the files were swapped between the check and QEMU's start");
    await until(async () => ((await consoleText(backend, vmId)).match(new RegExp(`${SECRET_MARKER}|${GUEST_MARKER}`)) ? true : undefined), "a boot marker", BOOT_MS, 200);
    const text = await consoleText(backend, vmId);
    assert.ok(text.includes(GUEST_MARKER), "the guest booted the checked initrd");
    assert.ok(!text.includes(SECRET_MARKER), "the secret initrd never ran");
    // What QEMU holds open: the checked disk (moved aside, the same file), nothing of the secrets.
    const pid = (await backend.getVMInfo(vmId)).pid!;
    const open = await Promise.all((await readdir(`/proc/${pid}/fd`)).map((fd) => readlink(`/proc/${pid}/fd/${fd}`).catch(() => "")));
    assert.ok(open.includes(path.join(dir, "disk.img.moved")), `QEMU has the checked disk open: ${open.join(", ")}`);
    assert.deepEqual(open.filter((f) => f.startsWith(secrets)), [], "QEMU opened no secret");
    // And the guest's disk reads the checked bytes, through QEMU's own block layer (qemu-io prints to QEMU's log).
    await backend.executeQmp(vmId, "human-monitor-command", { "command-line": 'qemu-io disk0 "read -v 0 32"' });
    const log = await until(async () => {
      const text = await readFile(vmPaths(stateDir, vmId).logFile, "utf8");
      return text.includes("read 32/32 bytes") ? text : undefined;
    }, "qemu-io's answer in QEMU's log", 10_000);
    // Its dump: "00000000:  43 48 45 ...  CHECKED.DISK.BYT", 16 bytes a line.
    const hex = log.split("\n").flatMap((l) => (/^[0-9a-f]{8}:((?:\s+[0-9a-f]{2}){1,16})/.exec(l)?.[1] ?? "").trim().split(/\s+/).filter(Boolean));
    assert.equal(Buffer.from(hex.join(""), "hex").toString(), CHECKED_DISK, `the disk has the checked bytes: ${log}`);
    await backend.shutdownVM(vmId, { force: true, timeoutSeconds: 1 });
  } finally {
    await backend.deleteVM(vmId).catch(() => undefined);
    await backend.close();
    await rm(stateDir, { recursive: true, force: true });
  }
});

test("two VMs on linked clones of one base volume run at once: each writes its own overlay, the base is shared read-only and unchanged", { timeout: 180_000 }, async () => {
  await ensureDebianPackages(["qemu-utils"]);
  const stateDir = await mkdtemp(path.join(os.tmpdir(), "quantix-host-files-state-"));
  // A pool directory as the agent's StorageService lays it out: <volume id>.<format>, clones naming their base by that bare name.
  const pool = path.join(images, "pool-11111111-1111-4111-8111-111111111111");
  await mkdir(pool);
  const base = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
  const clones = ["bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb", "cccccccc-cccc-4ccc-8ccc-cccccccccccc"];
  await writeFile(path.join(pool, `${base}.raw`), Buffer.concat([Buffer.from(CHECKED_DISK), Buffer.alloc(1 << 20)]));
  for (const c of clones) await run("qemu-img", ["create", "-q", "-f", "qcow2", "-b", `${base}.raw`, "-F", "raw", path.join(pool, `${c}.qcow2`)]);
  const backend = new QemuBackend({ stateDir, kvm: false, imageDirs: [images] });
  const vmIds = clones.map((_, i) => `linked-${i}-${process.pid}`);
  // No kernel: SeaBIOS finds no bootable disk and idles; QEMU's block layer is what is tested.
  const configOf = (clone: string) => create(VmConfigSchema, { cpu: { vcpuCount: 1 }, memory: { sizeBytes: 64n * 1048576n }, storage: [{ id: "root", path: path.join(pool, `${clone}.qcow2`) }] });
  /** The first 32 bytes of the VM's disk as its QEMU reads them (qemu-io through HMP prints into QEMU's log). */
  const firstBytes = async (vmId: string, nth: number): Promise<string> => {
    await backend.executeQmp(vmId, "human-monitor-command", { "command-line": 'qemu-io disk0 "read -v 0 32"' });
    const log = await until(async () => {
      const text = await readFile(vmPaths(stateDir, vmId).logFile, "utf8");
      return text.split("read 32/32 bytes").length > nth ? text : undefined;
    }, "qemu-io's answer in QEMU's log", 10_000);
    const dumps = log.split("read 32/32 bytes")[nth - 1]!;
    const hex = dumps.split("\n").flatMap((l) => (/^[0-9a-f]{8}:((?:\s+[0-9a-f]{2}){1,16})/.exec(l)?.[1] ?? "").trim().split(/\s+/).filter(Boolean));
    return Buffer.from(hex.slice(-32).join(""), "hex").toString("latin1");
  };
  try {
    for (const [i, vmId] of vmIds.entries()) {
      await backend.createVM(vmId, configOf(clones[i]!));
      await backend.bootVM(vmId);
    }
    for (const vmId of vmIds) assert.equal((await backend.getVMInfo(vmId)).state, "running", "both VMs run: the base's lock is shared");
    assert.equal(await firstBytes(vmIds[0]!, 1), CHECKED_DISK, "a clone reads its base's bytes");
    // Through the guest's device (-d: its QOM path), which holds the disk's write permission.
    const wrote = await backend.executeQmp(vmIds[0]!, "human-monitor-command", { "command-line": 'qemu-io -d /machine/peripheral/disk0-dev/virtio-backend "write -P 0x41 0 512"' });
    assert.equal(wrote, "", `qemu-io wrote without an error: ${JSON.stringify(wrote)}`);
    assert.equal(await firstBytes(vmIds[0]!, 2), "A".repeat(32), "the write went to this VM's overlay");
    assert.equal(await firstBytes(vmIds[1]!, 1), CHECKED_DISK, "the other clone still reads the base");
    const pid = (await backend.getVMInfo(vmIds[0]!)).pid!;
    const fds = await readdir(`/proc/${pid}/fd`);
    const open = await Promise.all(fds.map(async (fd) => [await readlink(`/proc/${pid}/fd/${fd}`).catch(() => ""), (await readFile(`/proc/${pid}/fdinfo/${fd}`, "utf8").catch(() => "")).match(/flags:\s+(\d+)/)?.[1] ?? ""] as const));
    const baseFd = open.find(([f]) => f === path.join(pool, `${base}.raw`));
    assert.ok(baseFd, `QEMU holds the base open: ${open.map(([f]) => f).join(", ")}`);
    assert.equal(Number.parseInt(baseFd[1], 8) & 3, 0, "the base is open read-only (O_RDONLY)");
  } finally {
    for (const vmId of vmIds) await backend.deleteVM(vmId).catch(() => undefined);
    await backend.close();
    await rm(stateDir, { recursive: true, force: true });
  }
  const bytes = await readFile(path.join(pool, `${base}.raw`));
  assert.equal(bytes.subarray(0, CHECKED_DISK.length).toString(), CHECKED_DISK, "the base file is unchanged");
});
