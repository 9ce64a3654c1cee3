import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { LabelOperator } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { NodeStatus_Phase, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { ProvisioningConfigSchema, TaintEffect, TolerationOperator } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { ClusterState, type SchedulableVm } from "./cluster.js";
import { schedule, type Placement } from "./schedule.js";
import type { ScoringStrategy } from "./scores.js";
import { testNode as node, testVm as vm } from "./test-fixtures.js";

/** Schedules `v` on `nodes` where `placed` VMs already run (vm, nodeId). */
function run(v: SchedulableVm, nodes: Node[], placed: [SchedulableVm, string][] = [], strategy: ScoringStrategy = "spread", isConnected?: (id: string) => boolean): Placement {
  const cluster = new ClusterState(nodes);
  for (const [p, id] of placed) cluster.assign(p, id);
  return schedule(v, cluster, { strategy, isConnected });
}

const web = (id: string) => vm(id, { labels: { app: "web" } });
/** `v` with cloud-init data, which only a node declaring "cloud-init" can serve. */
const withCloudInit = (v: SchedulableVm): SchedulableVm => (v.spec!.provisioning = create(ProvisioningConfigSchema, { cloudInit: { userData: "#cloud-config\n" } }), v);

describe("scheduler filters: each rejects exactly its case and explains it", () => {
  const cases: { name: string; v: SchedulableVm; nodes: Node[]; placed?: [SchedulableVm, string][]; connected?: (id: string) => boolean; want: string }[] = [
    { name: "not ready", v: vm("v"), nodes: [node("a", { phase: NodeStatus_Phase.NOT_READY })], want: "0/1 nodes fit: 1 not ready (NOT_READY)" },
    { name: "offline", v: vm("v"), nodes: [node("a", { phase: NodeStatus_Phase.OFFLINE })], want: "0/1 nodes fit: 1 not ready (OFFLINE)" },
    { name: "disabled", v: vm("v"), nodes: [node("a", { schedulable: false })], want: "0/1 nodes fit: 1 not schedulable" },
    { name: "not connected", v: vm("v"), nodes: [node("a")], connected: () => false, want: "0/1 nodes fit: 1 no connected hypervisor" },
    { name: "required ids", v: vm("v", { placement: { requiredNodeIds: ["b"] } }), nodes: [node("a")], want: "0/1 nodes fit: 1 not in required_node_ids" },
    { name: "excluded ids", v: vm("v", { placement: { excludedNodeIds: ["a"] } }), nodes: [node("a")], want: "0/1 nodes fit: 1 in excluded_node_ids" },
    { name: "node selector", v: vm("v", { placement: { nodeSelector: { zone: "b" } } }), nodes: [node("a", { labels: { zone: "a" } })], want: "0/1 nodes fit: 1 node_selector does not match" },
    { name: "capability", v: vm("v", { placement: { requiredCapabilities: ["live-migration"] } }), nodes: [node("a", { caps: ["pause"] })], want: "0/1 nodes fit: 1 missing capability 'live-migration'" },
    { name: "implied capability", v: withCloudInit(vm("v")), nodes: [node("a", { caps: ["pause", "suspend"] })], want: "0/1 nodes fit: 1 missing capability 'cloud-init'" },
    { name: "NoSchedule taint", v: vm("v"), nodes: [node("a", { taints: [{ key: "maintenance", effect: TaintEffect.NO_SCHEDULE }] })], want: "0/1 nodes fit: 1 tainted maintenance:NoSchedule" },
    { name: "NoExecute taint", v: vm("v"), nodes: [node("a", { taints: [{ key: "gpu", value: "broken", effect: TaintEffect.NO_EXECUTE }] })], want: "0/1 nodes fit: 1 tainted gpu=broken:NoExecute" },
    {
      name: "toleration for another value",
      v: vm("v", { placement: { tolerations: [{ key: "gpu", value: "ok" }] } }),
      nodes: [node("a", { taints: [{ key: "gpu", value: "broken", effect: TaintEffect.NO_SCHEDULE }] })],
      want: "0/1 nodes fit: 1 tainted gpu=broken:NoSchedule",
    },
    {
      name: "toleration for another effect",
      v: vm("v", { placement: { tolerations: [{ key: "gpu", operator: TolerationOperator.EXISTS, effect: TaintEffect.NO_SCHEDULE }] } }),
      nodes: [node("a", { taints: [{ key: "gpu", effect: TaintEffect.NO_EXECUTE }] })],
      want: "0/1 nodes fit: 1 tainted gpu:NoExecute",
    },
    { name: "memory", v: vm("v", { memMib: 8192 }), nodes: [node("a", { memMib: 4096 })], want: "0/1 nodes fit: 1 insufficient memory (need 8192 MiB, largest free 4096 MiB)" },
    { name: "memory given out", v: vm("v", { memMib: 4096 }), nodes: [node("a", { memMib: 6144 })], placed: [[vm("x", { memMib: 3072 }), "a"]], want: "0/1 nodes fit: 1 insufficient memory (need 4096 MiB, largest free 3072 MiB)" },
    { name: "cpu", v: vm("v", { vcpus: 4 }), nodes: [node("a", { vcpus: 2 })], want: "0/1 nodes fit: 1 insufficient CPU (need 4 vCPUs, largest free 2)" },
    {
      name: "hard anti-affinity",
      v: vm("v", { placement: { affinity: [{ selector: { matchLabels: { app: "web" } }, anti: true, required: true }] } }),
      nodes: [node("a")],
      placed: [[web("w1"), "a"]],
      want: "0/1 nodes fit: 1 VM anti-affinity (a matching VM is there)",
    },
    {
      name: "hard affinity",
      v: vm("v", { placement: { affinity: [{ selector: { matchLabels: { app: "web" } }, required: true }] } }),
      nodes: [node("a"), node("b")],
      placed: [[web("w1"), "b"]],
      want: "", // placed on b, the only node hosting a web VM
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const got = run(c.v, c.nodes, c.placed, "spread", c.connected);
      if (c.want === "") assert.deepEqual(got, { ok: true, nodeId: "b" });
      else assert.deepEqual(got, { ok: false, reason: "Unschedulable", message: c.want });
    });
  }

  it("a node that passes every filter is chosen, with every filter active", () => {
    const v = vm("v", {
      vcpus: 2,
      memMib: 2048,
      labels: { app: "db" },
      placement: {
        nodeSelector: { zone: "a" },
        requiredNodeIds: ["a", "b"],
        excludedNodeIds: ["c"],
        requiredCapabilities: ["live-migration"],
        tolerations: [{ key: "maintenance", operator: TolerationOperator.EXISTS }],
        affinity: [{ selector: { matchExpressions: [{ key: "app", operator: LabelOperator.IN, values: ["db"] }] }, anti: true, required: true }],
      },
    });
    const nodes = [node("a", { labels: { zone: "a" }, caps: ["live-migration"], taints: [{ key: "maintenance", effect: TaintEffect.NO_SCHEDULE }] }), node("b", { labels: { zone: "a" }, caps: ["live-migration"] })];
    assert.deepEqual(run(v, nodes, [[vm("d1", { labels: { app: "db" } }), "b"]]), { ok: true, nodeId: "a" });
  });

  it("hard affinity lets a group's first VM go anywhere, and a VM never matches itself", () => {
    const v = vm("w1", { labels: { app: "web" }, placement: { affinity: [{ selector: { matchLabels: { app: "web" } }, required: true }] } });
    assert.deepEqual(run(v, [node("a"), node("b")]), { ok: true, nodeId: "a" });
  });

  it("PreferNoSchedule keeps VMs off a node while another fits, and allows it when none does", () => {
    const pref = node("a", { memMib: 65_536, taints: [{ key: "old", effect: TaintEffect.PREFER_NO_SCHEDULE }] });
    assert.deepEqual(run(vm("v"), [pref, node("b", { memMib: 2048 })]), { ok: true, nodeId: "b" });
    assert.deepEqual(run(vm("v", { memMib: 4096 }), [pref, node("b", { memMib: 2048 })]), { ok: true, nodeId: "a" });
  });
});

