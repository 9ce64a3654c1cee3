import { clone, create } from "@bufbuild/protobuf";
import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { PlacementPolicySchema, VmSpecSchema, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { ClusterState, QuantixError, schedule, type ScoringStrategy, type Store, NODE_KIND, allOf, VM_KIND } from "@quantix/core";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";
import { migrationVolumeNodes } from "../storage/migration-volumes.js";

/** What choosing a migration target reads. */
export interface MigrationTargetDeps {
  readonly store: Store;
  readonly drivers: NodeDrivers;
  /** The scheduler's scoring strategy; default "spread". */
  readonly strategy?: ScoringStrategy | undefined;
}

/**
 * The node a VM should migrate to, chosen by the scheduler's `schedule()` over the current
 * cluster (every node, every VM, running migrations counted on both their nodes) with the
 * VM's own placement rules, so capacity, taints, selectors and anti-affinity apply:
 * `target` (when not empty) becomes required_node_ids, else `exclude` (the VM's node, a
 * node being drained) is added to excluded_node_ids. The VM itself counts on its node only
 * (not on a target it has claimed), so calling this again after the claim checks that
 * the claimed capacity was not given out twice. FAILED_PRECONDITION with the scheduler's
 * explanation when nothing fits.
 */
export async function scheduleMigration(deps: MigrationTargetDeps, vm: VirtualMachine, target: string, exclude: readonly string[]): Promise<string> {
  const nodes = await allNodes(deps.store);
  const vms: VirtualMachine[] = [];
  for await (const v of allOf(deps.store.of(VM_KIND))) vms.push(v.id === vm.id ? withoutTarget(v) : v);
  const spec = clone(VmSpecSchema, vm.spec ?? create(VmSpecSchema));
  const placement = spec.placement ?? create(PlacementPolicySchema);
  spec.placement = placement;
  if (target) placement.requiredNodeIds = [target];
  else placement.excludedNodeIds = [...new Set([...placement.excludedNodeIds, ...exclude])];
  // The node's reported capabilities explain a refusal; the connected driver is checked too.
  if (!placement.requiredCapabilities.includes("live-migration")) placement.requiredCapabilities.push("live-migration");
  // Volume disks: a local-pool volume is copied to any node that has its pool, a shared one is used on the pool's nodes.
  const volumeNodeIds = await migrationVolumeNodes(deps.store, vm);
  const placed = schedule({ id: vm.id, labels: vm.labels, spec, volumeNodeIds }, ClusterState.of(nodes, vms), {
    strategy: deps.strategy ?? "spread",
    isConnected: (id) => deps.drivers.has(id),
  });
  if (placed.ok) return placed.nodeId;
  const to = target ? `node '${nodes.find((n) => n.id === target)?.hostname ?? target}'` : "any other node";
  throw new QuantixError("failed_precondition", `VM '${vm.id}' cannot migrate to ${to}: ${placed.message}`);
}

/** A copy of a VM as if no migration target were recorded. */
function withoutTarget(vm: VirtualMachine): VirtualMachine {
  if (!vm.status?.migrationTargetNodeId) return vm;
  const copy = { ...vm, status: { ...vm.status, migrationTargetNodeId: "" } };
  return copy as VirtualMachine;
}

async function allNodes(store: Store): Promise<Node[]> {
  const out: Node[] = [];
  let after: { key: string; id: string } | undefined;
  for (;;) {
    const page = await store.of(NODE_KIND).list({ order: { field: "hostname", desc: false }, after, limit: 1000, countTotal: false });
    out.push(...page.items);
    const last = page.items[page.items.length - 1];
    if (!page.hasMore || !last) return out;
    after = { key: last.hostname, id: last.id };
  }
}
