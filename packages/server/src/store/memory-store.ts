import { NodeSchema, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VirtualMachineSchema, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { matchesLabels, nodeSortKey, vmSortKey, type NodeQuery, type Store, type StoreHealth, type VmQuery } from "@quantix/core";
import { MemoryCollection, type RevisionCounter } from "./memory-collection.js";
import type { WatchHubLimits } from "./watch-hub.js";

/** VM filter semantics shared by every store: all given conditions must hold. */
export function vmMatches(vm: VirtualMachine, q: VmQuery): boolean {
  if (q.projectId && vm.projectId !== q.projectId) return false;
  if (q.nodeId && vm.status?.nodeId !== q.nodeId) return false;
  if (q.states && q.states.length > 0 && !q.states.includes(vm.status?.state ?? 0)) return false;
  return !q.labels || matchesLabels(vm.labels, q.labels);
}

/** Node filter semantics shared by every store. */
export function nodeMatches(node: Node, q: NodeQuery): boolean {
  if (q.hostname !== undefined && node.hostname !== q.hostname) return false;
  if (q.schedulableOnly && !node.spec?.schedulable) return false;
  if (q.phases && q.phases.length > 0 && !q.phases.includes(node.status?.phase ?? 0)) return false;
  return !q.labels || matchesLabels(node.labels, q.labels);
}

/** A store that keeps everything in memory: for tests and for `QUANTIX_STORE=memory`. */
export class MemoryStore implements Store {
  private readonly counter: RevisionCounter = { value: 0n };
  private seeded = false;
  readonly vms: MemoryCollection<typeof VirtualMachineSchema, VmQuery>;
  readonly nodes: MemoryCollection<typeof NodeSchema, NodeQuery>;

  constructor(limits?: WatchHubLimits) {
    this.vms = new MemoryCollection(
      {
        kind: "VM",
        schema: VirtualMachineSchema,
        id: (vm) => vm.id,
        uniqueKey: (vm) => `${vm.projectId}\u0000${vm.name}`,
        describeClash: (vm) => `a VM named '${vm.name}' already exists in project '${vm.projectId}'`,
        matches: vmMatches,
        sortKey: (vm, field) => vmSortKey(vm, field as "name" | "created_at"),
        pageOf: (q) => q,
      },
      this.counter,
      limits,
    );
    this.nodes = new MemoryCollection(
      {
        kind: "node",
        schema: NodeSchema,
        id: (n) => n.id,
        uniqueKey: (n) => n.hostname,
        describeClash: (n) => `a node with hostname '${n.hostname}' is already registered`,
        matches: nodeMatches,
        sortKey: (n, field) => nodeSortKey(n, field as "hostname" | "created_at"),
        pageOf: (q) => q,
      },
      this.counter,
      limits,
    );
  }

  async revision(): Promise<bigint> {
    return this.counter.value;
  }

  async health(): Promise<StoreHealth> {
    return { ok: true, kind: "memory", revision: this.counter.value.toString() };
  }

  async seedOnce(seed: () => Promise<void>): Promise<boolean> {
    if (this.seeded || this.counter.value !== 0n) return false;
    this.seeded = true;
    await seed();
    return true;
  }

  lead(onChange: (leader: boolean) => void): () => Promise<void> {
    // Nothing else shares a memory store.
    queueMicrotask(() => onChange(true));
    return async () => undefined;
  }

  async close(): Promise<void> {}
}
