import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VmStatus_State as State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { SimulatedBackend } from "@quantix/agent";
import { rejection, startTestServer, until, type TestServer } from "@quantix/testing";
import { TestAgent } from "@quantix/testing";

// DecommissionNode with real (in-process) agents over the simulated backend: the node's
// guests are powered off and deleted on its host, and the host does not come back as a
// new node; an unreachable node needs force.

let s: TestServer;
const dirs: string[] = [];
const agents: TestAgent<SimulatedBackend>[] = [];
const spec = { cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot: { directBoot: { kernelPath: "", cmdline: "console=ttyS0" } } };

/** The image directory every agent of this file allows (VMCP_IMAGE_DIRS), holding the kernel the VMs name. */
let images: string;

before(async () => {
  s = await startTestServer({ demo: false });
  images = await mkdtemp(join(tmpdir(), "quantix-decommission-images-"));
  dirs.push(images);
  spec.boot.directBoot.kernelPath = join(images, "vmlinuz");
  await writeFile(spec.boot.directBoot.kernelPath, "placeholder kernel\n");
});

after(async () => {
  for (const a of agents) await a.kill().catch(() => undefined);
  await s.close();
  for (const a of agents) await a.backend.close();
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/** Starts an agent (a fresh state dir unless given) and waits for its node to be READY and attached. */
async function startAgent(name: string, stateDir?: string): Promise<TestAgent<SimulatedBackend>> {
  const dir = stateDir ?? (await mkdtemp(join(tmpdir(), "quantix-decommission-")));
  if (!stateDir) dirs.push(dir);
  const agent = new TestAgent(new SimulatedBackend({ bootMs: 20 }), dir, name, 50, [images]);
  agents.push(agent);
  await agent.start(s.url);
  return agent;
}

async function readyNode(hostname: string): Promise<string> {
  return until(async () => {
    const node = (await s.nodes.listNodes({})).nodes.find((n) => n.hostname === hostname);
    return node?.status?.phase === Phase.READY && s.cp.agents?.get(node.id) ? node.id : undefined;
  }, `node ${hostname} READY and attached`);
}

const nodesNamed = async (hostname: string) => (await s.nodes.listNodes({})).nodes.filter((n) => n.hostname === hostname);

test("a forced decommission deletes the node's guests on its host; the host stays gone and its health says why", async () => {
  const name = `decom-a-${process.pid}`;
  const agent = await startAgent(name);
  const nodeId = await readyNode(name);
  const vm = await s.vms.createVM({ name: "decom-vm", spec, nodeId });
  assert.equal((await s.vms.startVM({ id: vm.id })).status?.state, State.RUNNING);
  assert.equal((await agent.manager.info(vm.id)).state, "running");

  await s.nodes.decommissionNode({ id: nodeId, force: true });
  // The copy is gone from the host when the call returns, not later.
  await assert.rejects(agent.manager.info(vm.id), { code: "not_found" });
  assert.equal((await rejection(s.nodes.getNode({ id: nodeId }))).code, Code.NotFound);

  // Its next heartbeat is refused: the agent stops and says why, in /_/health too.
  const problem = await until(() => agent.link.problem(), "the agent to notice it was decommissioned");
  assert.match(problem, /this node was decommissioned; remove .*node-id and restart the agent to register it again/);
  const health = await fetch(`${agent.server.url}/_/health`);
  assert.equal(health.status, 503);
  assert.equal(((await health.json()) as { reason?: string }).reason, problem);

  // A fresh agent (no node-id file) registers as before; while it heartbeats several times,
  // the decommissioned host does not come back under any id, and the VM does not run there.
  const fresh = await startAgent(`decom-b-${process.pid}`);
  const freshId = await readyNode(fresh.name);
  const beats = new Set<string>();
  await until(async () => {
    const hb = (await s.nodes.getNode({ id: freshId })).status?.lastHeartbeat;
    if (hb) beats.add(`${hb.seconds}.${hb.nanos}`);
    return beats.size >= 4 ? true : undefined;
  }, "four heartbeats of the fresh agent");
  assert.deepEqual(await nodesNamed(name), []);
  await assert.rejects(agent.manager.info(vm.id), { code: "not_found" });

  // Restarted with its node-id file, the decommissioned agent still does not register.
  await agent.kill();
  const restarted = await startAgent(name, agent.stateDir);
  await until(() => restarted.link.problem(), "the restarted agent to refuse registering");
  assert.deepEqual(await nodesNamed(name), []);
});

test("an unreachable node is refused without force (copies would remain) and goes with force, with a warning", async () => {
  const name = `decom-c-${process.pid}`;
  const agent = await startAgent(name);
  const nodeId = await readyNode(name);
  await agent.kill();

  const e = await rejection(s.nodes.decommissionNode({ id: nodeId }));
  assert.equal(e.code, Code.FailedPrecondition);
  assert.match(e.rawMessage, /is unreachable .*copies of its VMs would remain/);
  assert.equal((await s.nodes.getNode({ id: nodeId })).hostname, name);

  let warning: string | null = null;
  await s.nodes.decommissionNode({ id: nodeId, force: true }, { onHeader: (h) => (warning = h.get("quantix-warning")) });
  assert.match(warning ?? "", /may remain running on it until the node is fenced/);
  assert.equal((await rejection(s.nodes.getNode({ id: nodeId }))).code, Code.NotFound);
});

test("RegisterNode naming a node id that no longer exists is NOT_FOUND and adds no node", async () => {
  const reg = { hostname: `decom-d-${process.pid}`, managementIp: "192.0.2.10", cpuInfo: { logicalCpus: 2 }, memoryInfo: { totalMib: 2048n } };
  const node = await s.nodes.registerNode(reg);
  assert.equal((await s.nodes.registerNode({ ...reg, nodeId: node.id })).id, node.id);
  await s.nodes.decommissionNode({ id: node.id, force: true });
  assert.equal((await rejection(s.nodes.registerNode({ ...reg, nodeId: node.id }))).code, Code.NotFound);
  assert.deepEqual(await nodesNamed(reg.hostname), []);
});

test("RegisterNode naming a node id this control plane never knew (its database replaced) registers the host anew; only a tombstone says decommissioned", async () => {
  const reg = { hostname: `decom-e-${process.pid}`, managementIp: "192.0.2.11", cpuInfo: { logicalCpus: 2 }, memoryInfo: { totalMib: 2048n } };
  const unknownId = "0f0f0f0f-0000-4000-8000-00000000abcd";
  const fresh = await s.nodes.registerNode({ ...reg, nodeId: unknownId });
  assert.notEqual(fresh.id, unknownId);
  assert.deepEqual((await nodesNamed(reg.hostname)).map((n) => n.id), [fresh.id]);
  await s.nodes.decommissionNode({ id: fresh.id, force: true });
  const err = await rejection(s.nodes.registerNode({ ...reg, nodeId: fresh.id }));
  assert.equal(err.code, Code.NotFound);
  assert.match(err.rawMessage, new RegExp(`node '${fresh.id}' \\(${reg.hostname}\\) was decommissioned`));
});
