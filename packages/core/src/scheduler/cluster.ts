import type { LabelSelector } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { VmSpec } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { LabelIndex } from "./label-index.js";
import { selectorMatches } from "./label-selector.js";

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

/** One node id's entry in a ClusterState: its load, and its position among the nodes in id order (-1: not one of them). */
export interface NodeSlot {
  readonly id: string;
  idx: number;
  readonly load: NodeLoad;
}

/** What the node-by-node filters read of a cluster: the nodes in id order and each one's load. */
export interface ClusterView {
  readonly nodes: readonly Node[];
  loadOf(nodeId: string): NodeLoad;
}

/** A per-node answer that depends only on the nodes and a VM's static constraints, cached until a node changes. */
export interface StaticMask {
  /** 1 where the node passes every filter that reads only the node and the VM's spec. */
  readonly ok: Uint8Array;
  /** Untolerated PreferNoSchedule taints per node. */
  readonly prefer: Int32Array;
  /** The positions where `ok` is 1, ascending. */
  readonly passing: Int32Array;
}

/** How many distinct static masks a ClusterState keeps before it starts over. */
const MAX_STATIC_MASKS = 256;

/**
 * The cluster as the scheduler sees it: nodes (in id order, so ties break the same way
 * everywhere) and what every node has given out. Loads count every VM placed on a node,
 * stopped ones too: a stopped VM keeps its place, so starting it again never overcommits.
 * `assign` records a placement at once, so a run of placements against one ClusterState
 * never gives the same capacity twice.
 *
 * The view is kept incrementally, so a placement reads indexes instead of every node's VMs:
 * `assign`/`unassign` update the node's load and the label index (which nodes host VMs
 * with a label, for affinity rules); `setNode`/`removeNode` re-sort the nodes and drop the
 * cached static masks (selectors, capabilities, taints per distinct set of constraints).
 * Nodes are read when given: a node that changes must be given again with `setNode`.
 */
export class ClusterState implements ClusterView {
  private sorted: Node[] = [];
  private readonly slots = new Map<string, NodeSlot>();
  private inOrder: NodeSlot[] = [];
  private allocVcpus = new Float64Array(0);
  private allocMemMib = new Float64Array(0);
  private readonly labels = new LabelIndex<NodeSlot>();
  /** For each VM id, the slots it is recorded on (once per record), so affinity can leave the VM itself out. */
  private readonly vmSlots = new Map<string, NodeSlot[]>();
  private readonly masks = new Map<string, StaticMask>();
  private pool: Uint8Array[] = [];

