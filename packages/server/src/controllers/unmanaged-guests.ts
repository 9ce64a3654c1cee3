import { create, equals } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { UnmanagedGuestSchema, type Node, type UnmanagedGuest } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { allOf, NODE_KIND, QuantixError, UNMANAGED_GUESTS, VM_KIND, type Clock, type Store, type Timers } from "@quantix/core";
import type { Logger } from "@quantix/rpc";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";
import { Controller, watching } from "../runtime/controller.js";

/**
 * Keeps each connected node's status.unmanaged_guests equal to the guests its hypervisor
 * runs that no VM of the store is (made on the agent by hand, or by another cluster's
 * control plane, e.g. before the database was replaced): shown, instead of hidden, and
 * never adopted nor removed. A node's hypervisor events and VM changes on the node
 * enqueue it; the resync covers the rest. A node not connected keeps its last list.
 */
export function unmanagedGuestsController(deps: { store: Store; drivers: NodeDrivers; clock: Clock; timers?: Timers; log: Logger; resyncMs?: number }): Controller {
  const vms = deps.store.of(VM_KIND);
  const nodes = deps.store.of(NODE_KIND);
  const nodeOf = (vm: VirtualMachine | undefined) => vm?.status?.nodeId ?? "";
  return new Controller(
    {
      name: UNMANAGED_GUESTS,
      // Whether a guest is managed is whether its VM exists: a VM that stays on its node
      // (a power state, a status) changes nothing here; the node's own events say what it runs.
      watches: [watching(vms, (ev) => (ev.type === "MODIFIED" && ev.previous && nodeOf(ev.previous) === nodeOf(ev.object) ? [] : [nodeOf(ev.object), nodeOf(ev.previous)].filter((n) => n !== "")))],
      events: [(enqueue) => deps.drivers.onChange((nodeId) => enqueue(nodeId))],
      keys: async function* () {
        for await (const n of allOf(nodes)) yield n.id;
      },
      reconcile: async (nodeId) => {
        const driver = deps.drivers.get(nodeId);
        if (!driver) return;
        const guests: UnmanagedGuest[] = [];
        for (const obs of await driver.list()) {
          if (obs.power === "absent" || (await vms.get(obs.vmId))) continue;
          guests.push(create(UnmanagedGuestSchema, { id: obs.vmId, state: obs.power, ownerClusterId: obs.owner ?? "" }));
        }
        guests.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
        const now = deps.clock.now();
        const same = (node: Node) => {
          const before = node.status?.unmanagedGuests ?? [];
          return before.length === guests.length && before.every((g, i) => equals(UnmanagedGuestSchema, g, guests[i]!));
        };
        // Read first: the list seldom changes, and an update copies the whole node to find that out.
        const node = await nodes.get(nodeId);
        if (!node?.status || same(node)) return;
        await nodes.update(nodeId, (cur) => {
          if (!cur.status || same(cur)) return undefined;
          cur.status.unmanagedGuests = guests;
          cur.updatedAt = timestampFromMs(now);
          return cur;
        }, { actor: UNMANAGED_GUESTS }).catch((err: unknown) => {
          // The node went meanwhile (decommissioned): nothing to show.
          if (!(err instanceof QuantixError && err.code === "not_found")) throw err;
        });
      },
      ...(deps.resyncMs !== undefined ? { resyncMs: deps.resyncMs } : {}),
    },
    { clock: deps.clock, ...(deps.timers ? { timers: deps.timers } : {}), log: deps.log, revision: () => deps.store.revision() },
  );
}
