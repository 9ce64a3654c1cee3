import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { VmSpec } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";

/** What a VM asks of a node. */
export interface Demand {
  readonly vcpus: number;
  readonly memoryMib: number;
}

/** The vCPUs and memory a spec asks for. */
export function demandOf(spec: VmSpec | undefined): Demand {
  const cpu = spec?.cpu;
  const vcpus = cpu ? cpu.cores * Math.max(1, cpu.sockets) * Math.max(1, cpu.threadsPerCore) : 0;
  return { vcpus, memoryMib: Number(spec?.memory?.sizeMib ?? 0n) };
}

/** The parts of a VM the scheduler reads. */
export interface SchedulableVm {
  readonly id: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly spec?: VmSpec | undefined;
  /**
   * The nodes that reach every volume the VM's disks name (volumePlacement); undefined:
   * any node. A volume in a local pool pins the VM to the volume's node.
   */
  readonly volumeNodeIds?: readonly string[] | undefined;
}

/** A VM already on a node, as affinity rules see it. */
export interface PlacedVm {
  readonly id: string;
  readonly labels: Readonly<Record<string, string>>;
}

/** What a node has given out: the sum of its VMs' demands, and the VMs themselves. */
export interface NodeLoad {
  vcpus: number;
  memoryMib: number;
  readonly vms: PlacedVm[];
}

/**
 * The cluster as the scheduler sees it: nodes (in id order, so ties break the same way
 * everywhere) and what every node has given out. Loads count every VM placed on a node,
 * stopped ones too: a stopped VM keeps its place, so starting it again never overcommits.
 * `assign` records a placement at once, so a run of placements against one ClusterState
 * never gives the same capacity twice.
 */
export class ClusterState {
  readonly nodes: readonly Node[];
  private readonly loads = new Map<string, NodeLoad>();

  constructor(nodes: readonly Node[]) {
    this.nodes = [...nodes].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    for (const n of this.nodes) this.loads.set(n.id, { vcpus: 0, memoryMib: 0, vms: [] });
  }

  /**
   * A cluster state from nodes and every VM (unplaced ones are skipped). A VM being
   * migrated counts on its node and on its migration target: the target's capacity is
   * reserved until the migration is resolved.
   */
  static of(nodes: readonly Node[], vms: Iterable<SchedulableVm & { readonly status?: { readonly nodeId: string; readonly migrationTargetNodeId?: string } | undefined }>): ClusterState {
    const state = new ClusterState(nodes);
    for (const vm of vms) {
      if (vm.status?.nodeId) state.assign(vm, vm.status.nodeId);
      const target = vm.status?.migrationTargetNodeId;
      if (target && target !== vm.status?.nodeId) state.assign(vm, target);
    }
    return state;
  }

  /** What a node has given out (zero for an unknown node). */
  loadOf(nodeId: string): NodeLoad {
    let load = this.loads.get(nodeId);
    if (!load) {
      load = { vcpus: 0, memoryMib: 0, vms: [] };
      this.loads.set(nodeId, load);
    }
    return load;
  }

  /** Takes a VM off a node's load (to ask whether it would fit there again). */
  unassign(vm: SchedulableVm, nodeId: string): void {
    const d = demandOf(vm.spec);
    const load = this.loadOf(nodeId);
    const i = load.vms.findIndex((x) => x.id === vm.id);
    if (i < 0) return;
    load.vms.splice(i, 1);
    load.vcpus -= d.vcpus;
    load.memoryMib -= d.memoryMib;
  }

  /** Records that a VM is on a node. */
  assign(vm: SchedulableVm, nodeId: string): void {
    const d = demandOf(vm.spec);
    const load = this.loadOf(nodeId);
    load.vcpus += d.vcpus;
    load.memoryMib += d.memoryMib;
    load.vms.push({ id: vm.id, labels: vm.labels });
  }
}

/** What VMs may use on a node: capacity × overcommit − reserved, as the node's status says. */
export function allocatableOf(node: Node): Demand {
  const a = node.status?.allocatable;
  return { vcpus: a?.cpuCores ?? 0, memoryMib: Number(a?.memoryMib ?? 0n) };
}
