import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VmStatus_State as State, type ResourceUsage } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { SimulatedBackend, startAgentServer, type AgentServer, startControlPlaneLink, type ControlPlaneLink, VmManager } from "@quantix/agent";
import { ON_SIMULATED_NODES, SIMULATED_KERNEL, rejection, startTestServer, until, type TestServer } from "@quantix/testing";
import { silentLogger } from "@quantix/rpc";
import { intervalOf, intervalPercent, toResourceUsage } from "./vm-metrics-stream.js";

/*
 * StreamMetrics through a control plane and an in-process agent over the simulated
 * backend (which measures memory only: everything else must be listed as not measured).
 * Real numbers from QEMU are checked in e2e/real-guest.test.ts.
 */

let s: TestServer;
let dir: string;
let backend: SimulatedBackend;
let server: AgentServer | undefined;
let link: ControlPlaneLink | undefined;
const nodeName = `metrics-agent-${process.pid}`;
const spec = { cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot: { directBoot: { kernelPath: "/boot/vmlinuz", cmdline: "console=ttyS0" } } };

before(async () => {
  s = await startTestServer({ demo: false });
  dir = await mkdtemp(join(tmpdir(), "quantix-metrics-stream-"));
  backend = new SimulatedBackend({ bootMs: 20, consoleIntervalMs: 50 });
  const manager = new VmManager({ backend });
  await manager.start();
  server = await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: silentLogger, graceMs: 100 });
  link = startControlPlaneLink({ controlPlane: s.url, agentUrl: server.url, nodeName, stateDir: dir, backend, log: silentLogger, heartbeatMs: 200 });
});

after(async () => {
  await stopAgent();
  await s.close();
  await backend.close();
  await rm(dir, { recursive: true, force: true });
});

/** Stops the agent as if it died: no answers, no heartbeats. */
async function stopAgent(): Promise<void> {
  await link?.stop().catch(() => undefined);
  await server?.close().catch(() => undefined);
  link = undefined;
  server = undefined;
}

async function runningVm(name: string): Promise<string> {
  const nodeId = await until(async () => {
    const n = (await s.nodes.listNodes({})).nodes.find((x) => x.hostname === nodeName);
    return n?.status?.phase === Phase.READY && s.cp.agents?.get(n.id) ? n.id : undefined;
  }, "the agent's node READY and attached");
  const vm = await s.vms.createVM({ name, spec, nodeId });
  await s.vms.startVM({ id: vm.id });
  return vm.id;
}

/** Reads a stream in the background, keeping what arrived and how it ended. */
function collect(vmId: string, intervalSec: number, signal?: AbortSignal) {
  const samples: { usage: ResourceUsage; atMs: number }[] = [];
  const ended = (async () => {
    for await (const usage of s.vms.streamMetrics({ vmId, intervalSec }, signal ? { signal } : {})) samples.push({ usage, atMs: Date.now() });
    return "ok" as const;
  })().catch((err: unknown) => ConnectError.from(err));
  return { samples, ended };
}

test("interval_sec: 0 means 5, 1-60 allowed, else INVALID_ARGUMENT", () => {
  assert.equal(intervalOf(0), 5);
  assert.equal(intervalOf(1), 1);
  assert.equal(intervalOf(60), 60);
  for (const bad of [-1, 61]) assert.throws(() => intervalOf(bad), /interval_sec: must be between 1 and 60/);
});

test("CPU percent is the stream's own interval: the difference of CPU seconds over time and vCPUs", () => {
  const sample = (cpuSeconds?: number) => ({ power: "running" as const, ...(cpuSeconds !== undefined ? { cpuSeconds } : {}) });
  // 1.5 CPU seconds in 2 s on 2 vCPUs: 37.5 %.
  assert.equal(intervalPercent({ cpuSeconds: 10, atMs: 1000 }, sample(11.5), 3000, 2), 37.5);
  assert.equal(intervalPercent({ cpuSeconds: 10, atMs: 1000 }, sample(30), 2000, 1), 100, "capped at 100");
  assert.equal(intervalPercent(undefined, sample(5), 1000, 1), undefined, "the first sample has no interval");
  assert.equal(intervalPercent({ cpuSeconds: 10, atMs: 1000 }, sample(), 2000, 1), undefined, "no CPU seconds measured");
  assert.equal(intervalPercent({ cpuSeconds: 10, atMs: 1000 }, sample(2), 2000, 1), undefined, "a restarted process (counter went back)");
});

