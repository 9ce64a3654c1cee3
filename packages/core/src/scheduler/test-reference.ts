import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { demandOf, type ClusterState, type NodeLoad, type SchedulableVm } from "./cluster.js";
import { explain } from "./explain.js";
import { FILTERS, hostsMatch, type FilterContext, type Rejection } from "./filters.js";
import type { Placement, ScheduleOptions } from "./schedule.js";
import { scoreNode } from "./scores.js";

/**
 * The cluster view as the scheduler kept it before it had indexes (tests only): nodes in
 * id order and a load per node id, nothing else. The reference the indexed ClusterState
 * is compared with.
 */
export class NaiveCluster {
  nodes: Node[];
  private readonly loads = new Map<string, NodeLoad>();

  constructor(nodes: readonly Node[]) {
    this.nodes = sortById(nodes);
  }

  setNode(node: Node): void {
    this.nodes = sortById([...this.nodes.filter((n) => n.id !== node.id), node]);
  }

  removeNode(nodeId: string): void {
    this.nodes = this.nodes.filter((n) => n.id !== nodeId);
  }

  loadOf(nodeId: string): NodeLoad {
    let load = this.loads.get(nodeId);
    if (!load) this.loads.set(nodeId, (load = { vcpus: 0, memoryMib: 0, vms: [] }));
    return load;
  }

  unassign(vm: SchedulableVm, nodeId: string): void {
    const d = demandOf(vm.spec);
    const load = this.loadOf(nodeId);
    const i = load.vms.findIndex((x) => x.id === vm.id);
    if (i < 0) return;
    load.vms.splice(i, 1);
    load.vcpus -= d.vcpus;
    load.memoryMib -= d.memoryMib;
  }

  assign(vm: SchedulableVm, nodeId: string): void {
    const d = demandOf(vm.spec);
    const load = this.loadOf(nodeId);
    load.vcpus += d.vcpus;
    load.memoryMib += d.memoryMib;
    load.vms.push({ id: vm.id, labels: vm.labels });
  }
}

function sortById(nodes: readonly Node[]): Node[] {
  return [...nodes].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

/** schedule() as it was before the indexes: every filter on every node, every time (tests only). */
export function referenceSchedule(vm: SchedulableVm, cluster: NaiveCluster, options: ScheduleOptions): Placement {
  const demand = demandOf(vm.spec);
  const hard = (vm.spec?.placement?.affinity ?? []).filter((r) => r.required);
  const ctx: FilterContext = {
    vm,
    demand,
    // The filters never read ctx.cluster; the loads come from the naive view.
    cluster: cluster as unknown as ClusterState,
    isConnected: options.isConnected,
    hardAffinity: hard.map((rule) => ({ rule, anyMatch: !rule.anti && cluster.nodes.some((n) => hostsMatch(cluster.loadOf(n.id), rule, vm.id)) })),
  };
  const rejections: Rejection[] = [];
  let best: { id: string; score: number } | undefined;
  for (const node of cluster.nodes) {
    const load = cluster.loadOf(node.id);
    let rejected: Rejection | undefined;
    for (const filter of FILTERS) {
      rejected = filter(ctx, node, load);
      if (rejected) break;
    }
    if (rejected) {
      rejections.push(rejected);
      continue;
    }
    const score = scoreNode(options.strategy, vm, demand, node, load);
    if (!best || score > best.score) best = { id: node.id, score };
  }
  if (best) return { ok: true, nodeId: best.id };
  return { ok: false, reason: "Unschedulable", message: explain(cluster.nodes.length, rejections) };
}
