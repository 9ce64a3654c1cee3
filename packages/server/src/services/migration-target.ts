import type { VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { placeVm, QuantixError, type Store } from "@quantix/core";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";

/**
 * The node the scheduler picks for a VM that must leave `exclude` (its node, a node being
 * drained): every filter and score of the core scheduler, over the nodes whose connected
 * hypervisor can receive a live migration. FAILED_PRECONDITION with the scheduler's
 * explanation when none fits.
 */
export async function pickMigrationTarget(store: Store, drivers: NodeDrivers, vm: VirtualMachine, exclude: readonly string[]): Promise<string> {
  const all = (await store.nodes.list({ order: { field: "hostname", desc: false }, limit: 100_000 })).items;
  const candidates = all.filter((n) => !exclude.includes(n.id) && (drivers.get(n.id)?.capabilities.has("live-migration") ?? false));
  if (candidates.length === 0) throw new QuantixError("failed_precondition", `no node can receive VM '${vm.id}': no other connected node's hypervisor has the 'live-migration' capability`);
  const placed = placeVm(vm.spec, candidates, (id) => drivers.has(id));
  if (placed.ok) return placed.nodeId;
  throw new QuantixError("failed_precondition", `no node can receive VM '${vm.id}': ${placed.message}`);
}
