import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ConditionStatus } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { NodeSchema, NodeStatusSchema, NodeStatus_Phase as Phase, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { TaintEffect, TolerationOperator, VmStatus_State as State, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { demandOf, NODE_KIND } from "@quantix/core";
import { startTestServer, until, type TestServer } from "@quantix/testing";
import { withCapacity } from "../services/node-service.js";
import { MemoryStore } from "../store/memory-store.js";

// The scheduler through the API, over simulated nodes: explanations, placement when
// capacity appears, no overcommit under 200 concurrent creates, taints and affinity.

interface NodeShape {
  readonly id: string;
  readonly cpus: number;
  readonly memMib: number;
  readonly cpuRatio?: number;
  readonly memRatio?: number;
  readonly reservedMib?: number;
  readonly schedulable?: boolean;
  readonly labels?: Record<string, string>;
}

/** A simulated node as a registered, heartbeating agent would leave it. */
function simNode(n: NodeShape): Node {
  const node = create(NodeSchema, {
    id: n.id,
    hostname: `sched-${n.id.slice(-4)}`,
    managementIp: "192.0.2.20",
    labels: n.labels ?? {},
    spec: {
      cpu: { logicalCpus: n.cpus },
      memory: { totalMib: BigInt(n.memMib) },
      schedulable: n.schedulable ?? true,
      overcommit: { cpuRatio: n.cpuRatio ?? 0, memoryRatio: n.memRatio ?? 0 },
      reserved: { memoryMib: BigInt(n.reservedMib ?? 0) },
    },
    status: { phase: Phase.READY, hypervisor: { type: "simulated", capabilities: ["pause", "reboot"] } },
    createdAt: timestampFromMs(Date.now()),
  });
  node.status = withCapacity(node.status ?? create(NodeStatusSchema), node.spec!);
  return node;
}

const nodeId = (i: number) => `00000000-0000-0000-00aa-00000000000${i}`;

async function serverWith(nodes: NodeShape[]): Promise<TestServer> {
  const store = new MemoryStore({ limits: { historySize: 100_000, maxBacklog: 100_000 } });
  for (const n of nodes) await store.of(NODE_KIND).create(simNode(n));
  return startTestServer({ demo: false }, store);
}

const scheduled = (vm: VirtualMachine | undefined) => vm?.status?.conditions.find((c) => c.type === "Scheduled");
const spec = (cores: number, sizeMib: number, placement: object = {}) => ({ cpu: { cores }, memory: { sizeMib: BigInt(sizeMib) }, placement });

describe("a VM that fits nowhere", () => {
  let s: TestServer;
  before(async () => {
    s = await serverWith([
      { id: nodeId(1), cpus: 4, memMib: 2048 },
      { id: nodeId(2), cpus: 4, memMib: 4096 },
      { id: nodeId(3), cpus: 16, memMib: 16_384, schedulable: false },
    ]);
  });
  after(() => s.close());

  it("stays PENDING with a condition explaining each reason, and is placed when a node is enabled", async () => {
    const vm = await s.vms.createVM({ name: "too-big", spec: spec(2, 8192), startOnCreate: true });
    const pending = await until(async () => {
      const cur = await s.vms.getVM({ id: vm.id });
      return scheduled(cur)?.reason === "Unschedulable" ? cur : undefined;
    }, "Scheduled=False");
    assert.equal(pending.status?.state, State.PENDING);
    assert.equal(pending.status?.nodeId, "");
    const cond = scheduled(pending)!;
    assert.equal(cond.status, ConditionStatus.FALSE);
    assert.equal(cond.message, "0/3 nodes fit: 2 insufficient memory (need 8192 MiB, largest free 4096 MiB), 1 not schedulable");

    await s.nodes.enableNode({ id: nodeId(3) });
    const placed = await until(async () => {
      const cur = await s.vms.getVM({ id: vm.id });
      return cur.status?.state === State.RUNNING ? cur : undefined;
    }, "placed and running after EnableNode");
    assert.equal(placed.status?.nodeId, nodeId(3));
    assert.equal(scheduled(placed)?.status, ConditionStatus.TRUE);
    assert.equal(scheduled(placed)?.reason, "Placed");
  });

  it("waits on a NoSchedule taint, is placed once tolerated taints are all that is left, and NoExecute marks VMs Evicting", async () => {
    for (const i of [1, 2, 3]) await s.nodes.updateNode({ id: nodeId(i), spec: { taints: [{ key: "maintenance", effect: TaintEffect.NO_SCHEDULE }] }, updateMask: { paths: ["spec.taints"] } });
    const plain = await s.vms.createVM({ name: "plain", spec: spec(1, 256), startOnCreate: true });
    const tolerant = await s.vms.createVM({
      name: "tolerant",
      spec: spec(1, 256, { tolerations: [{ key: "maintenance", operator: TolerationOperator.EXISTS }] }),
      startOnCreate: true,
    });
    await until(async () => ((await s.vms.getVM({ id: tolerant.id })).status?.nodeId ? true : undefined), "the tolerant VM is placed");
    const waiting = await until(async () => {
      const cur = await s.vms.getVM({ id: plain.id });
      return scheduled(cur)?.reason === "Unschedulable" ? cur : undefined;
    }, "the plain VM waits");
    assert.equal(scheduled(waiting)?.message, "0/3 nodes fit: 3 tainted maintenance:NoSchedule");

    // NoExecute on the tolerant VM's node: it tolerates only "maintenance", so it is marked.
    const host = (await s.vms.getVM({ id: tolerant.id })).status!.nodeId;
    await s.nodes.updateNode({ id: host, spec: { taints: [{ key: "maintenance", effect: TaintEffect.NO_SCHEDULE }, { key: "disk", value: "failing", effect: TaintEffect.NO_EXECUTE }] }, updateMask: { paths: ["spec.taints"] } });
    const marked = await until(async () => {
      const cur = await s.vms.getVM({ id: tolerant.id });
      return cur.status?.conditions.find((c) => c.type === "Evicting") ? cur : undefined;
    }, "Evicting condition");
    assert.match(marked.status!.conditions.find((c) => c.type === "Evicting")!.message, /disk=failing:NoExecute/);

    for (const i of [1, 2, 3]) await s.nodes.updateNode({ id: nodeId(i), spec: { taints: [] }, updateMask: { paths: ["spec.taints"] } });
    await until(async () => ((await s.vms.getVM({ id: plain.id })).status?.state === State.RUNNING ? true : undefined), "the plain VM runs once untainted");
    await until(async () => ((await s.vms.getVM({ id: tolerant.id })).status?.conditions.some((c) => c.type === "Evicting") ? undefined : true), "Evicting removed with the taint");
  });

  it("hard anti-affinity puts each VM of a group on its own node, and the next one waits", async () => {
    const anti = { affinity: [{ selector: { matchLabels: { group: "spread-me" } }, anti: true, required: true }] };
    const created = await Promise.all([1, 2, 3, 4].map((i) => s.vms.createVM({ name: `anti-${i}`, labels: { group: "spread-me" }, spec: spec(1, 256, anti), startOnCreate: true })));
    const vms = await until(async () => {
      const all = await Promise.all(created.map((v) => s.vms.getVM({ id: v.id })));
      return all.filter((v) => v.status?.nodeId).length === 3 && all.some((v) => scheduled(v)?.reason === "Unschedulable") ? all : undefined;
    }, "three placed, one waiting");
    const hosts = vms.map((v) => v.status?.nodeId).filter(Boolean);
    assert.equal(new Set(hosts).size, 3, "one per node");
    const waiting = vms.find((v) => !v.status?.nodeId)!;
    assert.equal(scheduled(waiting)?.message, "0/3 nodes fit: 3 VM anti-affinity (a matching VM is there)");
  });
});

describe("200 concurrent creates over 3 simulated nodes", () => {
  // Per node: 8 logical CPUs × 2 = 16 vCPUs; 4096 MiB × 1.5 − 1024 reserved = 5120 MiB.
  const shapes: NodeShape[] = [1, 2, 3].map((i) => ({ id: nodeId(i), cpus: 8, memMib: 4096, cpuRatio: 2, memRatio: 1.5, reservedMib: 1024 }));
  let s: TestServer;
  before(async () => {
    s = await serverWith(shapes);
  });
  after(() => s.close());

  it("never overcommit a node, fill every node, and place waiting VMs when VMs are deleted", async () => {
    // Mixed sizes so that memory binds on some nodes and CPU on others.
    const created = await Promise.all(
      Array.from({ length: 200 }, (_, i) => s.vms.createVM({ name: `burst-${i}`, spec: spec(1 + (i % 2), 256 * (1 + (i % 3))), startOnCreate: true })),
    );
    const settle = async () => {
      await until(async () => {
        const all = await Promise.all(created.map((v) => s.vms.getVM({ id: v.id }).catch(() => undefined)));
        return all.every((v) => !v || v.status?.nodeId || scheduled(v)?.reason === "Unschedulable") ? true : undefined;
      }, "every VM placed or explained", 30_000, 100);
      return (await s.vms.listVMs({ pageSize: 1000 })).vms;
    };
    const check = (vms: VirtualMachine[]) => {
      for (const shape of shapes) {
        const on = vms.filter((v) => v.status?.nodeId === shape.id).map((v) => demandOf(v.spec));
        const cpu = on.reduce((a, d) => a + d.vcpus, 0);
        const mem = on.reduce((a, d) => a + d.memoryMib, 0);
        assert.ok(cpu <= shape.cpus * shape.cpuRatio!, `node ${shape.id}: ${cpu} vCPUs > ${shape.cpus * shape.cpuRatio!}`);
        assert.ok(mem <= shape.memMib * shape.memRatio! - shape.reservedMib!, `node ${shape.id}: ${mem} MiB > 5120`);
        // Full: no waiting VM of the smallest size (1 vCPU, 256 MiB) would still fit.
        assert.ok(cpu + 1 > 16 || mem + 256 > 5120, `node ${shape.id} has room left (${cpu} vCPUs, ${mem} MiB) while VMs wait`);
      }
      return vms.filter((v) => v.status?.nodeId);
    };
    const placed = check(await settle());
    assert.ok(placed.length > 10 && placed.length < 200, `placed ${placed.length}`);

    const gone = placed.slice(0, 5);
    await Promise.all(gone.map((v) => s.vms.deleteVM({ id: v.id, force: true })));
    const after = check(await settle());
    assert.ok(after.some((v) => !placed.some((p) => p.id === v.id)), "a waiting VM took the freed capacity");
  });
});

describe("CreateVM with node_id", () => {
  let s: TestServer;
  before(async () => {
    s = await serverWith([
      { id: nodeId(1), cpus: 4, memMib: 2048 },
      { id: nodeId(2), cpus: 16, memMib: 16_384, schedulable: false },
      { id: nodeId(3), cpus: 16, memMib: 16_384 },
    ]);
    await s.nodes.updateNode({ id: nodeId(3), spec: { taints: [{ key: "maintenance", effect: TaintEffect.NO_SCHEDULE }] }, updateMask: { paths: ["spec.taints"] } });
  });
  after(() => s.close());

  const pendingWith = (id: string, what: string) =>
    until(async () => {
      const cur = await s.vms.getVM({ id });
      return scheduled(cur)?.reason === "Unschedulable" ? cur : undefined;
    }, what);

  it("pins through the scheduler: a full node takes only what fits, the rest waits with the explanation", async () => {
    const created = await Promise.all([1, 2, 3].map((i) => s.vms.createVM({ name: `pinned-${i}`, spec: spec(1, 1024), nodeId: nodeId(1), startOnCreate: true })));
    for (const vm of created) {
      assert.equal(vm.status?.nodeId, "", "no node before the scheduler");
      assert.deepEqual(vm.spec?.placement?.requiredNodeIds, [nodeId(1)]);
    }
    const vms = await until(async () => {
      const all = await Promise.all(created.map((v) => s.vms.getVM({ id: v.id })));
      return all.filter((v) => v.status?.nodeId === nodeId(1)).length === 2 && all.some((v) => scheduled(v)?.reason === "Unschedulable") ? all : undefined;
    }, "two placed on the pinned node, one waiting");
    const waiting = vms.find((v) => !v.status?.nodeId)!;
    assert.equal(waiting.status?.state, State.PENDING);
    assert.match(scheduled(waiting)!.message, /insufficient memory/);
    await Promise.all(created.map((v) => s.vms.deleteVM({ id: v.id, force: true })));
  });

  it("a pin to an unschedulable or tainted node leaves the VM PENDING, saying why", async () => {
    const off = await s.vms.createVM({ name: "pinned-off", spec: spec(1, 256), nodeId: nodeId(2), startOnCreate: true });
    assert.match(scheduled(await pendingWith(off.id, "pinned to a disabled node"))!.message, /1 not schedulable/);
    const tainted = await s.vms.createVM({ name: "pinned-tainted", spec: spec(1, 256), nodeId: nodeId(3), startOnCreate: true });
    assert.match(scheduled(await pendingWith(tainted.id, "pinned to a tainted node"))!.message, /1 tainted maintenance:NoSchedule/);
    assert.equal((await s.vms.getVM({ id: tainted.id })).status?.nodeId, "");
    await s.nodes.enableNode({ id: nodeId(2) });
    await until(async () => ((await s.vms.getVM({ id: off.id })).status?.nodeId === nodeId(2) ? true : undefined), "placed once its node is enabled");
  });

  it("refuses a node_id that contradicts spec.placement.required_node_ids", async () => {
    const err = await s.vms.createVM({ name: "pinned-twice", spec: spec(1, 256, { requiredNodeIds: [nodeId(3)] }), nodeId: nodeId(1) }).then(
      () => undefined,
      (e: unknown) => e,
    );
    assert.match(String(err), /node_id/);
  });
});

describe("resizing or re-pinning a stopped VM", () => {
  let s: TestServer;
  before(async () => {
    s = await serverWith([
      { id: nodeId(1), cpus: 4, memMib: 2048 },
      { id: nodeId(2), cpus: 16, memMib: 16_384 },
    ]);
  });
  after(() => s.close());

  const runningOn = (id: string, what: string) =>
    until(async () => ((vm) => (vm.status?.state === State.RUNNING ? vm.status.nodeId : undefined))(await s.vms.getVM({ id })), what);

  it("gives up its node, so starting it never overcommits the node it was on", async () => {
    const prefer1 = { preferredNodeIds: [nodeId(1)] };
    const big = await s.vms.createVM({ name: "grows", spec: spec(1, 1024, prefer1), startOnCreate: true });
    assert.equal(await runningOn(big.id, "grows on node 1"), nodeId(1));
    await s.vms.stopVM({ id: big.id, force: true });
    const other = await s.vms.createVM({ name: "neighbour", spec: spec(1, 1024, prefer1), startOnCreate: true });
    assert.equal(await runningOn(other.id, "the neighbour on node 1"), nodeId(1));

    // 2048 MiB no longer fits beside the neighbour on node 1 (2048 MiB in all).
    const resized = await s.vms.updateVM({ id: big.id, spec: spec(1, 2048, prefer1), updateMask: { paths: ["spec.memory"] } });
    assert.equal(resized.status?.nodeId, "", "the node is given up");
    await s.vms.startVM({ id: big.id });
    assert.equal(await runningOn(big.id, "the resized VM running"), nodeId(2));

    // A stopped VM re-pinned away from its node gives it up too; a label change keeps it.
    await s.vms.stopVM({ id: other.id, force: true });
    const relabelled = await s.vms.updateVM({ id: other.id, labels: { tier: "web" }, updateMask: { paths: ["labels"] } });
    assert.equal(relabelled.status?.nodeId, nodeId(1));
    const repinned = await s.vms.updateVM({ id: other.id, spec: spec(1, 1024, { requiredNodeIds: [nodeId(2)] }), updateMask: { paths: ["spec.placement"] } });
    assert.equal(repinned.status?.nodeId, "");
    await s.vms.startVM({ id: other.id });
    assert.equal(await runningOn(other.id, "the re-pinned VM running"), nodeId(2));
  });
});
