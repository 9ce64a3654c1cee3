import { DrainStatus_Phase as DPhase, NodeStatus_Phase as Phase, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { EventInit } from "./record.js";

/** The lifecycle events a change of a node means: its phase, schedulability and drains. */
export function nodeEvents(before: Node, after: Node): EventInit[] {
  const out: EventInit[] = [];
  const from = before.status?.phase ?? Phase.UNKNOWN;
  const to = after.status?.phase ?? Phase.UNKNOWN;
  const heartbeat = after.status?.conditions.find((c) => c.type === "Heartbeat")?.message ?? "";
  if (from !== to) {
    if (to === Phase.READY) out.push({ type: "Ready", reason: "AgentReporting", message: "the node's agent reports it ready" });
    else if (to === Phase.NOT_READY) out.push({ type: "NotReady", reason: "NotReady", message: heartbeat || "the node is not ready", warning: true });
    else if (to === Phase.OFFLINE) out.push({ type: "Lost", reason: "HeartbeatMissed", message: `${heartbeat}; HA restarts its HA VMs elsewhere`, warning: true });
  }
  if ((before.spec?.schedulable ?? false) !== (after.spec?.schedulable ?? false)) {
    out.push(after.spec?.schedulable ? { type: "Enabled", reason: "Schedulable", message: "new VMs may be placed on the node" } : { type: "Disabled", reason: "Unschedulable", message: "no new VM is placed on the node" });
  }
  const d0 = before.status?.drain;
  const d1 = after.status?.drain;
  if (d1 && (d0?.sequence !== d1.sequence || d0.phase !== d1.phase)) {
    const summary = `${d1.migratedVmIds.length} moved, ${d1.stoppedVmIds.length} stopped, ${d1.failures.length} failed`;
    if (d1.phase === DPhase.RUNNING && d0?.sequence !== d1.sequence) out.push({ type: "DrainStarted", reason: "DrainNode", message: `draining ${d1.remainingVmIds.length} VM(s)` });
    else if (d1.phase === DPhase.COMPLETED) out.push({ type: "Drained", reason: "Drained", message: `drained: ${summary}` });
    else if (d1.phase === DPhase.INCOMPLETE) out.push({ type: "DrainIncomplete", reason: "DrainIncomplete", message: `drain incomplete: ${summary}`, warning: true });
  }
  return out;
}
