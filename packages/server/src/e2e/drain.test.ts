import assert from "node:assert/strict";
import { copyFile, mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ConditionStatus } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { NodeStatus_Phase as Phase, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VmStatus_State as State, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { VmService } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QemuBackend, isProcessAlive, startAgentServer, startControlPlaneLink, VmManager } from "@quantix/agent";
import { rejection, startTestServer, until, type TestServer, buildTestGuest, ensureDebianPackages, GUEST_TICK } from "@quantix/testing";
import { silentLogger } from "@quantix/rpc";

/*
 * Live migration through the compute API: a control plane and two in-process agents with
 * the QEMU backend (TCG), linked to it as real agents are, sharing a directory that holds
 * the test guest's kernel and initrd (VMCP_SHARED_DIRS). DrainNode moves two counting
 * guests from A to B; MigrateVM moves one back with statistics; a VM whose kernel lies
 * outside the shared directory is refused and keeps running where it was.
 */

const BOOT_MS = 90_000;
let s: TestServer;
let root: string;
let boot: { kernelPath: string; initrdPath: string; cmdline: string };
let unsharedBoot: typeof boot;
/** The agents, as startAgent makes them: QEMU backend, vmm.v1 server, control-plane link. */
const agents: Awaited<ReturnType<typeof startAgent>>[] = [];
type Agent = (typeof agents)[number];
const pids = new Set<number>();

async function startAgent(name: string, shared: string) {
  const backend = new QemuBackend({ stateDir: join(root, name), kvm: false });
  const manager = new VmManager({ backend, sharedDirs: [shared] });
  await manager.start();
  const server = await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: silentLogger, graceMs: 100 });
  const link = startControlPlaneLink({ controlPlane: s.url, agentUrl: server.url, nodeName: name, stateDir: join(root, name), backend, log: silentLogger, heartbeatMs: 500 });
  return { name, backend, server, link, client: createClient(VmService, createGrpcTransport({ baseUrl: server.url })) };
}

before(async () => {
  await ensureDebianPackages(["qemu-system-x86", "busybox-static", "cpio"]);
  const guest = await buildTestGuest();
  root = await mkdtemp(join(tmpdir(), "quantix-drain-"));
  const shared = join(root, "shared");
  const local = join(root, "local");
  await mkdir(shared);
  await mkdir(local);
  for (const dir of [shared, local]) {
    await copyFile(guest.kernelPath, join(dir, "vmlinuz"));
    await copyFile(guest.initrdPath, join(dir, "initrd.gz"));
  }
  boot = { kernelPath: join(shared, "vmlinuz"), initrdPath: join(shared, "initrd.gz"), cmdline: guest.kernelArgs };
  unsharedBoot = { ...boot, kernelPath: join(local, "vmlinuz"), initrdPath: join(local, "initrd.gz") };
  s = await startTestServer({ demo: false });
  agents.push(await startAgent(`drain-a-${process.pid}`, shared));
  agents.push(await startAgent(`drain-b-${process.pid}`, shared));
});

after(async () => {
  for (const vm of (await s.vms.listVMs({}).catch(() => ({ vms: [] }))).vms) await s.vms.deleteVM({ id: vm.id, force: true }).catch(() => undefined);
  for (const a of agents) {
    for (const vm of (await a.client.listVms({}).catch(() => ({ vms: [] }))).vms) await a.client.deleteVm({ vmId: vm.vmId, force: true }).catch(() => undefined);
    await a.link.stop();
    await a.server.close();
    await a.backend.close();
  }
  await s.close();
  for (const pid of pids) if (isProcessAlive(pid)) process.kill(pid, "SIGKILL");
  await rm(root, { recursive: true, force: true });
});

/** The node of an agent once it is READY and the control plane drives it with live migration. */
async function nodeOf(a: Agent): Promise<Node> {
  return until(async () => {
    const node = (await s.nodes.listNodes({})).nodes.find((n) => n.hostname === a.name);
    const hv = node && s.cp.agents?.get(node.id);
    return node?.status?.phase === Phase.READY && hv?.capabilities.has("live-migration") ? node : undefined;
  }, `node ${a.name} READY with live-migration`, 30_000);
}

/** The highest tick the guest printed, read through the control plane. */
async function lastTick(vmId: string): Promise<number> {
  const out = new TextDecoder().decode((await s.vms.getConsoleOutput({ vmId, tailBytes: 65536 })).data);
  return Math.max(0, ...[...out.matchAll(new RegExp(`${GUEST_TICK} (\\d+)`, "g"))].map((m) => Number(m[1])));
}

const ticking = (vmId: string, above: number, ms: number) => until(async () => ((await lastTick(vmId)) > above ? true : undefined), `VM ${vmId} counting past ${above}`, ms, 200);
const getVm = (id: string) => s.vms.getVM({ id });
const pidOn = async (a: Agent, vmId: string) => {
  const pid = (await a.client.getVmInfo({ vmId })).backendInfo!.processId;
  pids.add(pid);
  return pid;
};

async function runningGuest(name: string, nodeId: string, bootConfig = boot): Promise<VirtualMachine> {
  // Preferred, not pinned (node_id): a VM pinned to its node could not be drained off it.
  const spec = { cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot: { directBoot: bootConfig }, placement: { preferredNodeIds: [nodeId] } };
  const vm = await s.vms.createVM({ name, spec, startOnCreate: true });
  return until(async () => ((v) => (v.status?.state === State.RUNNING ? v : undefined))(await getVm(vm.id)), `${name} RUNNING`, 30_000);
}

