import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";

import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VmStatus_State as State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { SimulatedBackend } from "@quantix/agent";
import { startPostgres, startTestServer, until, type TestPostgres, type TestServer, TestAgent } from "@quantix/testing";

// Two control-plane replicas on one PostgreSQL database and one agent: whichever replica a
// client reaches (the leader or not) serves the VM's console and metrics, which talk to the
// agent directly; the agent registered through one of them.

let pg: TestPostgres;
let replicas: TestServer[];
let agent: TestAgent<SimulatedBackend>;
let dir: string;
/** A kernel file in the agent's image directory (its allow-list refuses any other path). */
let kernel: string;

before(async () => {
  pg = await startPostgres();
  const url = await pg.createDatabase("replicas_serve");
  replicas = [];
  for (let i = 0; i < 2; i++) replicas.push(await startTestServer({ store: { kind: "postgres", url }, demo: false }));
  dir = await mkdtemp(join(tmpdir(), "quantix-replicas-"));
  agent = new TestAgent(new SimulatedBackend({ bootMs: 20, consoleIntervalMs: 20 }), dir, `replica-agent-${process.pid}`);
  await agent.start(replicas[1]!.url);
  kernel = await agent.image("vmlinuz");
});

after(async () => {
  await agent?.kill().catch(() => undefined);
  for (const r of replicas ?? []) await r.close();
  await agent?.backend.close();
  await pg?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test("either replica serves a VM's console and metrics through the agent", async () => {
  const [a, b] = replicas as [TestServer, TestServer];
  const nodeId = await until(async () => (await a.nodes.listNodes({})).nodes.find((n) => n.hostname === agent.name && n.status?.phase === Phase.READY)?.id, "the agent's node READY");
  const spec = { cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot: { directBoot: { kernelPath: kernel, cmdline: "console=ttyS0" } } };
  const vm = await a.vms.createVM({ name: "served-by-both", spec, nodeId });
  assert.equal((await b.vms.startVM({ id: vm.id }, { timeoutMs: 10_000 })).status?.state, State.RUNNING);
  for (const [name, r] of [["A", a], ["B", b]] as const) {
    const out = await until(async () => {
      const o = await r.vms.getConsoleOutput({ vmId: vm.id });
      return o.data.length > 0 ? o : undefined;
    }, `replica ${name}'s console output`);
    assert.match(Buffer.from(out.data).toString(), /booted/, `replica ${name}`);
    const abort = new AbortController();
    for await (const usage of r.vms.streamMetrics({ vmId: vm.id, intervalSec: 1 }, { signal: abort.signal })) {
      assert.ok(usage.memoryUsedMib > 0n, `replica ${name}: a metrics sample with the agent's numbers`);
      abort.abort();
      break;
    }
  }
  await a.vms.deleteVM({ id: vm.id, force: true });
});

test("a follower never reconciles: actions it serves are carried out by the leader's controllers", async () => {
  const [a, b] = replicas as [TestServer, TestServer];
  const leader = [a, b].find((r) => r.cp.controllers.leading)!;
  const follower = [a, b].find((r) => !r.cp.controllers.leading)!;
  assert.ok(leader && follower, "one replica leads, the other follows");
  const nodeId = await until(async () => (await follower.nodes.listNodes({})).nodes.find((n) => n.hostname === agent.name && n.status?.phase === Phase.READY)?.id, "the agent's node READY");
  const spec = { cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot: { directBoot: { kernelPath: kernel, cmdline: "console=ttyS0" } } };
  const vm = await follower.vms.createVM({ name: "follower-served", spec, nodeId });
  assert.equal((await follower.vms.startVM({ id: vm.id }, { timeoutMs: 10_000 })).status?.state, State.RUNNING);
  assert.equal((await follower.vms.stopVM({ id: vm.id, force: true }, { timeoutMs: 10_000 })).status?.state, State.STOPPED);
  await follower.vms.deleteVM({ id: vm.id }, { timeoutMs: 10_000 });
  assert.equal(follower.cp.vmController.controller.reconciles, 0, "the follower's VM controller never ran a pass");
  assert.ok(leader.cp.vmController.controller.reconciles > 0, "the leader's did the work");
  assert.equal(await agent.backend.getVMInfo(vm.id).then(() => "present", () => "absent"), "absent", "the guest is gone from the node");
});
