import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { GUEST_FINALIZER, NODE_KIND, QuantixError, VM_KIND, type Clock, type Store } from "@quantix/core";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";
import type { Logger } from "@quantix/rpc";
import type { VmStatusWriter } from "./vm-status-writer.js";
import { updateWithEvents } from "../events/record.js";
import { vmEvents } from "../events/vm-events.js";
import { QuotaLedger, vmCharging } from "../quota/quota-ledger.js";

/**
 * The cleanup of a VM being deleted (deletion_requested_at set): once no migration holds
 * it, its guest is powered off and deleted on its node, then the VM's guest finalizer is removed and the store deletes it. Level-based: it runs
 * again until done, after a restart too, so a guest whose VM was deleted while no
 * controller ran is still removed. A node that is gone (decommissioned) holds nothing of
 * ours; one that is lost (OFFLINE) is not waited for: a copy on it is fenced when it comes
 * back. A node that is only unreachable for now is waited for (UNAVAILABLE, retried).
 */
export async function finalizeVm(vm: VirtualMachine, deps: { store: Store; drivers: NodeDrivers; clock: Clock; log: Logger; status: VmStatusWriter }): Promise<void> {
  if (!vm.finalizers.includes(GUEST_FINALIZER)) return;
  // A migration holds the VM: the migration controller stops it (the VM is gone for it) and
  // the scheduler settles the VM on one node; the cleanup follows (the VM's change enqueues it).
  if (vm.status?.migrationTargetNodeId) return;
  const nodeIds = [vm.status?.nodeId ?? ""].filter((n) => n !== "");
  for (const nodeId of nodeIds) {
    const node = await deps.store.of(NODE_KIND).get(nodeId);
    if (!node) continue;
    const driver = deps.drivers.get(nodeId);
    try {
      if (!driver) throw new QuantixError("unavailable", `node '${node.hostname}' is not connected`);
      const obs = await driver.observe(vm.id);
      if (obs.power === "absent") continue;
      if (obs.power !== "shutdown" && obs.power !== "created") await driver.shutdownVM(vm.id, { force: true, timeoutSec: 0 });
      await driver.deleteVM(vm.id);
      deps.log.log("info", "removed a deleted VM's guest from its node", { vm_id: vm.id, node_id: nodeId });
    } catch (err) {
      if (!(err instanceof QuantixError && err.code === "unavailable")) throw err;
      if (node.status?.phase === Phase.OFFLINE) {
        deps.log.log("warn", "a deleted VM's node is lost: its guest there is fenced if the node comes back", { vm_id: vm.id, node_id: nodeId });
        continue;
      }
      await deps.status.unreachable(vm, `VM '${vm.id}' is being deleted, and its guest on node '${node.hostname}' cannot be removed yet (${err.message})`);
      throw err;
    }
  }
  await updateWithEvents(
    deps.store,
    VM_KIND,
    vm.id,
    (cur) => {
      if (!cur.finalizers.includes(GUEST_FINALIZER)) return undefined;
      cur.finalizers = cur.finalizers.filter((f) => f !== GUEST_FINALIZER);
      return cur;
    },
    vmEvents,
    // The update that drops the last finalizer removes the VM: its quota use is released with it.
    { actor: "vm-controller", nowMs: deps.clock.now(), charging: vmCharging(new QuotaLedger({ store: deps.store, clock: deps.clock, defaults: {} })) },
  );
}
