import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { LabelOperator, type LabelSelectorSchema } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { NodeStatus_Phase, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { TaintEffect, TolerationOperator, VmSpecSchema, type VmAffinityRuleSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { ClusterState, type SchedulableVm } from "./cluster.js";
import { fastFit } from "./fast-fit.js";
import { PORT_NIC_CAPABILITIES } from "./filters.js";
import { schedule } from "./schedule.js";
import { SCORING_STRATEGIES, type ScoringStrategy } from "./scores.js";
import { NaiveCluster, referenceSchedule } from "./test-reference.js";
import { testNode } from "./test-fixtures.js";

/** mulberry32: a small seeded generator, so every run sees the same clusters. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const some = <T>(xs: readonly T[], p: number): T[] => xs.filter(() => next() < p);
  return { next, int, pick, some, chance: (p: number) => next() < p };
}
type Rng = ReturnType<typeof rng>;

const CAPS = ["pause", "live-migration", "cloud-init", ...PORT_NIC_CAPABILITIES];
const TAINTS = [
  { key: "dedicated", value: "db", effect: TaintEffect.NO_SCHEDULE },
  { key: "old-hw", effect: TaintEffect.PREFER_NO_SCHEDULE },
  { key: "flaky", value: "yes", effect: TaintEffect.PREFER_NO_SCHEDULE },
  { key: "maintenance", effect: TaintEffect.NO_EXECUTE },
  { key: "unset", effect: TaintEffect.UNSPECIFIED },
];

function randomNode(r: Rng, id: string, big = false): Node {
  return testNode(id, {
    vcpus: big ? r.pick([64, 128]) : r.pick([0, 2, 4, 8, 16, 16]),
    memMib: big ? r.pick([262_144, 524_288]) : r.pick([0, 2048, 4096, 8192, 16_384, 16_384]),
    phase: r.chance(0.1) ? r.pick([NodeStatus_Phase.NOT_READY, NodeStatus_Phase.OFFLINE, NodeStatus_Phase.PENDING]) : NodeStatus_Phase.READY,
    schedulable: !r.chance(0.08),
    labels: { zone: r.pick(["a", "b", "c"]), ...(r.chance(0.3) ? { rack: r.pick(["r1", "r2"]) } : {}), ...(r.chance(0.1) ? { gpu: "yes" } : {}) },
    taints: r.chance(0.35) ? r.some(TAINTS, 0.3) : [],
    caps: r.some(CAPS, 0.7),
  });
}

const LABEL_KEYS = ["app", "tier", "team"];
const LABEL_VALUES = ["web", "db", "cache", "t1", "t2"];

function randomSelector(r: Rng): MessageInitShape<typeof LabelSelectorSchema> | undefined {
  switch (r.int(8)) {
    case 0:
      return undefined;
    case 1:
      return {};
    case 2:
      return { matchLabels: { [r.pick(LABEL_KEYS)]: r.pick(LABEL_VALUES), [r.pick(LABEL_KEYS)]: r.pick(LABEL_VALUES) } };
    case 3:
    case 4:
      return { matchLabels: { [r.pick(LABEL_KEYS)]: r.pick(LABEL_VALUES) } };
    default: {
      const operator = r.pick([LabelOperator.IN, LabelOperator.NOT_IN, LabelOperator.EXISTS, LabelOperator.DOES_NOT_EXIST, LabelOperator.IN]);
      const values = operator === LabelOperator.IN || operator === LabelOperator.NOT_IN ? r.some(LABEL_VALUES, 0.4) : [];
      return { matchLabels: r.chance(0.3) ? { [r.pick(LABEL_KEYS)]: r.pick(LABEL_VALUES) } : {}, matchExpressions: [{ key: r.pick(LABEL_KEYS), operator, values }] };
    }
  }
}

function randomVm(r: Rng, id: string, nodeIds: readonly string[]): SchedulableVm {
  const someNodes = () => [...r.some(nodeIds, 0.05), ...(r.chance(0.2) ? ["no-such-node"] : [])];
  const affinity: MessageInitShape<typeof VmAffinityRuleSchema>[] = Array.from({ length: r.pick([0, 0, 1, 1, 2]) }, () => {
    const selector = randomSelector(r);
    return { ...(selector ? { selector } : {}), anti: r.chance(0.6), required: r.chance(0.5), weight: r.pick([0, 1, 10, 100]) };
  });
  // A group that selects itself (as spread groups do): the VM must never count as its own match.
  const group = r.chance(0.3) ? `g${r.int(6)}` : undefined;
  if (group) affinity.push({ selector: { matchLabels: { group } }, anti: r.chance(0.7), required: r.chance(0.6), weight: 50 });
  const spec = create(VmSpecSchema, {
    cpu: { cores: 1 + r.int(4), sockets: r.pick([0, 1, 1, 2]), threadsPerCore: 1 },
    memory: { sizeMib: BigInt(512 * (1 + r.int(8))) },
    placement: {
      nodeSelector: r.chance(0.25) ? { zone: r.pick(["a", "b", "c"]), ...(r.chance(0.2) ? { rack: "r1" } : {}) } : {},
      requiredNodeIds: r.chance(0.1) ? someNodes() : [],
      excludedNodeIds: r.chance(0.2) ? someNodes() : [],
      preferredNodeIds: r.chance(0.15) ? someNodes() : [],
      requiredCapabilities: r.chance(0.2) ? r.some(["pause", "live-migration"], 0.6) : [],
      tolerations: r.chance(0.3)
        ? [
            r.pick([
              { key: "dedicated", operator: TolerationOperator.EXISTS },
              { key: "dedicated", value: "db" },
              { key: "dedicated", value: "web" },
              { key: "old-hw", operator: TolerationOperator.EXISTS, effect: TaintEffect.PREFER_NO_SCHEDULE },
              { key: "maintenance", operator: TolerationOperator.EXISTS, effect: TaintEffect.NO_SCHEDULE },
              { operator: TolerationOperator.EXISTS },
              { key: "unset", operator: TolerationOperator.EXISTS },
            ]),
          ]
        : [],
      affinity,
    },
    ...(r.chance(0.1) ? { provisioning: { cloudInit: { userData: "#cloud-config\n" } } } : {}),
    ...(r.chance(0.1) ? { nics: [{ portId: "port-1" }] } : {}),
  });
  const labels: Record<string, string> = {};
  for (const k of LABEL_KEYS) if (r.chance(0.5)) labels[k] = r.pick(LABEL_VALUES);
  if (group) labels["group"] = group;
  return { id, labels, spec, ...(r.chance(0.1) ? { volumeNodeIds: someNodes() } : {}) };
}

/**
 * Runs one randomized cluster through the indexed scheduler and the reference side by
 * side: new VMs placed, VMs taken off, placed VMs asked about again (as the controller's
 * fits() does), nodes changed, added and removed. Every answer must be the same, node
 * and explanation alike. Returns how many placements and refusals were compared.
 */
function compareRun(seed: number, strategy: ScoringStrategy, steps: number, big = false): { placed: number; refused: number } {
  const r = rng(seed);
  let serial = 0;
  const newNodeId = () => `n-${(r.int(1e6) + serial++).toString(36)}`;
  const nodes = Array.from({ length: big ? 150 : 30 + r.int(40) }, () => randomNode(r, newNodeId(), big));
  const disconnected = new Set(r.some(nodes, 0.05).map((n) => n.id));
  const isConnected = r.chance(0.5) ? (id: string) => !disconnected.has(id) : undefined;
  const fast = new ClusterState(nodes);
  const ref = new NaiveCluster(nodes);
  const placed: { vm: SchedulableVm; nodeId: string }[] = [];
  let counts = { placed: 0, refused: 0 };
  const check = (vm: SchedulableVm, step: number) => {
    const want = referenceSchedule(vm, ref, { strategy, isConnected });
    const got = schedule(vm, fast, { strategy, isConnected });
    assert.deepEqual(got, want, `seed ${seed} ${strategy} step ${step} vm ${vm.id}`);
    assert.equal(fastFit(vm, fast, strategy, isConnected), want.ok ? want.nodeId : undefined, `fastFit, seed ${seed} step ${step}`);
    counts = want.ok ? { ...counts, placed: counts.placed + 1 } : { ...counts, refused: counts.refused + 1 };
    return want;
  };
  for (let step = 0; step < steps; step++) {
    const roll = r.next();
    if (roll < 0.7) {
      const vm = randomVm(r, `vm-${step}`, ref.nodes.map((n) => n.id));
      const p = check(vm, step);
      if (p.ok) {
        fast.assign(vm, p.nodeId);
        ref.assign(vm, p.nodeId);
        placed.push({ vm, nodeId: p.nodeId });
      }
    } else if (roll < 0.8 && placed.length > 0) {
      const [gone] = placed.splice(r.int(placed.length), 1);
      fast.unassign(gone!.vm, gone!.nodeId);
      ref.unassign(gone!.vm, gone!.nodeId);
    } else if (roll < 0.9 && placed.length > 0) {
      check(r.pick(placed).vm, step);
    } else if (roll < 0.95 && ref.nodes.length > 0) {
      const changed = randomNode(r, r.pick(ref.nodes).id, big);
      fast.setNode(changed);
      ref.setNode(changed);
    } else if (roll < 0.975 && ref.nodes.length > 0) {
      const id = r.pick(ref.nodes).id;
      fast.removeNode(id);
      ref.removeNode(id);
    } else {
      const added = randomNode(r, newNodeId(), big);
      fast.setNode(added);
      ref.setNode(added);
    }
  }
  return counts;
}

describe("the indexed scheduler decides as the node-by-node reference does", () => {
  for (const strategy of SCORING_STRATEGIES) {
    it(`${strategy}: same node for every VM that fits, same explanation for every VM that does not`, () => {
      let total = { placed: 0, refused: 0 };
      for (let seed = 1; seed <= 12; seed++) {
        const c = compareRun(seed * 7919 + strategy.length, strategy, 400);
        total = { placed: total.placed + c.placed, refused: total.refused + c.refused };
      }
      // The clusters are small enough that both outcomes occur often; a run with either missing would prove little.
      assert.ok(total.placed > 500 && total.refused > 500, JSON.stringify(total));
    });
  }

  it("large nodes: many VMs per node, so affinity reads the index's dense flags, with the VM itself placed", () => {
    for (const strategy of SCORING_STRATEGIES) compareRun(4242 + strategy.length, strategy, 1500, true);
  });

  it("a cluster built by ClusterState.of indexes the VMs it was given", () => {
    const r = rng(42);
    const nodes = Array.from({ length: 20 }, (_, i) => randomNode(r, `n${i}`));
    const vms = Array.from({ length: 80 }, (_, i) => ({ ...randomVm(r, `v${i}`, []), status: { nodeId: r.chance(0.8) ? r.pick(nodes).id : "", migrationTargetNodeId: r.chance(0.1) ? r.pick(nodes).id : "" } }));
    const ref = new NaiveCluster(nodes);
    for (const vm of vms) {
      if (vm.status.nodeId) ref.assign(vm, vm.status.nodeId);
      if (vm.status.migrationTargetNodeId && vm.status.migrationTargetNodeId !== vm.status.nodeId) ref.assign(vm, vm.status.migrationTargetNodeId);
    }
    const fast = ClusterState.of(nodes, vms);
    for (const vm of [...vms, ...Array.from({ length: 80 }, (_, i) => randomVm(r, `new${i}`, []))]) {
      assert.deepEqual(schedule(vm, fast, { strategy: "spread" }), referenceSchedule(vm, ref, { strategy: "spread" }), vm.id);
    }
  });
});
