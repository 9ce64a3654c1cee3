import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readlink, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { create } from "@bufbuild/protobuf";
import { VmConfigSchema, type VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { until, bootSector, BOOT_SECTOR_MARKER, buildTestGuest, ensureDebianPackages, consoleText, guestVmConfig, lastTick, ticksPast, type TestGuest } from "@quantix/testing";
import type { BackendEvent } from "../../backend.js";
import { isProcessAlive } from "../../process-state.js";
import { QemuBackend } from "./qemu-backend.js";

const run = promisify(execFile);
const BOOT_MS = 40_000;
let guest: TestGuest;
let stateDir: string;

before(async () => {
  await ensureDebianPackages(["qemu-system-x86", "qemu-utils", "busybox-static", "cpio", "iproute2"]);
  guest = await buildTestGuest();
  stateDir = await mkdtemp(path.join(os.tmpdir(), "quantix-qemu-test-"));
});

after(async () => {
  await rm(stateDir, { recursive: true, force: true });
});

const guestConfig = (extra: Partial<Pick<VmConfig, "storage" | "network">> = {}): VmConfig => guestVmConfig(guest, 192, extra);

test("a real guest: console, pause/resume, graceful shutdown, SIGKILL, agent restart, delete", { timeout: 180_000 }, async () => {
  let backend = new QemuBackend({ stateDir, kvm: false });
  const events: BackendEvent[] = [];
  backend.onEvent((e) => events.push(e));
  const vmId = `life-${process.pid}`;
  try {
    await backend.ping();
    assert.match(await backend.version(), /^QEMU emulator version \d+\.\d+/);
    await backend.createVM(vmId, guestConfig());
    await backend.bootVM(vmId);
    await until(async () => ((await consoleText(backend, vmId)).includes(guest.marker) ? true : undefined), "the boot marker", BOOT_MS, 100);
    await ticksPast(backend, vmId, 2, "counter lines", BOOT_MS);

    await backend.pauseVM(vmId);
    assert.equal((await backend.getVMInfo(vmId)).state, "paused");
    const frozen = await lastTick(backend, vmId);
    // The guest prints 5 lines a second; over 1.5 s paused it must print none.
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(await lastTick(backend, vmId), frozen, "no output while paused");
    await backend.resumeVM(vmId);
    await ticksPast(backend, vmId, frozen, "output after resume", BOOT_MS);

    const started = Date.now();
    await backend.shutdownVM(vmId, { force: false, timeoutSeconds: 30 });
    assert.ok(Date.now() - started < 20_000, "the guest powered off before the timeout");
    assert.match(await consoleText(backend, vmId), /quantix-guest-powering-off/, "the guest itself handled the power button");
    assert.equal((await backend.getVMInfo(vmId)).state, "shutdown");

    await backend.bootVM(vmId);
    const pid = (await backend.getVMInfo(vmId)).pid;
    assert.ok(pid);
    process.kill(pid, "SIGKILL");
    const crashed = await until(() => events.find((e) => e.state === "crashed"), "a crashed event", 5000);
    assert.match(crashed.reason ?? "", /SIGKILL/);
    const info = await backend.getVMInfo(vmId);
    assert.equal(info.state, "crashed");
    assert.equal(info.pid, undefined);

    await backend.bootVM(vmId);
    const before = await backend.getVMInfo(vmId);
    await ticksPast(backend, vmId, 0, "counter lines after the reboot", BOOT_MS);
    await backend.close();
    assert.ok(before.pid && isProcessAlive(before.pid), "close() leaves QEMU running");

    backend = new QemuBackend({ stateDir, kvm: false });
    assert.deepEqual(await backend.recover(), [vmId]);
    const adopted = await backend.getVMInfo(vmId);
    assert.equal(adopted.state, "running");
    assert.equal(adopted.pid, before.pid);
    await ticksPast(backend, vmId, 0, "console output after re-adoption", BOOT_MS);

    await backend.shutdownVM(vmId, { force: true, timeoutSeconds: 1 });
    await backend.deleteVM(vmId);
    assert.equal(isProcessAlive(before.pid), false);
    assert.equal(existsSync(path.join(stateDir, "vms", vmId)), false);
    await assert.rejects(backend.getVMInfo(vmId), /not found/);
  } finally {
    await forceCleanup(backend, vmId);
  }
});

test("firmware boot: SeaBIOS boots a disk image (the root device) without a kernel", { timeout: 60_000 }, async () => {
  const backend = new QemuBackend({ stateDir, kvm: false });
  const vmId = `bios-${process.pid}`;
  const image = path.join(stateDir, "boot-sector.raw");
  // A whole 1 MiB disk whose first sector is the boot sector.
  await writeFile(image, Buffer.concat([bootSector(), Buffer.alloc(1024 * 1024 - 512)]));
  try {
    const config = create(VmConfigSchema, {
      cpu: { vcpuCount: 1 },
      memory: { sizeBytes: 128n * 1048576n },
      storage: [{ id: "root", path: image, isRootDevice: true }],
    });
    await backend.createVM(vmId, config);
    await backend.bootVM(vmId);
    await until(async () => ((await consoleText(backend, vmId)).includes(BOOT_SECTOR_MARKER) ? true : undefined), "the boot sector's marker on the serial console", BOOT_MS, 100);
    await backend.shutdownVM(vmId, { force: true, timeoutSeconds: 0 });
    await backend.deleteVM(vmId);
  } finally {
    await backend.close();
  }
});

test("disk paths with ',' and '=' open exactly that file, qcow2 is detected, the NIC is on its TAP", { timeout: 120_000, skip: process.getuid?.() !== 0 ? "creating a TAP device needs root" : false }, async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "quantix-qemu-disks-"));
  const evil = path.join(dir, "x,readonly=on,file=/etc/passwd");
  const qcow = path.join(dir, "data.qcow2");
  const tap = `qt${process.pid % 1_000_000}`;
  const backend = new QemuBackend({ stateDir, kvm: false });
  const vmId = `disks-${process.pid}`;
  try {
    // The name's "/etc/passwd" part is a directory inside `dir`: the file is ours.
    await mkdir(path.dirname(evil), { recursive: true });
    await writeFile(evil, new Uint8Array(1 << 20));
    await run("qemu-img", ["create", "-q", "-f", "qcow2", qcow, "16M"]);
    await run("ip", ["tuntap", "add", tap, "mode", "tap"]);
    // A root disk beside direct kernel boot: QEMU must start (no clashing bootindex).
    await backend.createVM(vmId, guestConfig({
      storage: create(VmConfigSchema, { storage: [{ id: "evil", path: evil, isRootDevice: true }, { id: "data", path: qcow, readOnly: true }] }).storage,
      network: create(VmConfigSchema, { network: [{ id: "eth0", macAddress: "52:54:00:12:34:56", tapDevice: tap }] }).network,
    }));
    await backend.bootVM(vmId);
    const blocks = await backend.executeQmp<{ inserted?: { file: string; drv: string; ro: boolean } }[]>(vmId, "query-block");
    const inserted = blocks.map((b) => b.inserted).filter((i) => i !== undefined);
    assert.deepEqual(inserted.map((i) => [i.file, i.drv, i.ro]), [["/dev/fdset/1", "raw", false], ["/dev/fdset/2", "qcow2", true]]);
    // QEMU was handed the files the agent opened (host-files.ts): each fd set's descriptor is exactly that file.
    const pid = (await backend.getVMInfo(vmId)).pid!;
    const sets = await backend.executeQmp<{ "fdset-id": number; fds: { fd: number }[] }[]>(vmId, "query-fdsets");
    const fileOf = (id: number) => readlink(`/proc/${pid}/fd/${sets.find((s) => s["fdset-id"] === id)?.fds[0]?.fd ?? -1}`);
    assert.deepEqual([await fileOf(1), await fileOf(2)], [evil, qcow]);
    const network = await backend.executeQmp<string>(vmId, "human-monitor-command", { "command-line": "info network" });
    assert.match(network, new RegExp(`type=tap,ifname=${tap},`));
    assert.match(network, /macaddr=52:54:00:12:34:56/);
    await backend.shutdownVM(vmId, { force: true, timeoutSeconds: 1 });
    await backend.deleteVM(vmId);
  } finally {
    await forceCleanup(backend, vmId);
    await run("ip", ["link", "del", tap]).catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }
});