test("DrainNode moves two counting guests to the other agent; MigrateVM moves one back with statistics", { timeout: 240_000 }, async () => {
  const [a, b] = agents as [Agent, Agent];
  const nodeA = await nodeOf(a);
  const nodeB = await nodeOf(b);
  const vms = [await runningGuest("drain-1", nodeA.id), await runningGuest("drain-2", nodeA.id)];
  for (const vm of vms) await ticking(vm.id, 2, BOOT_MS);
  const sourcePids = await Promise.all(vms.map((vm) => pidOn(a, vm.id)));

  // Watch the node and one VM while the drain runs: both show their progress.
  const watch = new AbortController();
  const nodeMessages: string[] = [];
  const vmStates = new Set<State>();
  const watching = Promise.all([
    (async () => {
      for await (const u of s.nodes.watchNodes({}, { signal: watch.signal })) {
        const c = u.node?.id === nodeA.id ? u.node.status?.conditions.find((x) => x.type === "Drained") : undefined;
        if (c) nodeMessages.push(`${c.reason}: ${c.message}`);
      }
    })().catch(() => undefined),
    (async () => {
      for await (const u of s.vms.watchVM({ vmId: vms[1]!.id }, { signal: watch.signal })) vmStates.add(u.vm?.status?.state ?? State.UNKNOWN);
    })().catch(() => undefined),
  ]);
  const before = await Promise.all(vms.map((vm) => lastTick(vm.id)));
  const drained = await s.nodes.drainNode({ id: nodeA.id });
  watch.abort();
  await watching;

  assert.deepEqual(drained.failures.map((f) => f.reason), []);
  assert.deepEqual([...drained.migratedVmIds].sort(), vms.map((v) => v.id).sort());
  assert.deepEqual(drained.stoppedVmIds, []);
  assert.equal(drained.node?.spec?.schedulable, false, "a drained node takes no new VMs");
  const cond = drained.node?.status?.conditions.find((c) => c.type === "Drained");
  assert.equal(cond?.status, ConditionStatus.TRUE);
  assert.ok(nodeMessages.some((m) => /InProgress: draining: 1 of 2 VM\(s\) handled/.test(m)), `the node's watch shows progress: ${nodeMessages.join(" | ")}`);
  assert.ok(vmStates.has(State.MIGRATING), `the VM's watch shows MIGRATING: ${[...vmStates].map((x) => State[x]).join(", ")}`);
  for (const [i, vm] of vms.entries()) {
    const now = await getVm(vm.id);
    assert.equal(now.status?.nodeId, nodeB.id);
    assert.equal(now.status?.state, State.RUNNING);
    assert.equal(now.status?.conditions.find((c) => c.type === "Migrating")?.reason, "Completed");
    await ticking(vm.id, before[i]! + 2, 20_000);
    await pidOn(b, vm.id);
  }
  for (const pid of sourcePids) await until(async () => ((isProcessAlive(pid)) ? undefined : true), `the source QEMU ${pid} gone`, 10_000, 50);
  assert.deepEqual((await a.client.listVms({})).vms, [], "node A's agent holds no VMs");

  // Back to A, live, with the hypervisor's statistics.
  await s.nodes.enableNode({ id: nodeA.id });
  const tick = await lastTick(vms[0]!.id);
  const back = await s.vms.migrateVM({ vmId: vms[0]!.id, targetNodeId: nodeA.id, live: true, maxDowntimeMs: 300 });
  assert.equal(back.vm?.status?.nodeId, nodeA.id);
  assert.ok(back.stats!.bytesTransferred > 1_000_000n, `bytes transferred: ${back.stats!.bytesTransferred}`);
  assert.ok(back.stats!.durationMs > 0n && back.stats!.downtimeMs <= back.stats!.durationMs, `duration ${back.stats!.durationMs} ms, downtime ${back.stats!.downtimeMs} ms`);
  await ticking(vms[0]!.id, tick + 2, 20_000);
  await pidOn(a, vms[0]!.id);
});

test("a VM whose kernel is outside the shared directories is refused and keeps running on its node with the reason", { timeout: 60_000 }, async () => {
  const [a, b] = agents as [Agent, Agent];
  const nodeA = await nodeOf(a);
  const nodeB = await nodeOf(b);
  await s.nodes.enableNode({ id: nodeA.id });
  const vm = await runningGuest("unshared", nodeB.id, unsharedBoot);
  const err = await rejection(s.vms.migrateVM({ vmId: vm.id, targetNodeId: nodeA.id, live: true }));
  assert.equal(err.code, Code.FailedPrecondition);
  assert.match(err.rawMessage, /cannot migrate: boot\.kernel_path .* not on storage the other host can reach/);
  const after = await getVm(vm.id);
  assert.equal(after.status?.nodeId, nodeB.id);
  const c = after.status?.conditions.find((x) => x.type === "Migrating");
  assert.equal(c?.status, ConditionStatus.FALSE);
  assert.equal(c?.reason, "Failed");
  assert.match(c?.message ?? "", /not on storage the other host can reach .*keeps running on node/);
  // The reconciler has the VM back: it is observed RUNNING on B, and A holds no copy.
  await until(async () => ((await getVm(vm.id)).status?.state === State.RUNNING ? true : undefined), "RUNNING on its source", 10_000);
  assert.equal((await b.client.getVmInfo({ vmId: vm.id })).vmId, vm.id);
  assert.equal((await rejection(a.client.getVmInfo({ vmId: vm.id }))).code, Code.NotFound);
  await pidOn(b, vm.id);
  await s.vms.deleteVM({ id: vm.id, force: true });
});
