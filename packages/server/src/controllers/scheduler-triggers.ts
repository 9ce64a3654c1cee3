import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { PowerState, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import type { ChangeEvent } from "@quantix/core";
import { desiredOf } from "./vm-status.js";

// Which store changes can change a scheduling decision. Status writes (the reconciler's,
// heartbeats) are most changes and cannot, so they start no pass.

const wantsNode = (vm: VirtualMachine) => !vm.status?.nodeId && desiredOf(vm) !== PowerState.STOPPED;

/**
 * A VM change matters when a VM needs a node (added, started, its spec changed), or when
 * capacity or affinity may have moved: a placed VM deleted, moved, resized or relabelled.
 */
export function vmChangeMatters(ev: ChangeEvent<VirtualMachine>): boolean {
  const vm = ev.object;
  if (ev.type === "ADDED") return wantsNode(vm);
  if (ev.type === "DELETED") return Boolean(vm.status?.nodeId);
  const prev = ev.previous;
  if (!prev) return true;
  if ((prev.status?.nodeId ?? "") !== (vm.status?.nodeId ?? "")) return true;
  if (prev.generation !== vm.generation) return true;
  if (JSON.stringify(prev.labels) !== JSON.stringify(vm.labels)) return Boolean(vm.status?.nodeId);
  return wantsNode(vm) && !wantsNode(prev);
}

/** A node change matters when it is added or removed, or what the filters read changed (not a heartbeat). */
export function nodeChangeMatters(ev: ChangeEvent<Node>): boolean {
  if (ev.type !== "MODIFIED" || !ev.previous) return true;
  return schedulingView(ev.previous) !== schedulingView(ev.object);
}

/** The parts of a node the filters and scores read, as one comparable string. */
function schedulingView(n: Node): string {
  return JSON.stringify([
    n.status?.phase,
    n.spec?.schedulable,
    n.labels,
    (n.spec?.taints ?? []).map((t) => [t.key, t.value, t.effect]),
    n.status?.allocatable?.cpuCores,
    String(n.status?.allocatable?.memoryMib ?? 0n),
    n.status?.hypervisor?.capabilities ?? [],
  ]);
}
