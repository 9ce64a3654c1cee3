import { clone, create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { VmStatusSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import type { Clock, HypervisorPort, Store } from "@quantix/core";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";
import type { Logger } from "@quantix/rpc";
import { setCondition } from "./conditions.js";
import { isMigrating } from "./ha-policy.js";
import { VM_KIND } from "@quantix/core";
import { eventOf, updateWithEvents } from "../events/record.js";
import { vmEvents } from "../events/vm-events.js";
import { EVENT_KIND } from "@quantix/core";

/** The condition a VM gets when a stale copy of it was removed from a node. */
export const FENCED_CONDITION = "Fenced";

/**
 * Never two copies: a node reports a VM (its agent's WatchVms snapshot or events, after a
 * reconnect for instance) that the control plane has not assigned to it: HA restarted it
 * elsewhere while the node was lost, or it is unplaced, waiting for a node. That copy is
 * powered off and deleted (force) on the node, which is logged and recorded on the VM as
 * a Fenced condition. A VM being migrated is exempt (its target holds a copy by design).
 * A guest whose VM the store no longer has is removed when our cluster created it, and
 * left alone otherwise (removeOrphan).
 *
 * `fence()` fails with UNAVAILABLE while the node is still marked down (its heartbeats
 * have not resumed); the node's drivers report all its VMs again when it is up, so the
 * check runs again then.
 */
export class Fencer {
  constructor(private readonly deps: { store: Store; drivers: NodeDrivers; clock: Clock; log: Logger }) {}

  /** Removes `vmId` from `nodeId` if the VM is assigned elsewhere, or is ours and gone; returns whether it did. */
  async fence(nodeId: string, vmId: string): Promise<boolean> {
    const driver = this.deps.drivers.get(nodeId);
    if (!driver) return false;
    const vm = await this.deps.store.of(VM_KIND).get(vmId);
    if (!vm) return this.removeOrphan(driver, nodeId, vmId);
    const assigned = vm.status?.nodeId ?? "";
    if (assigned === nodeId || isMigrating(vm)) return false;
    const obs = await driver.observe(vmId);
    if (obs.power === "absent") return false;
    if (obs.power !== "shutdown" && obs.power !== "created") await driver.shutdownVM(vmId, { force: true, timeoutSec: 0 });
    await driver.deleteVM(vmId);
    const where = assigned ? `it is assigned to node '${assigned}'` : "it is not placed on any node";
    const message = `a stale copy on node '${nodeId}' (${obs.power}) was powered off and deleted: ${where}`;
    this.deps.log.log("warn", "fenced a stale VM copy", { vm_id: vmId, node_id: nodeId, assigned_node_id: assigned, observed: obs.power });
    const now = this.deps.clock.now();
    await updateWithEvents(
      this.deps.store,
      VM_KIND,
      vmId,
      (cur) => {
        const next = clone(VmStatusSchema, cur.status ?? create(VmStatusSchema));
        next.conditions = setCondition(next.conditions, { type: FENCED_CONDITION, status: true, reason: "StaleCopyRemoved", message, generation: cur.generation }, now);
        cur.status = next;
        cur.updatedAt = timestampFromMs(now);
        return cur;
      },
      vmEvents,
      { actor: "fencer", nowMs: now },
    );
    return true;
  }

  /**
   * A guest our cluster created (its owner is this store's cluster id) whose VM no longer
   * exists: deleted while no controller ran, or removed with its node unreachable. It is
   * powered off and deleted. A guest without our mark (another cluster's, one made by
   * hand, or one from a store that was replaced) is not ours to judge and is left alone.
   */
  private async removeOrphan(driver: HypervisorPort, nodeId: string, vmId: string): Promise<boolean> {
    const obs = await driver.observe(vmId);
    if (obs.power === "absent" || obs.owner === undefined || obs.owner !== (await this.deps.store.clusterId())) return false;
    if (obs.power !== "shutdown" && obs.power !== "created") await driver.shutdownVM(vmId, { force: true, timeoutSec: 0 });
    await driver.deleteVM(vmId);
    this.deps.log.log("warn", "removed a guest whose VM no longer exists", { vm_id: vmId, node_id: nodeId, observed: obs.power });
    await this.deps.store.of(EVENT_KIND).create(
      eventOf(VM_KIND as never, { id: vmId, resourceVersion: 0n }, { type: "OrphanRemoved", reason: "VmGone", message: `a guest of this cluster on node '${nodeId}' whose VM no longer exists (${obs.power}) was powered off and deleted`, warning: true, nodeId }, "fencer", this.deps.clock.now()) as never,
      { actor: "fencer" },
    );
    return true;
  }
}
