import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { existsSync } from "node:fs";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { StoragePoolType, StorageService, VolumeFormat } from "@quantix/api/gen/vmm/v1/storage_pb.js";
import { VmService, VmState } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { ensureDebianPackages, runNode, until } from "@quantix/testing";
import { probeKvm } from "./backends/qemu/kvm-probe.js";
import { standInBinary } from "./testing/stand-in-fixture.js";

const MAIN = new URL("./main.ts", import.meta.url).pathname;

const run = (env: Record<string, string>) => runNode(["--import", "tsx", MAIN], env);

test("the agent process serves health and StorageService, and SIGTERM exits 0", async () => {
  const stateDir = await mkdtemp(join(tmpdir(), "quantix-agent-"));
  const p = run({ VMCP_BACKEND: "simulated", VMCP_PORT: "0", VMCP_STATE_DIR: stateDir });
  try {
    const url = await until(() => /"url":"(http:[^"]+)"/.exec(p.out())?.[1], "the listening line", 30_000);
    const res = await fetch(`${url}/_/health`);
    assert.equal(res.status, 200);
    const body = (await res.json()) as { status: string; backend: { type: string } };
    assert.equal(body.status, "ok");
    assert.equal(body.backend.type, "simulated");
    // StorageService on the same port, its DIR pools under <state dir>/pools.
    const storage = createClient(StorageService, createConnectTransport({ baseUrl: url, httpVersion: "1.1" }));
    const poolId = "3f2c8a1e-0b7d-4c5e-9a6f-1d2e3f4a5b6c";
    assert.equal((await storage.ensurePool({ poolId, type: StoragePoolType.DIR })).path, join(stateDir, "pools", poolId));
    // A volume of the agent's pool is a disk a VM may name, as a file of VMCP_IMAGE_DIRS is.
    await ensureDebianPackages(["qemu-utils"]);
    const volume = await storage.createVolume({ poolId, volumeId: "7d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6", format: VolumeFormat.RAW, sizeBytes: 1024n * 1024n });
    await mkdir(join(stateDir, "images"));
    await writeFile(join(stateDir, "images", "vmlinuz"), "kernel");
    const vms = createClient(VmService, createConnectTransport({ baseUrl: url, httpVersion: "1.1" }));
    await vms.createVm({ vmId: "on-a-volume", config: { cpu: { vcpuCount: 1 }, memory: { sizeBytes: 128n * 1024n * 1024n }, boot: { kernelPath: join(stateDir, "images", "vmlinuz") }, storage: [{ id: "d0", path: volume.path }] } });
    p.child.kill("SIGTERM");
    assert.equal(await p.exited, 0);
    await assert.rejects(fetch(`${url}/_/health`));
  } finally {
    p.child.kill("SIGKILL");
    await rm(stateDir, { recursive: true, force: true });
  }
});

test("a bad VMCP_BACKEND exits 2 naming it", async () => {
  const p = run({ VMCP_BACKEND: "vmware" });
  assert.equal(await p.exited, 2);
  assert.match(p.err(), /VMCP_BACKEND/);
  assert.match(p.err(), /vmware/);
});

test("a QEMU endpoint other than qemu:///system exits 2 naming VMCP_QEMU_ENDPOINT", async () => {
  const p = run({ VMCP_BACKEND: "qemu", VMCP_QEMU_ENDPOINT: "qemu+ssh://host/system" });
  assert.equal(await p.exited, 2);
  assert.match(p.err(), /VMCP_QEMU_ENDPOINT .*qemu:\/\/\/system/);
});

test("VMCP_QEMU_KVM=true where KVM cannot run a guest: the start error says to set VMCP_QEMU_KVM=false", async () => {
  const probe = await probeKvm("qemu-system-x86_64");
  const stateDir = await mkdtemp(join(tmpdir(), "quantix-agent-"));
  const p = run({ VMCP_BACKEND: "qemu", VMCP_QEMU_KVM: "true", VMCP_PORT: "0", VMCP_STATE_DIR: stateDir });
  try {
    if (probe.usable) {
      // A host whose KVM works: the agent starts, with KVM, and its health is ok.
      const url = await until(() => /"url":"(http:[^"]+)"/.exec(p.out())?.[1], "the listening line", 30_000);
      assert.match(p.out(), /"accel":"kvm"/);
      assert.equal((await fetch(`${url}/_/health`)).status, 200);
    } else {
      assert.equal(await p.exited, 1);
      assert.match(p.err(), /KVM .*set VMCP_QEMU_KVM=false/);
    }
  } finally {
    p.child.kill("SIGKILL");
    await rm(stateDir, { recursive: true, force: true });
  }
});

