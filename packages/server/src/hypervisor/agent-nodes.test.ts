import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Code, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { VmService } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { CLUSTER_METADATA_KEY } from "@quantix/core";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VmStatus_State as State, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { SimulatedBackend } from "@quantix/agent";
import { rejection, startTestServer, until, type TestServer } from "@quantix/testing";
import { TestAgent } from "@quantix/testing";
import { NodeMonitor } from "../controllers/node-monitor.js";
import { silentLogger } from "@quantix/rpc";
import type { AgentNodes } from "./agent-nodes.js";

let s: TestServer;
let agents: AgentNodes;
let agent: TestAgent<SimulatedBackend>;
let dir: string;

before(async () => {
  s = await startTestServer({ demo: false });
  // The composition root attaches agent nodes (app.ts); the tests look them up there.
  agents = s.cp.agents!;
  dir = await mkdtemp(join(tmpdir(), "quantix-agent-nodes-"));
  agent = new TestAgent(new SimulatedBackend({ bootMs: 20, consoleIntervalMs: 20 }), dir, `sim-agent-${process.pid}`);
  await agent.start(s.url);
  // A file in the agent's image directory (its allow-list refuses any other path).
  spec.boot.directBoot.kernelPath = await agent.image("vmlinuz");
});

after(async () => {
  await agent.kill().catch(() => undefined);
  await s.close();
  await agent.backend.close();
  await rm(dir, { recursive: true, force: true });
});

const spec = { cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot: { directBoot: { kernelPath: "", cmdline: "console=ttyS0" } } };
const getVm = (id: string) => s.vms.getVM({ id });
const vmIn = (id: string, ok: (vm: VirtualMachine) => boolean, what: string) => until(async () => ((vm) => (ok(vm) ? vm : undefined))(await getVm(id)), what, 10_000);

async function readyNode(): Promise<string> {
  return until(async () => {
    const list = await s.nodes.listNodes({});
    const node = list.nodes.find((n) => n.hostname === agent.name);
    return node?.status?.phase === Phase.READY && agents.get(node.id) ? node.id : undefined;
  }, "the agent's node READY and attached");
}

test("the compute API drives an agent's VM: create, start, console, stop", async () => {
  const nodeId = await readyNode();
  const vm = await s.vms.createVM({ name: "agent-vm-1", spec, nodeId });
  const started = await s.vms.startVM({ id: vm.id });
  assert.equal(started.status?.state, State.RUNNING);
  assert.equal(started.status?.hypervisor, "simulated");
  assert.equal((await agent.manager.info(vm.id)).state, "running");
  assert.equal((await agent.manager.info(vm.id)).config.metadata["quantix.vm-id"], vm.id);

  const out = await until(async () => {
    const o = await s.vms.getConsoleOutput({ vmId: vm.id });
    return new TextDecoder().decode(o.data).includes("booted") ? o : undefined;
  }, "console output through the control plane");
  assert.match(new TextDecoder().decode(out.data), /simulated console/);
  assert.equal((await rejection(s.vms.getConsoleOutput({ vmId: "00000000-0000-0000-0000-00000000dead" }))).code, Code.NotFound);

  const stopped = await s.vms.stopVM({ id: vm.id, force: true });
  assert.equal(stopped.status?.state, State.STOPPED);
  assert.equal((await agent.manager.info(vm.id)).state, "shutdown");

  // A crash seen by the agent reaches the VM's status with its reason.
  await s.vms.startVM({ id: vm.id });
  agent.backend.simulateCrash(vm.id, "simulated fault for the test");
  const crashed = await vmIn(vm.id, (x) => x.status?.state === State.CRASHED, "CRASHED");
  assert.match(crashed.status?.errorMessage ?? "", /simulated fault for the test/);
  await s.vms.stopVM({ id: vm.id, force: true });
  await s.vms.deleteVM({ id: vm.id });
  await until(() => agent.manager.info(vm.id).then(() => undefined, () => true), "the agent's VM deleted");
});

test("a VM with a disk is refused with the reason in its status", async () => {
  const nodeId = await readyNode();
  const vm = await s.vms.createVM({ name: "agent-vm-disk", spec: { ...spec, disks: [{ id: "root", sizeGib: 1n }] }, nodeId });
  // A power action whose outcome is a failure answers with it (issue 11), no longer 200 with ERROR.
  const err = await rejection(s.vms.startVM({ id: vm.id }));
  assert.equal(err.code, Code.FailedPrecondition);
  assert.match(err.rawMessage, /storage service/);
  const res = await s.vms.getVM({ id: vm.id });
  assert.equal(res.status?.state, State.ERROR);
  assert.match(res.status?.errorMessage ?? "", /storage service/);
  assert.equal(res.status?.conditions.find((c) => c.type === "SpecAccepted")?.reason, "HypervisorRejected");
  await s.vms.deleteVM({ id: vm.id, force: true });
});

