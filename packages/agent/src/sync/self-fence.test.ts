import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { create } from "@bufbuild/protobuf";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VmStatus_State as State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { VmConfigSchema } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { HA_METADATA_KEY } from "@quantix/core";
import { silentLogger } from "@quantix/rpc";
import { startTestServer, until, TestAgent } from "@quantix/testing";
import { SimulatedBackend } from "../backends/simulated/simulated-backend.js";
import { pastFenceDeadline, SelfFence, selfFenceAfterMs } from "./self-fence.js";

test("the self-fence deadline is strictly before lost-after, with room for the check and the power-off", () => {
  assert.equal(selfFenceAfterMs(300), 240_000);
  assert.equal(selfFenceAfterMs(30), 24_000);
  assert.equal(selfFenceAfterMs(2), 1000);
  assert.equal(selfFenceAfterMs(1), 500);
});

test("an agent cut off from the control plane powers off its HA VMs before the control plane declares the node lost; others keep running", async () => {
  const lostAfterSec = 2;
  const s = await startTestServer({ demo: false, nodeLostAfterSec: lostAfterSec });
  const dir = await mkdtemp(join(tmpdir(), "quantix-self-fence-"));
  const backend = new SimulatedBackend({ bootMs: 20, consoleIntervalMs: 50 });
  const agent = new TestAgent(backend, dir, `self-fence-${process.pid}`, 100);
  let cpOpen = true;
  try {
    await agent.start(s.url);
    const kernelPath = await agent.image("vmlinuz");
    const nodeId = await until(async () => {
      const n = (await s.nodes.listNodes({})).nodes.find((x) => x.hostname === agent.name);
      return n?.status?.phase === Phase.READY && s.cp.agents?.get(n.id) ? n.id : undefined;
    }, "the agent's node READY and attached");
    const spec = (ha: boolean) => ({ cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot: { directBoot: { kernelPath } }, haPolicy: { enabled: ha } });
    const ha = await s.vms.createVM({ name: "fenced-ha", spec: spec(true), nodeId, startOnCreate: true });
    const plain = await s.vms.createVM({ name: "fenced-plain", spec: spec(false), nodeId, startOnCreate: true });
    for (const vm of [ha, plain]) await until(async () => ((await s.vms.getVM({ id: vm.id })).status?.state === State.RUNNING ? true : undefined), `${vm.name} RUNNING`);
    assert.equal((await agent.manager.info(ha.id)).config.metadata[HA_METADATA_KEY], "1");
    assert.equal((await agent.manager.info(plain.id)).config.metadata[HA_METADATA_KEY], undefined);

    // The control plane goes away. It received a heartbeat no earlier than this, so it
    // would declare the node lost no earlier than this plus lost-after.
    const lastHeard = timestampMs((await s.nodes.getNode({ id: nodeId })).status!.lastHeartbeat!);
    await s.close();
    cpOpen = false;
    await until(async () => ((await agent.manager.info(ha.id)).state === "shutdown" ? true : undefined), "the HA VM powered off by the agent", 10_000, 20);
    const fencedBy = Date.now();
    assert.ok(fencedBy < lastHeard + lostAfterSec * 1000, `fenced ${fencedBy - lastHeard} ms after the last heartbeat; the node is lost at ${lostAfterSec * 1000} ms`);
    assert.equal((await agent.manager.info(plain.id)).state, "running", "a VM without HA is never restarted elsewhere, so it keeps running");
  } finally {
    await agent.kill().catch(() => undefined);
    if (cpOpen) await s.close();
    await backend.close();
    await rm(dir, { recursive: true, force: true });
  }
});

test("an agent restarted after its deadline fences at once, from what it persisted", async () => {
  const dir = await mkdtemp(join(tmpdir(), "quantix-self-fence-"));
  const off: string[] = [];
  const vm = (vmId: string, ha: boolean) => ({ vmId, state: "running" as const, config: create(VmConfigSchema, { metadata: ha ? { [HA_METADATA_KEY]: "1" } : {} }) });
  const target = {
    list: async () => [vm("a", true), vm("b", false)] as never,
    powerOff: async (id: string) => void off.push(id),
    // The host's routers go too (the control plane moves them to another network node).
    dropRouters: async () => {
      off.push("routers");
      return ["r1"];
    },
  };
  try {
    await writeFile(join(dir, "self-fence.json"), JSON.stringify({ lostAfterSec: 60, lastAnsweredMs: Date.now() - 50_000 }));
    const fence = new SelfFence({ target, stateDir: dir, log: silentLogger, checkMs: 60_000 });
    await fence.start();
    fence.stop();
    assert.deepEqual(off, ["a", "routers"]);

    assert.equal(await pastFenceDeadline(dir), true, "what the routers ask before they come back at start");

    // Within the deadline nothing is touched.
    off.length = 0;
    await writeFile(join(dir, "self-fence.json"), JSON.stringify({ lostAfterSec: 60, lastAnsweredMs: Date.now() - 10_000 }));
    const fresh = new SelfFence({ target, stateDir: dir, log: silentLogger, checkMs: 60_000 });
    await fresh.start();
    fresh.stop();
    assert.deepEqual(off, []);
    assert.equal(await pastFenceDeadline(dir), false);
    assert.equal(await pastFenceDeadline(join(dir, "never-heard")), false, "nothing heard yet: no deadline");
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
