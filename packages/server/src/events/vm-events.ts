import { ConditionStatus, type Condition } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { VmStatus_State as State, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import type { EventInit } from "./record.js";

const cond = (vm: VirtualMachine, type: string): Condition | undefined => vm.status?.conditions.find((c) => c.type === type);
const changed = (a: Condition | undefined, b: Condition | undefined) => !!b && (a?.reason !== b.reason || a.status !== b.status || a.message !== b.message);

/**
 * The lifecycle events a change of a VM means, like Nova's instance actions: what its
 * writers (the scheduler, the VM controller, HA, the fencer) changed, read from the VM
 * before and after. A write that changes nothing users care about means none.
 */
export function vmEvents(before: VirtualMachine, after: VirtualMachine): EventInit[] {
  const out: EventInit[] = [];
  const a = before.status;
  const b = after.status;
  const node = b?.nodeId ?? "";
  // Bindings (the scheduler's).
  if ((a?.nodeId ?? "") !== node) {
    if (!a?.nodeId) out.push({ type: "Scheduled", reason: "Placed", message: `placed on node '${node}'`, nodeId: node });
    else if (node) out.push({ type: "Migrated", reason: cond(after, "Migrating")?.reason ?? "Completed", message: cond(after, "Migrating")?.message ?? `moved to node '${node}'`, nodeId: node });
    else {
      const ha = cond(after, "HaRestart");
      if (ha?.reason === "NodeLost" && changed(cond(before, "HaRestart"), ha)) out.push({ type: "HaRestart", reason: "NodeLost", message: ha.message, warning: true, nodeId: a.nodeId });
      else out.push({ type: "Unplaced", reason: cond(after, "Scheduled")?.reason ?? "Unplaced", message: cond(after, "Scheduled")?.message ?? `left node '${a.nodeId}'`, nodeId: a.nodeId });
    }
  }
  const target = b?.migrationTargetNodeId ?? "";
  if ((a?.migrationTargetNodeId ?? "") !== target) {
    if (target) out.push({ type: "MigrationStarted", reason: "TargetReserved", message: `migrating from node '${node}' to node '${target}'`, nodeId: target });
    else if ((a?.nodeId ?? "") === node) out.push({ type: "MigrationFailed", reason: cond(after, "Migrating")?.reason ?? "Failed", message: cond(after, "Migrating")?.message ?? "the migration ended", warning: true, nodeId: node });
  }
  const sched = cond(after, "Scheduled");
  if (sched?.reason === "Unschedulable" && cond(before, "Scheduled")?.reason !== "Unschedulable") out.push({ type: "Unschedulable", reason: "Unschedulable", message: sched.message, warning: true });
  // Power (the VM controller's, from what the node observes).
  const from = a?.state ?? State.UNKNOWN;
  const to = b?.state ?? State.UNKNOWN;
  if (from !== to) {
    const on = { nodeId: node };
    if (to === State.RUNNING && from !== State.MIGRATING && from !== State.UNKNOWN && from !== State.STATE_UNSPECIFIED) out.push({ type: from === State.PAUSED ? "Resumed" : "Started", reason: "Observed", message: `the guest runs on node '${node}'`, ...on });
    else if (to === State.STOPPED && node) out.push({ type: "Stopped", reason: "Observed", message: `the guest is off on node '${node}'`, ...on });
    else if (to === State.PAUSED) out.push({ type: "Paused", reason: "Observed", message: "the guest's vCPUs are paused", ...on });
    else if (to === State.SUSPENDED) out.push({ type: "Suspended", reason: "Observed", message: "the guest's memory is saved", ...on });
    else if (to === State.CRASHED) out.push({ type: "Crashed", reason: "ProcessExited", message: b?.errorMessage ?? "", warning: true, ...on });
    else if (to === State.ERROR) out.push({ type: "Failed", reason: cond(after, "SpecAccepted")?.reason ?? "Error", message: b?.errorMessage ?? "", warning: true, ...on });
    else if (to === State.UNKNOWN && node) out.push({ type: "Unreachable", reason: "NodeUnreachable", message: b?.errorMessage ?? "", warning: true, ...on });
  }
  if ((b?.rebootSequence ?? 0n) > (a?.rebootSequence ?? 0n) && to === State.RUNNING) out.push({ type: "Rebooted", reason: after.spec?.reboot?.force ? "Reset" : "Reboot", message: "the guest was rebooted", nodeId: node });
  // HA and fencing.
  const ha = cond(after, "HaRestart");
  if (ha && ha.reason !== "NodeLost" && changed(cond(before, "HaRestart"), ha)) out.push({ type: ha.status === ConditionStatus.TRUE ? "HaRestart" : "HaGaveUp", reason: ha.reason, message: ha.message, warning: true, nodeId: node });
  const fenced = cond(after, "Fenced");
  if (changed(cond(before, "Fenced"), fenced)) out.push({ type: "Fenced", reason: fenced!.reason, message: fenced!.message, warning: true });
  // Deletion (the VM controller removed its guest: the VM goes).
  if (after.deletionRequestedAt && before.finalizers.length > 0 && after.finalizers.length === 0) out.push({ type: "Deleted", reason: "GuestRemoved", message: "the VM's guest was removed from its node; the VM is deleted" });
  return out;
}
