import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, rm, stat, truncate } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import type { VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";
import { until, buildTestGuest, ensureDebianPackages, consoleText, guestTicks, guestVmConfig, lastTick, ticksPast, type TestGuest } from "@quantix/testing";
import { isProcessAlive } from "../../process-state.js";
import { QemuBackend } from "./qemu-backend.js";

// Hibernation on a real TCG guest: the busybox test guest prints a counter 5 times a
// second from boot; a guest restored from its saved memory continues the count where it
// stopped, a rebooted one starts again at 1.
const BOOT_MS = 40_000;
let guest: TestGuest;
let stateDir: string;

before(async () => {
  await ensureDebianPackages(["qemu-system-x86", "qemu-utils", "busybox-static", "cpio"]);
  guest = await buildTestGuest();
  stateDir = await mkdtemp(path.join(os.tmpdir(), "quantix-ci-suspend-"));
});

after(async () => {
  await rm(stateDir, { recursive: true, force: true });
});

const guestConfig = (extra: Partial<VmConfig> = {}): VmConfig => guestVmConfig(guest, 128, extra);

test("suspend saves the guest to a file and ends QEMU; after an agent restart, resume continues the guest where it was", { timeout: 240_000 }, async () => {
  let backend = new QemuBackend({ stateDir, kvm: false });
  const vmId = `hib-${process.pid}`;
  const paths = { dir: path.join(stateDir, "vms", vmId), state: path.join(stateDir, "vms", vmId, "suspend.state") };
  try {
    assert.ok(backend.capabilities.has("suspend"));
    await backend.createVM(vmId, guestConfig());
    await backend.bootVM(vmId);
    await ticksPast(backend, vmId, 5, "counter lines", BOOT_MS);
    const pid = (await backend.getVMInfo(vmId)).pid!;

    await backend.suspendVM(vmId);
    const saved = await lastTick(backend, vmId);
    const suspended = await backend.getVMInfo(vmId);
    assert.equal(suspended.state, "suspended");
    assert.equal(suspended.pid, undefined);
    assert.equal(isProcessAlive(pid), false, "QEMU has ended");
    assert.ok(existsSync(paths.state), "the saved memory is in the VM's directory");
    assert.deepEqual((await readdir(paths.dir)).filter((n) => n.includes(".tmp") || n.endsWith(".sock")), [], "no partial file or socket left");

    // The agent restarts while the VM is suspended: the state is found again.
    await backend.close();
    backend = new QemuBackend({ stateDir, kvm: false });
    assert.deepEqual(await backend.recover(), [vmId]);
    assert.equal((await backend.getVMInfo(vmId)).state, "suspended");

    await backend.resumeVM(vmId);
    assert.equal((await backend.getVMInfo(vmId)).state, "running");
    await ticksPast(backend, vmId, saved + 3, "the counter continuing past the saved value", BOOT_MS);
    const after = await guestTicks(backend, vmId);
    assert.ok(after.length > 0 && after[0]! > saved - 2, `the guest continued (first tick after resume ${after[0]}, saved at ${saved}), not rebooted`);
    assert.ok(!(await consoleText(backend, vmId)).includes(guest.marker), "no boot marker: the guest did not boot again");
    assert.equal(existsSync(paths.state), false, "the saved file is removed after the restore");

    // Paused, suspended, then ShutdownVm discards the saved memory; the next boot is cold.
    await backend.pauseVM(vmId);
    await backend.suspendVM(vmId);
    assert.equal((await backend.getVMInfo(vmId)).state, "suspended");
    await backend.shutdownVM(vmId, { force: false, timeoutSeconds: 1 });
    assert.equal((await backend.getVMInfo(vmId)).state, "shutdown");
    assert.equal(existsSync(paths.state), false, "ShutdownVm discards the saved memory");
    await backend.bootVM(vmId);
    await until(async () => ((await consoleText(backend, vmId)).includes(guest.marker) ? true : undefined), "a cold boot's marker", BOOT_MS, 100);

    // Suspended, then deleted: nothing stays.
    await backend.suspendVM(vmId);
    await backend.deleteVM(vmId);
    assert.equal(existsSync(paths.dir), false);
  } finally {
    const info = await backend.getVMInfo(vmId).catch(() => undefined);
    if (info?.pid) process.kill(info.pid, "SIGKILL");
    await backend.close();
  }
});

test("a QEMU that does not start, or a saved file it cannot load: resume fails (ABORTED for the file), the VM stays suspended with its file; ShutdownVm discards it", { timeout: 120_000 }, async () => {
  let refuseSpawn = false;
  const backend = new QemuBackend({ stateDir, kvm: false, beforeSpawn: async () => {
    if (refuseSpawn) throw new QuantixError("unavailable", "no QEMU for this test");
  } });
  const vmId = `badstate-${process.pid}`;
  const file = path.join(stateDir, "vms", vmId, "suspend.state");
  try {
    await backend.createVM(vmId, guestConfig());
    await backend.bootVM(vmId);
    await ticksPast(backend, vmId, 1, "counter lines", BOOT_MS);
    await backend.suspendVM(vmId);
    // QEMU does not even start: that error as it is, and the VM is still suspended with its file.
    refuseSpawn = true;
    await assert.rejects(backend.resumeVM(vmId), (e: unknown) => e instanceof QuantixError && e.code === "unavailable");
    refuseSpawn = false;
    assert.equal((await backend.getVMInfo(vmId)).state, "suspended");
    assert.ok(existsSync(file));
    // Cut the stream short, as a full disk or a crash while copying would.
    await truncate(file, Math.floor((await stat(file)).size / 2));
    const err = await backend.resumeVM(vmId).then(() => assert.fail("resumed"), (e: unknown) => e);
    assert.ok(err instanceof QuantixError, String(err));
    assert.equal(err.code, "aborted");
    assert.match(err.message, /stays SUSPENDED/);
    const info = await backend.getVMInfo(vmId);
    assert.equal(info.state, "suspended");
    assert.equal(info.pid, undefined, "the QEMU that could not load it is gone");
    assert.ok(existsSync(file), "the file is kept");
    await backend.shutdownVM(vmId, { force: true, timeoutSeconds: 0 });
    assert.equal((await backend.getVMInfo(vmId)).state, "shutdown");
    assert.equal(existsSync(file), false);
    await backend.deleteVM(vmId);
  } finally {
    const info = await backend.getVMInfo(vmId).catch(() => undefined);
    if (info?.pid) process.kill(info.pid, "SIGKILL");
    await backend.close();
  }
});
