import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VmStatus_State as State, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { SimulatedBackend, startAgentServer, type AgentServer, startControlPlaneLink, type ControlPlaneLink, VmManager } from "@quantix/agent";
import { startTestServer, until, type TestServer } from "@quantix/testing";
import { silentLogger } from "@quantix/rpc";

/**
 * A host: an agent over the simulated backend. Killing it stops its RPC server and its
 * heartbeats while its "QEMU processes" (the backend's VMs) live on, as on a host whose
 * agent died or whose network went away; restarting it reuses the backend and state dir.
 */
class Host {
  readonly backend = new SimulatedBackend({ bootMs: 20, consoleIntervalMs: 50 });
  manager!: VmManager;
  private server: AgentServer | undefined;
  private link: ControlPlaneLink | undefined;
  port = 0;
  constructor(readonly name: string, readonly stateDir: string) {}

  async up(cpUrl: string): Promise<void> {
    this.manager = new VmManager({ backend: this.backend });
    await this.manager.start();
    this.server = await startAgentServer(this.manager, { host: "127.0.0.1", port: this.port, log: silentLogger, graceMs: 100 });
    this.port = this.server.port;
    this.link = startControlPlaneLink({ controlPlane: cpUrl, agentUrl: this.server.url, nodeName: this.name, stateDir: this.stateDir, backend: this.backend, log: silentLogger, heartbeatMs: 200 });
  }

  async down(): Promise<void> {
    await this.link?.stop();
    await this.server?.close();
    this.link = undefined;
    this.server = undefined;
  }

  /** The backend's state of a VM, or "absent". */
  async state(vmId: string): Promise<string> {
    return this.manager.info(vmId).then((i) => i.state, () => "absent");
  }
}

let s: TestServer;
let dir: string;
let a: Host;
let b: Host;

before(async () => {
  // Nodes silent for 2 s are lost (OFFLINE), so that HA acts within the test.
  s = await startTestServer({ demo: false, nodeLostAfterSec: 2 });
  dir = await mkdtemp(join(tmpdir(), "quantix-ha-"));
  a = new Host(`ha-a-${process.pid}`, join(dir, "a"));
  b = new Host(`ha-b-${process.pid}`, join(dir, "b"));
  await a.up(s.url);
  await b.up(s.url);
});

after(async () => {
  await a.down().catch(() => undefined);
  await b.down().catch(() => undefined);
  await s.close();
  await a.backend.close();
  await b.backend.close();
  await rm(dir, { recursive: true, force: true });
});

const spec = (ha: { maxRestarts?: number; restartDelaySec?: number }) => ({
  cpu: { cores: 1 },
  memory: { sizeMib: 256n },
  boot: { directBoot: { kernelPath: "/boot/vmlinuz", cmdline: "console=ttyS0" } },
  haPolicy: { enabled: true, priority: 10, ...ha },
});
const vmIn = (id: string, ok: (vm: VirtualMachine) => boolean, what: string) =>
  until(async () => ((vm) => (ok(vm) ? vm : undefined))(await s.vms.getVM({ id })), what, 15_000);
const condition = (vm: VirtualMachine, type: string) => vm.status?.conditions.find((c) => c.type === type);

