import type { Node, Taint } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
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
  return !sameSchedulingView(ev.previous, ev.object);
}

/**
 * Whether the parts of two nodes the filters and scores read are the same: phase,
 * schedulable, labels, taints, allocatable CPU and memory, hypervisor capabilities.
 * Compared field by field, with no string or array made: it runs on every heartbeat.
 */
function sameSchedulingView(a: Node, b: Node): boolean {
  const as = a.status;
  const bs = b.status;
  return (
    as?.phase === bs?.phase &&
    a.spec?.schedulable === b.spec?.schedulable &&
    as?.allocatable?.cpuCores === bs?.allocatable?.cpuCores &&
    (as?.allocatable?.memoryMib ?? 0n) === (bs?.allocatable?.memoryMib ?? 0n) &&
    sameLabels(a.labels, b.labels) &&
    sameTaints(a.spec?.taints ?? NONE, b.spec?.taints ?? NONE) &&
    sameStrings(as?.hypervisor?.capabilities ?? NONE, bs?.hypervisor?.capabilities ?? NONE)
  );
}

const NONE: readonly never[] = [];

function sameLabels(a: { readonly [k: string]: string }, b: { readonly [k: string]: string }): boolean {
  let n = 0;
  for (const k in a) {
    if (a[k] !== b[k] || !Object.hasOwn(b, k)) return false;
    n++;
  }
  for (const k in b) if (--n < 0 || !Object.hasOwn(a, k)) return false;
  return n === 0;
}

function sameTaints(a: readonly Taint[], b: readonly Taint[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i]!.key !== b[i]!.key || a[i]!.value !== b[i]!.value || a[i]!.effect !== b[i]!.effect) return false;
  return true;
}

function sameStrings(a: readonly string[], b: readonly string[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
