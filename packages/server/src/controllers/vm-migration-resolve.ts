import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { NODE_KIND, QuantixError, VM_KIND, type Clock, type Store } from "@quantix/core";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";
import type { Logger } from "../log.js";
import { migrationOutcome, type MigrationOutcome } from "../services/migration-outcome.js";
import { setCondition } from "./conditions.js";
import { leaseFresh } from "./migration-lease.js";

/**
 * A migration whose replica stopped before resolving it (its lease expired): both nodes
 * are observed. The target is adopted if the source's copy is gone and the target runs
 * it; otherwise the target's copy is removed and the VM stays on its source. Nothing is
 * defined or booted until then: a node that cannot be asked fails the pass (retried).
 */
export async function resolveMigration(vm: VirtualMachine, deps: { store: Store; drivers: NodeDrivers; clock: Clock; log: Logger }): Promise<void> {
  const sourceId = vm.status!.nodeId;
  const targetId = vm.status!.migrationTargetNodeId;
  const src = deps.drivers.get(sourceId);
  const dst = deps.drivers.get(targetId);
  let outcome: MigrationOutcome = "source";
  if (dst || (await deps.store.of(NODE_KIND).get(targetId))) {
    if (!src || !dst) throw new QuantixError("unavailable", `VM '${vm.id}' has an interrupted migration from node '${sourceId}' to node '${targetId}'; it is resolved once both nodes are connected`);
    outcome = await migrationOutcome(vm.id, src, dst);
    if (outcome === "source") await dst.deleteVM(vm.id);
  }
  const now = deps.clock.now();
  const nodeId = outcome === "target" ? targetId : sourceId;
  await deps.store.of(VM_KIND).update(vm.id, (cur) => {
    if (cur.status?.migrationTargetNodeId !== targetId || leaseFresh(cur, now)) return undefined;
    cur.status.nodeId = nodeId;
    cur.status.migrationTargetNodeId = "";
    if (outcome === "target") cur.status.hypervisor = dst!.kind;
    const message = `the control plane stopped during the migration to node '${targetId}'; ${outcome === "target" ? "it had completed, and the VM runs there" : "the VM stays on its node"} ('${nodeId}')`;
    cur.status.conditions = setCondition(cur.status.conditions, { type: "Migrating", status: false, reason: "Interrupted", message, generation: cur.generation }, now);
    cur.updatedAt = timestampFromMs(now);
    return cur;
  });
  deps.log.log("warn", "resolved an interrupted migration", { vm_id: vm.id, source: sourceId, target: targetId, outcome });
}