describe("scheduler explanation", () => {
  it("groups reasons, most common first, with the largest free memory", () => {
    const nodes = [node("a", { memMib: 4096 }), node("b", { memMib: 2048 }), node("c", { taints: [{ key: "maintenance", effect: TaintEffect.NO_SCHEDULE }] })];
    assert.deepEqual(run(vm("v", { memMib: 8192 }), nodes), {
      ok: false,
      reason: "Unschedulable",
      message: "0/3 nodes fit: 2 insufficient memory (need 8192 MiB, largest free 4096 MiB), 1 tainted maintenance:NoSchedule",
    });
  });

  it("says when there are no nodes at all", () => {
    assert.deepEqual(run(vm("v"), []), { ok: false, reason: "Unschedulable", message: "0/0 nodes fit: there are no nodes" });
  });

  it("orders equal counts alphabetically", () => {
    const nodes = [node("a", { schedulable: false }), node("b", { vcpus: 0 }), node("c", { phase: NodeStatus_Phase.PENDING })];
    assert.equal((run(vm("v"), nodes) as { message: string }).message, "0/3 nodes fit: 1 insufficient CPU (need 1 vCPU, largest free 0), 1 not ready (PENDING), 1 not schedulable");
  });
});

describe("scheduler scores", () => {
  // a (8 vCPUs, 16 GiB) has 4 vCPUs and 2 GiB out; b (same size) 2 vCPUs and 12 GiB; c (4 vCPUs, 4 GiB) 3 and 3 GiB.
  // With a 1-vCPU 1-GiB VM the fractions used become a 5/8, 3/16; b 3/8, 13/16; c 4/4, 4/4.
  const nodes = [node("a"), node("b"), node("c", { vcpus: 4, memMib: 4096 })];
  const placed: [SchedulableVm, string][] = [
    [vm("x", { vcpus: 4, memMib: 2048 }), "a"],
    [vm("y", { vcpus: 2, memMib: 12_288 }), "b"],
    [vm("z", { vcpus: 3, memMib: 3072 }), "c"],
  ];
  const cases: { strategy: ScoringStrategy; want: string; why: string }[] = [
    { strategy: "spread", want: "a", why: "a is left with the most free on average" },
    { strategy: "pack", want: "c", why: "c is the fullest afterwards" },
    { strategy: "balanced", want: "c", why: "only c's CPU and memory fractions stay equal" },
  ];
  for (const c of cases) {
    it(`${c.strategy}: ${c.why}`, () => assert.deepEqual(run(vm("v", { vcpus: 1, memMib: 1024 }), nodes, placed, c.strategy), { ok: true, nodeId: c.want }));
  }

  it("ties break by node id", () => {
    assert.deepEqual(run(vm("v"), [node("n2"), node("n1"), node("n3")]), { ok: true, nodeId: "n1" });
  });

  it("a preferred node wins over the strategy's choice", () => {
    const v = vm("v", { placement: { preferredNodeIds: ["b"] } });
    assert.deepEqual(run(v, [node("a", { memMib: 65_536 }), node("b", { memMib: 2048 })]), { ok: true, nodeId: "b" });
  });

  it("soft affinity and anti-affinity move VMs by weight", () => {
    const near = vm("v", { placement: { affinity: [{ selector: { matchLabels: { app: "web" } }, weight: 100 }] } });
    const far = vm("v", { placement: { affinity: [{ selector: { matchLabels: { app: "web" } }, anti: true, weight: 100 }] } });
    const twoNodes = [node("a"), node("b")];
    // Each layout makes spread alone prefer the other node, so only the rule can win.
    assert.deepEqual(run(vm("v"), twoNodes, [[web("w"), "b"]]), { ok: true, nodeId: "a" });
    assert.deepEqual(run(near, twoNodes, [[web("w"), "b"]]), { ok: true, nodeId: "b" });
    const webOnEmptierA: [SchedulableVm, string][] = [[web("w"), "a"], [vm("filler", { vcpus: 6, memMib: 12_288 }), "b"]];
    assert.deepEqual(run(vm("v"), twoNodes, webOnEmptierA), { ok: true, nodeId: "a" });
    assert.deepEqual(run(far, twoNodes, webOnEmptierA), { ok: true, nodeId: "b" });
    // Soft rules never filter: with one node, the VM still goes there.
    assert.deepEqual(run(far, [node("a")], [[web("w"), "a"]]), { ok: true, nodeId: "a" });
  });
});