test("unmeasured fields are named, never passed off as zeros", () => {
  const full = toResourceUsage({ power: "running", cpuPercent: 12.5, cpuSeconds: 3.25, memoryBytes: 300n * 1048576n, block: { readBytes: 10n, writeBytes: 20n, readOps: 1n, writeOps: 2n } }, 1_700_000_000_123);
  assert.deepEqual(full.notMeasured, ["network_rx_bytes", "network_tx_bytes"]);
  assert.equal(full.memoryUsedMib, 300n);
  assert.equal(full.cpuSeconds, 3.25);
  assert.equal(full.diskWriteOps, 2n);
  assert.equal(timestampMs(full.sampledAt!), 1_700_000_000_123);
  const bare = toResourceUsage({ power: "running" }, 0);
  assert.deepEqual(bare.notMeasured, ["cpu_usage_percent", "memory_used_mib", "disk_read_bytes", "disk_write_bytes", "network_rx_bytes", "network_tx_bytes", "cpu_seconds", "disk_read_ops", "disk_write_ops"]);
});

test("samples arrive at the interval, the first at once, until the VM is deleted (then OK)", async () => {
  const vmId = await runningVm("metrics-1");
  const calledAt = Date.now();
  const { samples, ended } = collect(vmId, 1);
  await until(() => (samples.length >= 3 ? true : undefined), "three samples", 10_000);
  const first = samples[0]!;
  assert.ok(first.atMs - calledAt < 1500, `the first sample came after ${first.atMs - calledAt} ms`);
  for (let i = 1; i < 3; i++) {
    const gap = timestampMs(samples[i]!.usage.sampledAt!) - timestampMs(samples[i - 1]!.usage.sampledAt!);
    assert.ok(gap >= 800 && gap <= 2500, `samples ${gap} ms apart at a 1 s interval`);
  }
  // The simulated backend reports the configured memory and measures nothing else.
  assert.equal(first.usage.memoryUsedMib, 256n);
  assert.deepEqual(first.usage.notMeasured, ["cpu_usage_percent", "disk_read_bytes", "disk_write_bytes", "network_rx_bytes", "network_tx_bytes", "cpu_seconds", "disk_read_ops", "disk_write_ops"]);

  await s.vms.deleteVM({ id: vmId, force: true });
  assert.equal(await ended, "ok");
});

test("errors: unknown VM, bad interval, stopped VM; a client cancel or a stop ends the stream", async () => {
  const missing = "00000000-0000-0000-0000-00000000dead";
  assert.equal((await collect(missing, 0).ended as ConnectError).code, Code.NotFound);
  const vmId = await runningVm("metrics-2");
  const bad = (await collect(vmId, 61).ended) as ConnectError;
  assert.equal(bad.code, Code.InvalidArgument);
  assert.match(bad.message, /interval_sec/);

  const ac = new AbortController();
  const cancelled = collect(vmId, 1, ac.signal);
  await until(() => (cancelled.samples.length >= 1 ? true : undefined), "a first sample");
  ac.abort();
  assert.equal(((await cancelled.ended) as ConnectError).code, Code.Canceled);

  // A VM that stops ends its stream OK; a stopped VM has no stream.
  const open = collect(vmId, 1);
  await until(() => (open.samples.length >= 1 ? true : undefined), "a first sample");
  await s.vms.stopVM({ id: vmId, force: true });
  assert.equal(await open.ended, "ok");
  const stopped = (await collect(vmId, 1).ended) as ConnectError;
  assert.equal(stopped.code, Code.FailedPrecondition);
  assert.match(stopped.message, /STOPPED/);
  await s.vms.deleteVM({ id: vmId });
});

test("a VM on a simulated demo node: FAILED_PRECONDITION naming the 'metrics' capability", async () => {
  const demo = await startTestServer();
  try {
    const created = await demo.vms.createVM({ name: "metrics-demo", spec: { ...spec, boot: { directBoot: { kernelPath: SIMULATED_KERNEL } }, placement: ON_SIMULATED_NODES }, startOnCreate: true });
    await until(async () => ((await demo.vms.getVM({ id: created.id })).status?.state === State.RUNNING ? true : undefined), "the demo VM RUNNING");
    const err = await rejection((async () => {
      for await (const _ of demo.vms.streamMetrics({ vmId: created.id, intervalSec: 1 })) break;
    })());
    assert.equal(err.code, Code.FailedPrecondition);
    assert.match(err.message, /simulated hypervisor, which lacks the 'metrics' capability/);
  } finally {
    await demo.close();
  }
});

// Last: it stops the agent.
test("the agent going away mid-stream ends the stream with UNAVAILABLE", async () => {
  const vmId = await runningVm("metrics-3");
  const { samples, ended } = collect(vmId, 1);
  await until(() => (samples.length >= 1 ? true : undefined), "a first sample");
  await stopAgent();
  const err = (await ended) as ConnectError;
  assert.equal(err.code, Code.Unavailable, err.message);
});
