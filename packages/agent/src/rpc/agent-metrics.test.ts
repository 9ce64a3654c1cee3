import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { parsePrometheus, sampleValue, until, buildTestGuest, ensureDebianPackages, type TestGuest } from "@quantix/testing";
import { QemuBackend } from "../backends/qemu/qemu-backend.js";
import { SimulatedBackend } from "../backends/simulated/simulated-backend.js";
import { TestAgents } from "../testing/test-agents.js";

const run = promisify(execFile);
let guest: TestGuest;
let root: string;
const agents = new TestAgents();

const scrape = async (url: string) => {
  const res = await fetch(`${url}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return parsePrometheus(await res.text());
};

before(async () => {
  await ensureDebianPackages(["qemu-system-x86", "qemu-utils", "busybox-static", "cpio"]);
  guest = await buildTestGuest();
  root = await mkdtemp(path.join(os.tmpdir(), "quantix-agent-metrics-"));
});

after(async () => {
  await agents.closeAll();
  await rm(root, { recursive: true, force: true });
});

test("a real QEMU guest: GetVmInfo and /metrics report its CPU seconds, RSS and block bytes", { timeout: 120_000 }, async () => {
  const a = await agents.start(new QemuBackend({ stateDir: path.join(root, "qemu"), kvm: false }));
  // The firmware reads the disk's first sector while it looks for something to boot: real I/O.
  const disk = path.join(root, "data.raw");
  await run("qemu-img", ["create", "-q", "-f", "raw", disk, "8M"]);
  const vmId = `metrics-${process.pid}`;
  const config = { cpu: { vcpuCount: 1 }, memory: { sizeBytes: 192n * 1048576n }, boot: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, kernelArgs: guest.kernelArgs }, storage: [{ id: "data", path: disk }] };
  await a.client.createVm({ vmId, config });
  await a.client.bootVm({ vmId });
  await until(async () => (new TextDecoder().decode((await a.client.getConsoleOutput({ vmId, tailBytes: 65536 })).data).includes(guest.marker) ? true : undefined), "the boot marker", 60_000, 200);

  const m = (await a.client.getVmInfo({ vmId })).metrics!;
  assert.ok((m.cpuSeconds ?? 0) > 0.5, `cpu seconds after a TCG boot: ${m.cpuSeconds}`);
  assert.ok((m.blockReadBytes ?? 0n) > 0n, `block read bytes: ${m.blockReadBytes}`);
  assert.ok((m.blockReadOps ?? 0n) > 0n, `block read ops: ${m.blockReadOps}`);
  assert.equal(m.blockWriteBytes, 0n, "nothing in the guest writes the disk");

  const e = await scrape(a.server.url);
  assert.equal(e.types.get("quantix_agent_vm_cpu_seconds_total"), "counter");
  assert.equal(sampleValue(e, "quantix_agent_vms", { state: "running" }), 1);
  assert.equal(sampleValue(e, "quantix_agent_vms", { state: "created" }), 0);
  assert.ok((sampleValue(e, "quantix_agent_vm_cpu_seconds_total", { vm_id: vmId }) ?? 0) >= (m.cpuSeconds ?? 0), "CPU seconds only grow");
  assert.ok((sampleValue(e, "quantix_agent_vm_rss_bytes", { vm_id: vmId }) ?? 0) > 50 * 2 ** 20, "QEMU's resident memory");
  assert.equal(sampleValue(e, "quantix_agent_vm_block_read_bytes_total", { vm_id: vmId }), Number(m.blockReadBytes));
  assert.equal(sampleValue(e, "quantix_agent_vm_block_write_bytes_total", { vm_id: vmId }), 0);
});

test("a simulated backend measures nothing, and says so: no per-VM series, no cpu_seconds", async () => {
  const a = await agents.start(new SimulatedBackend({ bootMs: 10 }));
  await a.client.createVm({ vmId: "sim-a", config: { cpu: { vcpuCount: 1 }, memory: { sizeBytes: 128n * 1048576n }, boot: { kernelPath: "/boot/vmlinuz" } } });
  await a.client.createVm({ vmId: "sim-b", config: { cpu: { vcpuCount: 1 }, memory: { sizeBytes: 128n * 1048576n }, boot: { kernelPath: "/boot/vmlinuz" } } });
  await a.client.bootVm({ vmId: "sim-a" });
  const m = (await a.client.getVmInfo({ vmId: "sim-a" })).metrics!;
  assert.equal(m.cpuSeconds, undefined);
  assert.equal(m.blockReadBytes, undefined);
  const e = await scrape(a.server.url);
  assert.equal(sampleValue(e, "quantix_agent_vms", { state: "running" }), 1);
  assert.equal(sampleValue(e, "quantix_agent_vms", { state: "created" }), 1);
  assert.equal(sampleValue(e, "quantix_agent_vm_cpu_seconds_total", { vm_id: "sim-a" }), undefined);
  assert.equal(sampleValue(e, "quantix_agent_vm_block_read_bytes_total", { vm_id: "sim-a" }), undefined);
});