/** Kills whatever a failed test left running and forgets the VM. */
async function forceCleanup(backend: QemuBackend, vmId: string): Promise<void> {
  const info = await backend.getVMInfo(vmId).catch(() => undefined);
  if (info?.pid) process.kill(info.pid, "SIGKILL");
  await backend.close();
  await rm(path.join(stateDir, "vms", vmId), { recursive: true, force: true });
}

test("a QEMU that exits at start leaves the VM's record as it was: a restarted agent finds it created, not crashed", { timeout: 60_000 }, async () => {
  // The record says "running" while QEMU initialises (saved alongside it): a QEMU that fails must put it back.
  const failing = path.join(stateDir, "qemu-that-fails.sh");
  await writeFile(failing, "#!/bin/sh\necho 'qemu-that-fails: cannot open the test disk' >&2\nexit 1\n", { mode: 0o755 });
  const vmId = `fails-${process.pid}`;
  const backend = new QemuBackend({ stateDir, kvm: false, binary: failing });
  try {
    await backend.createVM(vmId, guestConfig());
    await assert.rejects(backend.bootVM(vmId), /QEMU exited at start \(code 1\): qemu-that-fails: cannot open the test disk/);
    assert.equal((await backend.getVMInfo(vmId)).state, "created");
    await backend.close();
    const again = new QemuBackend({ stateDir, kvm: false, binary: failing });
    assert.deepEqual(await again.recover(), [vmId]);
    assert.equal((await again.getVMInfo(vmId)).state, "created", "the record on disk was put back");
    await again.deleteVM(vmId);
    await again.close();
  } finally {
    await backend.close().catch(() => {});
  }
});
