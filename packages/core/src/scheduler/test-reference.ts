import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { demandOf, type ClusterView, type NodeLoad, type SchedulableVm } from "./cluster.js";
import { scheduleNodeByNode, type Placement, type ScheduleOptions } from "./schedule.js";

/**
 * The cluster view as the scheduler kept it before it had indexes (tests only): nodes in
 * id order and a load per node id, nothing else. The reference the indexed ClusterState
 * is compared with.
 */
export class NaiveCluster implements ClusterView {
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

/** schedule() as it was before the indexes: every filter on every node, every time, over the naive view (tests only). */
export function referenceSchedule(vm: SchedulableVm, cluster: NaiveCluster, options: ScheduleOptions): Placement {
  return scheduleNodeByNode(vm, cluster, options);
}
