import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { create } from "@bufbuild/protobuf";
import { CloudInitSchema, type VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";
import { buildTestGuest, ensureDebianPackages, guestVmConfig, ticksPast, type TestGuest } from "@quantix/testing";
import { QemuBackend } from "./qemu-backend.js";

// The NoCloud seed on a real QEMU. The busybox test guest does not run cloud-init, so
// this checks what QEMU is given (the seed, read-only); the seed's content is checked in
// cloud-init-seed.test.ts.
const BOOT_MS = 40_000;
let guest: TestGuest;
let stateDir: string;

before(async () => {
  await ensureDebianPackages(["qemu-system-x86", "qemu-utils", "busybox-static", "cpio", "genisoimage"]);
  guest = await buildTestGuest();
  stateDir = await mkdtemp(path.join(os.tmpdir(), "quantix-ci-seed-qemu-"));
});

after(async () => {
  await rm(stateDir, { recursive: true, force: true });
});

const guestConfig = (extra: Partial<VmConfig> = {}): VmConfig => guestVmConfig(guest, 128, extra);

test("a VM with cloud_init boots with its NoCloud seed attached read-only; delete removes the seed", { timeout: 120_000 }, async () => {
  const backend = new QemuBackend({ stateDir, kvm: false });
  const vmId = `seed-${process.pid}`;
  const seed = path.join(stateDir, "vms", vmId, "cidata.iso");
  try {
    await backend.createVM(vmId, guestConfig({ cloudInit: create(CloudInitSchema, { userData: "#cloud-config\nhostname: h1\n" }) }));
    assert.ok(existsSync(seed), "createVM built the seed");
    await backend.bootVM(vmId);
    const pid = (await backend.getVMInfo(vmId)).pid!;
    const args = (await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0");
    const blockdev = args.map((a) => (a.startsWith("{") ? (JSON.parse(a) as Record<string, unknown>) : undefined)).find((o) => o?.["node-name"] === "cidata-file");
    assert.deepEqual(blockdev, { driver: "file", "node-name": "cidata-file", filename: seed, "read-only": true });
    const blocks = await backend.executeQmp<{ device: string; qdev?: string; inserted?: { file: string; ro: boolean } }[]>(vmId, "query-block");
    const attached = blocks.find((b) => b.inserted?.file === seed);
    assert.equal(attached?.inserted?.ro, true, "the seed is attached read-only");
    await ticksPast(backend, vmId, 1, "the guest running with the seed attached", BOOT_MS);
    await backend.shutdownVM(vmId, { force: true, timeoutSeconds: 0 });
    await backend.deleteVM(vmId);
    assert.equal(existsSync(seed), false);
  } finally {
    const info = await backend.getVMInfo(vmId).catch(() => undefined);
    if (info?.pid) process.kill(info.pid, "SIGKILL");
    await backend.close();
  }
});

test("a host without the seed tool: CreateVm fails naming the package and leaves nothing", async () => {
  const backend = new QemuBackend({ stateDir, kvm: false, seedBinary: "/nonexistent/genisoimage" });
  const vmId = `noseed-${process.pid}`;
  try {
    const err = await backend.createVM(vmId, guestConfig({ cloudInit: create(CloudInitSchema, { userData: "x" }) })).then(() => assert.fail("created"), (e: unknown) => e);
    assert.ok(err instanceof QuantixError);
    assert.equal(err.code, "failed_precondition");
    assert.match(err.message, /genisoimage/);
    assert.equal(existsSync(path.join(stateDir, "vms", vmId)), false);
    assert.deepEqual(await backend.listVMs(), []);
  } finally {
    await backend.close();
  }
});
