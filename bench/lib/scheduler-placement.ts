import { create } from "@bufbuild/protobuf";
import { NodeSchema, NodeStatus_Phase, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { TaintEffect, TolerationOperator, VmSpecSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { allocatableOf, ClusterState, demandOf, schedule, type SchedulableVm } from "@quantix/core";
import { nowMs } from "./stats.js";

/** Placements per second of the scheduler and of a naive first-fit loop over the same cluster. */
export interface SchedulerBench {
  readonly nodes: number;
  readonly vms: number;
  readonly scheduler: { readonly placed: number; readonly ms: number; readonly perSec: number };
  readonly firstFit: { readonly placed: number; readonly ms: number; readonly perSec: number };
}

/**
 * 1,000 nodes (zones, sizes, a NoSchedule and a PreferNoSchedule taint on some,
 * capabilities on most, a few not ready or disabled) and 10,000 VMs that use every filter
 * and score: node selectors, required and excluded nodes, tolerations, required
 * capabilities, hard and soft anti-affinity, preferred nodes. The scheduler places each VM
 * (filter, score, assign); the baseline is a first-fit loop that checks only free CPU and
 * memory, which is the least a placement can cost. Deterministic data: same in every run.
 */
export function schedulerBench(nodeCount = 1000, vmCount = 10_000): SchedulerBench {
  const nodes = Array.from({ length: nodeCount }, (_, i) => benchNode(i));
  const vms = Array.from({ length: vmCount }, (_, i) => benchVm(i, nodeCount));

  const cluster = new ClusterState(nodes);
  let placed = 0;
  const t0 = nowMs();
  for (const vm of vms) {
    const p = schedule(vm, cluster, { strategy: "spread" });
    if (p.ok) {
      cluster.assign(vm, p.nodeId);
      placed++;
    }
  }
  const ms = nowMs() - t0;

  const free = nodes.map((n) => ({ ...allocatableOf(n) }));
  let ffPlaced = 0;
  const t1 = nowMs();
  for (const vm of vms) {
    const d = demandOf(vm.spec);
    const f = free.find((x) => x.vcpus >= d.vcpus && x.memoryMib >= d.memoryMib);
    if (f) {
      f.vcpus -= d.vcpus;
      f.memoryMib -= d.memoryMib;
      ffPlaced++;
    }
  }
  const ffMs = nowMs() - t1;
  return {
    nodes: nodeCount,
    vms: vmCount,
    scheduler: { placed, ms, perSec: (vmCount / ms) * 1000 },
    firstFit: { placed: ffPlaced, ms: ffMs, perSec: (vmCount / ffMs) * 1000 },
  };
}

function benchNode(i: number): Node {
  const big = i % 4 === 0;
  return create(NodeSchema, {
    id: `node-${String(i).padStart(5, "0")}`,
    hostname: `bench-${i}`,
    labels: { zone: `z${i % 3}`, ...(i % 10 === 0 ? { gpu: "yes" } : {}) },
    spec: {
      schedulable: i % 97 !== 0,
      taints: [
        ...(i % 20 === 0 ? [{ key: "dedicated", value: "db", effect: TaintEffect.NO_SCHEDULE }] : []),
        ...(i % 7 === 0 ? [{ key: "old-hw", effect: TaintEffect.PREFER_NO_SCHEDULE }] : []),
      ],
    },
    status: {
      phase: i % 101 === 0 ? NodeStatus_Phase.NOT_READY : NodeStatus_Phase.READY,
      allocatable: { cpuCores: big ? 128 : 48, memoryMib: BigInt(big ? 524_288 : 131_072) },
      hypervisor: { type: "qemu", capabilities: i % 5 === 0 ? ["pause"] : ["pause", "live-migration"] },
    },
  });
}

function benchVm(i: number, nodeCount: number): SchedulableVm {
  const group = `g${Math.floor(i / 3)}`;
  const spec = create(VmSpecSchema, {
    cpu: { cores: 1 + (i % 4), sockets: 1, threadsPerCore: 1 },
    memory: { sizeMib: BigInt(1024 * (1 + (i % 8))) },
    placement: {
      nodeSelector: i % 3 === 0 ? { zone: `z${i % 3}` } : {},
      excludedNodeIds: [`node-${String(i % nodeCount).padStart(5, "0")}`],
      preferredNodeIds: i % 11 === 0 ? [`node-${String((i * 7) % nodeCount).padStart(5, "0")}`] : [],
      requiredCapabilities: i % 2 === 0 ? ["live-migration"] : [],
      tolerations: i % 9 === 0 ? [{ key: "dedicated", operator: TolerationOperator.EXISTS }] : [],
      affinity: [
        { selector: { matchLabels: { group } }, anti: true, required: true },
        { selector: { matchLabels: { tier: `t${i % 5}` } }, anti: true, weight: 10 },
      ],
    },
  });
  return { id: `vm-${i}`, labels: { group, tier: `t${i % 5}` }, spec };
}
