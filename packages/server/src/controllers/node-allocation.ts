import { create, equals } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ResourcesSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { allOf, demandOf, NODE_KIND, VM_KIND, type Clock, type Store, type Timers } from "@quantix/core";
import type { Logger } from "@quantix/rpc";
import { Controller, watching } from "../runtime/controller.js";

/** The actor name of the node allocation controller (it owns status.allocated and status.vm_ids). */
export const NODE_ALLOCATION = "node-allocation";

/**
 * Keeps each node's status.allocated and status.vm_ids equal to what the VMs placed on it
 * ask for: a VM added, deleted, moved or resized enqueues the nodes it left and joined; the
 * resync covers the rest.
 */
export function nodeAllocationController(deps: { store: Store; clock: Clock; timers?: Timers; log: Logger; resyncMs?: number }): Controller {
  const vms = deps.store.of(VM_KIND);
  const nodes = deps.store.of(NODE_KIND);
  const nodeOf = (vm: VirtualMachine | undefined) => vm?.status?.nodeId ?? "";
  return new Controller(
    {
      name: NODE_ALLOCATION,
      watches: [
        // What a node's allocation is made of: which VMs are on it and what their specs ask for.
        // A change to neither (a VM's power state, its conditions) is not looked at again.
        watching(vms, (ev) => (ev.type === "MODIFIED" && ev.previous && !allocationMoved(ev.previous, ev.object) ? [] : [nodeOf(ev.object), nodeOf(ev.previous)].filter((n) => n !== ""))),
        watching(nodes, (ev) => (ev.type === "ADDED" ? [ev.object.id] : [])),
      ],
      keys: async function* () {
        for await (const n of allOf(nodes)) yield n.id;
      },
      reconcile: async (nodeId) => {
        const node = await nodes.get(nodeId);
        if (!node?.status) return;
        const vmIds: string[] = [];
        let cpu = 0;
        let mem = 0;
        for await (const vm of allOf(vms, { where: { node_id: nodeId } })) {
          const d = demandOf(vm.spec);
          vmIds.push(vm.id);
          cpu += d.vcpus;
          mem += d.memoryMib;
        }
        vmIds.sort();
        const allocated = create(ResourcesSchema, { cpuCores: cpu, memoryMib: BigInt(mem) });
        const now = deps.clock.now();
        await nodes.update(nodeId, (cur) => {
          if (!cur.status) return undefined;
          const same = cur.status.allocated && equals(ResourcesSchema, cur.status.allocated, allocated) && cur.status.vmIds.join() === vmIds.join();
          if (same) return undefined;
          cur.status.allocated = allocated;
          cur.status.vmIds = vmIds;
          cur.updatedAt = timestampFromMs(now);
          return cur;
        }, { actor: NODE_ALLOCATION });
      },
      ...(deps.resyncMs !== undefined ? { resyncMs: deps.resyncMs } : {}),
    },
    { clock: deps.clock, ...(deps.timers ? { timers: deps.timers } : {}), log: deps.log, revision: () => deps.store.revision() },
  );
}

/** Whether a VM's change can change its nodes' allocation: its node, or the demand of its spec. */
function allocationMoved(before: VirtualMachine, after: VirtualMachine): boolean {
  if ((before.status?.nodeId ?? "") !== (after.status?.nodeId ?? "")) return true;
  const a = demandOf(before.spec);
  const b = demandOf(after.spec);
  return a.vcpus !== b.vcpus || a.memoryMib !== b.memoryMib;
}