test("a lost agent makes its VMs unreachable; when it is back their status is rebuilt", async () => {
  const nodeId = await readyNode();
  const vm = await s.vms.createVM({ name: "agent-vm-2", spec, nodeId, startOnCreate: true });
  await vmIn(vm.id, (x) => x.status?.state === State.RUNNING, "RUNNING");
  const port = agent.server.port;
  await agent.kill();

  const lost = await vmIn(vm.id, (x) => x.status?.state === State.UNKNOWN, "UNKNOWN after the agent died");
  assert.equal(lost.status?.conditions.find((c) => c.type === "NodeReachable")?.reason, "NodeUnreachable");
  assert.match(lost.status?.errorMessage ?? "", /unreachable/);
  // JSON leaves out a field at its zero value: the state must not be the zero value.
  const json = (await (await fetch(`${s.url}/Quantixkvm.compute.v1.VMService/GetVM`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ id: vm.id }) })).json()) as { status?: { state?: string } };
  assert.equal(json.status?.state, "UNKNOWN", "an unreachable VM's state is present in JSON");

  // The real monitor, with its clock past the heartbeat limit, marks the node NOT_READY;
  // much later, OFFLINE. The VM's status names the node's state each time.
  await new NodeMonitor({ store: s.cp.store, clock: { now: () => Date.now() + 60_000 }, log: silentLogger }).check();
  assert.equal((await s.nodes.getNode({ id: nodeId })).status?.phase, Phase.NOT_READY);
  const notReady = await vmIn(vm.id, (x) => /unreachable: its heartbeats stopped \(node NOT_READY/.test(x.status?.errorMessage ?? ""), "the VM's status naming the NOT_READY node");
  assert.equal(notReady.status?.state, State.UNKNOWN);
  await new NodeMonitor({ store: s.cp.store, clock: { now: () => Date.now() + 600_000 }, log: silentLogger }).check();
  assert.equal((await s.nodes.getNode({ id: nodeId })).status?.phase, Phase.OFFLINE);
  const offline = await vmIn(vm.id, (x) => /OFFLINE/.test(x.status?.errorMessage ?? ""), "the VM's status naming the OFFLINE node");
  assert.equal(offline.status?.state, State.UNKNOWN);

  await agent.start(s.url, port);
  const back = await vmIn(vm.id, (x) => x.status?.state === State.RUNNING, "RUNNING again once the agent is back");
  assert.equal(back.status?.conditions.some((c) => c.type === "NodeReachable"), false);
  assert.equal(back.status?.errorMessage, "");
  await s.vms.deleteVM({ id: vm.id, force: true });
});

test("a VM on a simulated demo node has no console: FAILED_PRECONDITION naming the capability", async () => {
  const demo = await startTestServer();
  try {
    const placed = await until(async () => (await demo.vms.listVMs({})).vms.find((v) => v.status?.nodeId), "a placed demo VM");
    const err = await rejection(demo.vms.getConsoleOutput({ vmId: placed.id }));
    assert.equal(err.code, Code.FailedPrecondition);
    assert.match(err.message, /'console' capability/);
  } finally {
    await demo.close();
  }
});

test("guests the node runs that no VM of this control plane is are listed in its status, not hidden", async () => {
  const nodeId = await readyNode();
  const agentApi = createClient(VmService, createGrpcTransport({ baseUrl: agent.server.url }));
  const config = { cpu: { vcpuCount: 1 }, memory: { sizeBytes: 256n << 20n }, boot: { kernelPath: spec.boot.directBoot.kernelPath } };
  await agentApi.createVm({ vmId: "made-by-hand", config });
  await agentApi.bootVm({ vmId: "made-by-hand" });
  // One another cluster's control plane made (e.g. before this one's database was replaced).
  await agentApi.createVm({ vmId: "old-cluster-vm", config: { ...config, metadata: { [CLUSTER_METADATA_KEY]: "another-cluster" } } });
  const managed = await s.vms.createVM({ name: "agent-vm-managed", spec, nodeId, startOnCreate: true });
  await vmIn(managed.id, (x) => x.status?.state === State.RUNNING, "the managed VM RUNNING");

  const listed = await until(async () => {
    const n = await s.nodes.getNode({ id: nodeId });
    return n.status?.unmanagedGuests.length === 2 ? n.status.unmanagedGuests : undefined;
  }, "two unmanaged guests in the node's status");
  assert.deepEqual(listed.map((g) => ({ id: g.id, state: g.state, owner: g.ownerClusterId })), [
    { id: "made-by-hand", state: "running", owner: "" },
    { id: "old-cluster-vm", state: "created", owner: "another-cluster" },
  ]);
  assert.equal((await agent.manager.info("made-by-hand")).state, "running", "shown, not removed");

  await agentApi.deleteVm({ vmId: "made-by-hand", force: true });
  await agentApi.deleteVm({ vmId: "old-cluster-vm", force: true });
  await until(async () => ((await s.nodes.getNode({ id: nodeId })).status?.unmanagedGuests.length === 0 ? true : undefined), "the list empty once they are gone");
  await s.vms.deleteVM({ id: managed.id, force: true });
});