  constructor(nodes: readonly Node[]) {
    this.sorted = [...nodes];
    this.reindexNodes();
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

  /** The nodes, in id order. */
  get nodes(): readonly Node[] {
    return this.sorted;
  }

  /** Adds a node or replaces the one with its id (its load stays). */
  setNode(node: Node): void {
    const i = this.sorted.findIndex((n) => n.id === node.id);
    if (i >= 0) this.sorted[i] = node;
    else this.sorted.push(node);
    this.reindexNodes();
  }

  /** Removes a node from the nodes (what it had given out is kept, as for any unknown node id). */
  removeNode(nodeId: string): void {
    const i = this.sorted.findIndex((n) => n.id === nodeId);
    if (i < 0) return;
    this.sorted.splice(i, 1);
    this.reindexNodes();
  }

  /** What a node has given out (zero for an unknown node). */
  loadOf(nodeId: string): NodeLoad {
    return this.slotOf(nodeId).load;
  }

  /** Takes a VM off a node's load (to ask whether it would fit there again). */
  unassign(vm: SchedulableVm, nodeId: string): void {
    const d = demandOf(vm.spec);
    const slot = this.slotOf(nodeId);
    const load = slot.load;
    const i = load.vms.findIndex((x) => x.id === vm.id);
    if (i < 0) return;
    const [placed] = load.vms.splice(i, 1);
    load.vcpus -= d.vcpus;
    load.memoryMib -= d.memoryMib;
    this.labels.remove(slot, placed!.labels);
    const on = this.vmSlots.get(vm.id)!;
    on.splice(on.indexOf(slot), 1);
    if (on.length === 0) this.vmSlots.delete(vm.id);
  }

  /** Records that a VM is on a node. */
  assign(vm: SchedulableVm, nodeId: string): void {
    const d = demandOf(vm.spec);
    const slot = this.slotOf(nodeId);
    const load = slot.load;
    load.vcpus += d.vcpus;
    load.memoryMib += d.memoryMib;
    // A copy: the label index counts the labels as they were when the VM was placed.
    const labels = { ...vm.labels };
    load.vms.push({ id: vm.id, labels });
    this.labels.add(slot, labels);
    const on = this.vmSlots.get(vm.id);
    if (on) on.push(slot);
    else this.vmSlots.set(vm.id, [slot]);
  }

  /** The nodes' slots in id order (slot.idx is the position). */
  slotsInOrder(): readonly NodeSlot[] {
    return this.inOrder;
  }

  /** The nodes' allocatable vCPUs and memory by position, as allocatableOf read them when the node was given (read only). */
  allocatableArrays(): { readonly vcpus: Float64Array; readonly memoryMib: Float64Array } {
    return { vcpus: this.allocVcpus, memoryMib: this.allocMemMib };
  }

  /** Positions of the named nodes that are among the nodes, ascending, without repeats. */
  positionsOf(ids: readonly string[]): number[] {
    const out: number[] = [];
    for (const id of ids) {
      const idx = this.slots.get(id)?.idx ?? -1;
      if (idx >= 0) out.push(idx);
    }
    out.sort((a, b) => a - b);
    return out.filter((x, i) => i === 0 || out[i - 1] !== x);
  }

  /** The static mask for a key, computed by `compute` over the nodes the first time (until a node changes). */
  staticMask(key: string, compute: (nodes: readonly Node[]) => StaticMask): StaticMask {
    let mask = this.masks.get(key);
    if (!mask) {
      if (this.masks.size >= MAX_STATIC_MASKS) this.masks.clear();
      mask = compute(this.sorted);
      this.masks.set(key, mask);
    }
    return mask;
  }

  /**
   * 1 at each node position whose VMs include one other than `selfId` that the selector
   * matches: what hostsMatch answers node by node, from the label index. The candidates are
   * the nodes hosting the selector's most selective indexed term (a match_labels pair, an
   * IN list, an EXISTS key); a selector of one match_labels pair is answered by the counts,
   * any other is checked VM by VM on the candidates only. A selector with nothing to index
   * (empty, or only NOT_IN / DOES_NOT_EXIST) is checked on every node. The flags are written
   * into `out` (zeroed), or are the index's own (read only) when the posting is large.
   */
  nodesHosting(selector: LabelSelector | undefined, selfId: string, out: Uint8Array): Uint8Array {
    const postings = selector ? this.labels.narrowest(selector) : undefined;
    if (!postings) {
      for (const slot of this.inOrder) if (hostsOther(slot, selector, selfId)) out[slot.idx] = 1;
      return out;
    }
    const self = this.vmSlots.get(selfId);
    if (selector!.matchExpressions.length === 0 && postings.length === 1 && Object.keys(selector!.matchLabels).length === 1) {
      // One pair: a node in its posting hosts a match, unless the VM itself is what it counts.
      const dense = this.labels.denseOf(postings[0]!, this.inOrder.length);
      if (dense && !self) return dense;
      if (dense) {
        out.set(dense);
        for (const slot of self!) if (slot.idx >= 0) out[slot.idx] = hostsOther(slot, selector, selfId) ? 1 : 0;
        return out;
      }
      for (const slot of postings[0]!.counts.keys()) if (slot.idx >= 0) out[slot.idx] = !self?.includes(slot) || hostsOther(slot, selector, selfId) ? 1 : 0;
      return out;
    }
    for (const posting of postings) {
      for (const slot of posting.counts.keys()) {
        if (slot.idx >= 0 && !out[slot.idx] && hostsOther(slot, selector, selfId)) out[slot.idx] = 1;
      }
    }
    return out;
  }

  /**
   * Zeroed flags, one per node position, lent to a placement: `k` tells apart the ones it
   * uses at once. The borrower zeroes them again before it returns (fastFit does).
   */
  scratchFlags(k: number): Uint8Array {
    while (this.pool.length <= k) this.pool.push(new Uint8Array(this.inOrder.length));
    return this.pool[k]!;
  }

  private slotOf(nodeId: string): NodeSlot {
    let slot = this.slots.get(nodeId);
    if (!slot) {
      slot = { id: nodeId, idx: -1, load: { vcpus: 0, memoryMib: 0, vms: [] } };
      this.slots.set(nodeId, slot);
    }
    return slot;
  }

  private reindexNodes(): void {
    this.sorted.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    for (const slot of this.inOrder) slot.idx = -1;
    this.inOrder = this.sorted.map((n, idx) => {
      const slot = this.slotOf(n.id);
      slot.idx = idx;
      return slot;
    });
    this.allocVcpus = new Float64Array(this.sorted.length);
    this.allocMemMib = new Float64Array(this.sorted.length);
    for (const [i, n] of this.sorted.entries()) {
      const a = allocatableOf(n);
      this.allocVcpus[i] = a.vcpus;
      this.allocMemMib[i] = a.memoryMib;
    }
    this.masks.clear();
    this.labels.dropDense();
    this.pool = [];
  }
}

/** Whether a node hosts a VM other than `selfId` that the selector matches (filters.ts' hostsMatch, for a selector). */
function hostsOther(slot: NodeSlot, selector: LabelSelector | undefined, selfId: string): boolean {
  return slot.load.vms.some((v) => v.id !== selfId && selectorMatches(selector, v.labels));
}

/** What VMs may use on a node: capacity × overcommit − reserved, as the node's status says. */
export function allocatableOf(node: Node): Demand {
  const a = node.status?.allocatable;
  return { vcpus: a?.cpuCores ?? 0, memoryMib: Number(a?.memoryMib ?? 0n) };
}