/** Polls `probe` for `ms`, failing as soon as it is false: an invariant over a window. */
async function holds(probe: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    assert.ok(await probe(), what);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function readyNode(host: Host): Promise<string> {
  return until(async () => {
    const node = (await s.nodes.listNodes({})).nodes.find((n) => n.hostname === host.name);
    return node?.status?.phase === Phase.READY && s.cp.agents?.get(node.id) ? node.id : undefined;
  }, `${host.name} READY and attached`);
}

test("a lost node's HA VM is restarted on another node, and the copy on the lost node is fenced when it comes back", async () => {
  const nodeA = await readyNode(a);
  const nodeB = await readyNode(b);
  // Preferred, not pinned: a VM pinned to A (node_id) could only ever run on A.
  const vm = await s.vms.createVM({ name: "ha-lost", spec: { ...spec({}), placement: { preferredNodeIds: [nodeA] } }, startOnCreate: true });
  await vmIn(vm.id, (x) => x.status?.state === State.RUNNING, "RUNNING on A");
  assert.equal(await a.state(vm.id), "running");

  await a.down();
  const moved = await vmIn(vm.id, (x) => x.status?.state === State.RUNNING && x.status.nodeId === nodeB, "RUNNING on B after A was lost");
  assert.equal((await s.nodes.getNode({ id: nodeA })).status?.phase, Phase.OFFLINE);
  assert.equal(moved.status?.haRestarts.length, 1);
  assert.equal(condition(moved, "HaRestart")?.reason, "NodeLost");
  assert.equal(await b.state(vm.id), "running");
  // A's agent is gone but its "QEMU" still runs the old copy, until A is back and fenced.
  assert.equal(await a.state(vm.id), "running");

  await a.up(s.url);
  await until(async () => ((await a.state(vm.id)) === "absent" ? true : undefined), "the stale copy on A deleted", 15_000);
  const fenced = await vmIn(vm.id, (x) => condition(x, "Fenced") !== undefined, "the Fenced condition");
  assert.match(condition(fenced, "Fenced")!.message, new RegExp(`stale copy on node '${nodeA}'.*assigned to node '${nodeB}'`));
  assert.equal(fenced.status?.nodeId, nodeB);
  assert.equal(fenced.status?.state, State.RUNNING);
  assert.equal(await b.state(vm.id), "running");
  await s.vms.deleteVM({ id: vm.id, force: true });
});

test("a crashed HA VM is restarted in place after the delay, at most max_restarts times; StartVM starts the count afresh", async () => {
  const nodeB = await readyNode(b);
  const vm = await s.vms.createVM({ name: "ha-crash", spec: spec({ maxRestarts: 2, restartDelaySec: 1 }), nodeId: nodeB, startOnCreate: true });
  await vmIn(vm.id, (x) => x.status?.state === State.RUNNING, "RUNNING");

  for (const n of [1, 2]) {
    const crashedAt = Date.now();
    b.backend.simulateCrash(vm.id, `fault ${n}`);
    const back = await vmIn(vm.id, (x) => x.status?.state === State.RUNNING && x.status.haRestarts.length === n, `restart ${n} in place`);
    assert.equal(back.status?.nodeId, nodeB);
    assert.ok(timestampMs(back.status!.haRestarts[n - 1]!) >= crashedAt + 1000, "restart_delay_sec was waited");
    assert.match(condition(back, "HaRestart")!.message, new RegExp(`restart ${n} of 2`));
  }

  b.backend.simulateCrash(vm.id, "fault 3");
  const gaveUp = await vmIn(vm.id, (x) => condition(x, "HaRestart")?.reason === "MaxRestartsReached", "HA giving up");
  assert.equal(gaveUp.status?.state, State.CRASHED);
  assert.match(condition(gaveUp, "HaRestart")!.message, /2 times within the last hour \(max_restarts 2\)/);
  // It stays crashed for longer than the delay: nothing restarts it.
  await holds(async () => (await b.state(vm.id)) === "crashed", 2000, "the VM staying crashed after HA gave up");
  assert.equal((await s.vms.getVM({ id: vm.id })).status?.haRestarts.length, 2);

  await s.vms.startVM({ id: vm.id });
  await vmIn(vm.id, (x) => x.status?.state === State.RUNNING, "RUNNING after StartVM");
  b.backend.simulateCrash(vm.id, "fault 4");
  const fresh = await vmIn(vm.id, (x) => x.status?.state === State.RUNNING && x.status.haRestarts.length === 1 && condition(x, "HaRestart")?.reason === "RestartedAfterCrash", "a fresh count after StartVM");
  assert.match(condition(fresh, "HaRestart")!.message, /restart 1 of 2/);
  await s.vms.deleteVM({ id: vm.id, force: true });
});