test("VMCP_CH_BINARY and VMCP_CH_ENDPOINT: the agent runs that binary, with each VM's API socket beside the endpoint", async () => {
  const dir = await mkdtemp("/tmp/qx-ep-");
  const images = join(dir, "img");
  await mkdir(images);
  await writeFile(join(images, "vmlinux"), "not a kernel: the stand-in does not run it");
  const p = run({ VMCP_BACKEND: "cloud-hypervisor", VMCP_CH_BINARY: standInBinary("cloud-hypervisor"), VMCP_CH_ENDPOINT: `unix://${dir}/sock/ch.sock`, VMCP_PORT: "0", VMCP_STATE_DIR: join(dir, "state"), VMCP_IMAGE_DIRS: images });
  try {
    const url = await until(() => /"url":"(http:[^"]+)"/.exec(p.out())?.[1], "the listening line", 30_000);
    const c = createClient(VmService, createConnectTransport({ baseUrl: url, httpVersion: "1.1" }));
    const config = { cpu: { vcpuCount: 1 }, memory: { sizeBytes: 128n * 1024n * 1024n }, boot: { kernelPath: join(images, "vmlinux") } };
    const refused = await c.createVm({ vmId: "ep-0", config: { ...config, boot: { kernelPath: "/etc/shadow" } } }).then(() => assert.fail("created"), (e: unknown) => ConnectError.from(e));
    assert.equal(refused.code, Code.InvalidArgument);
    assert.match(refused.rawMessage, /boot\.kernel_path.*VMCP_IMAGE_DIRS/);
    await c.createVm({ vmId: "ep-1", config });
    assert.equal((await c.bootVm({ vmId: "ep-1" })).state, VmState.RUNNING);
    assert.ok(existsSync(join(dir, "sock", "ch-ep-1.sock")), "the VM's API socket is <endpoint path>-<vm id>.sock");
    await c.deleteVm({ vmId: "ep-1", force: true });
    assert.equal(existsSync(join(dir, "sock", "ch-ep-1.sock")), false, "DeleteVm removes the socket");
    p.child.kill("SIGTERM");
    assert.equal(await p.exited, 0);
  } finally {
    p.child.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
  }
});

test("a second agent on the same VMCP_STATE_DIR refuses to start, naming the first one's pid; a dead agent's lock is taken over", async () => {
  const stateDir = await mkdtemp(join(tmpdir(), "quantix-agent-lock-"));
  const first = run({ VMCP_BACKEND: "simulated", VMCP_PORT: "0", VMCP_STATE_DIR: stateDir });
  let second: ReturnType<typeof run> | undefined;
  let third: ReturnType<typeof run> | undefined;
  try {
    await until(() => /"url":"(http:[^"]+)"/.exec(first.out())?.[1], "the first agent's listening line", 30_000);
    second = run({ VMCP_BACKEND: "simulated", VMCP_PORT: "0", VMCP_STATE_DIR: stateDir });
    assert.equal(await second.exited, 1);
    assert.match(second.err(), new RegExp(`VMCP_STATE_DIR ${stateDir} is in use by another agent \\(pid ${first.child.pid}\\)`));
    first.child.kill("SIGKILL");
    await first.exited;
    third = run({ VMCP_BACKEND: "simulated", VMCP_PORT: "0", VMCP_STATE_DIR: stateDir });
    await until(() => /"url":"(http:[^"]+)"/.exec(third!.out())?.[1], "the third agent's listening line", 30_000);
    third.child.kill("SIGTERM");
    assert.equal(await third.exited, 0);
    assert.equal(existsSync(join(stateDir, "agent.lock")), false, "a clean stop releases the lock");
  } finally {
    for (const p of [first, second, third]) p?.child.kill("SIGKILL");
    await rm(stateDir, { recursive: true, force: true });
  }
});
