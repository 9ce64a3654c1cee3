import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { NodeStatus_Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { TaintEffect, TolerationOperator, type VmSpec } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { matchesLabels } from "./labels.js";

/** What a VM asks of a node. */
export interface Demand {
  readonly vcpus: number;
  readonly memoryMib: number;
}

/** The vCPUs and memory a spec asks for. */
export function demandOf(spec: VmSpec | undefined): Demand {
  const cpu = spec?.cpu;
  const vcpus = cpu ? cpu.cores * Math.max(1, cpu.sockets) * Math.max(1, cpu.threadsPerCore) : 0;
  return { vcpus, memoryMib: Number(spec?.memory?.sizeMib ?? 0n) };
}

/** The result of placement: a node, or why each node was rejected. */
export type Placement =
  | { readonly ok: true; readonly nodeId: string }
  | { readonly ok: false; readonly reason: string; readonly message: string };

/**
 * Chooses a node for a VM: a first-fit filter (ready, schedulable, hypervisor connected,
 * placement rules, untolerated NoSchedule taints, free CPU and memory), then the node
 * with the most free memory, ties broken by hostname. The full filter-and-score
 * scheduler replaces this with the same inputs and output.
 */
export function placeVm(spec: VmSpec | undefined, nodes: readonly Node[], connected: (nodeId: string) => boolean): Placement {
  const need = demandOf(spec);
  const rejections = new Map<string, number>();
  const reject = (why: string) => rejections.set(why, (rejections.get(why) ?? 0) + 1);
  let best: { node: Node; freeMem: number } | undefined;
  let largestFreeMem = 0;
  for (const node of nodes) {
    const phase = node.status?.phase ?? NodeStatus_Phase.UNKNOWN;
    if (phase !== NodeStatus_Phase.READY) { reject(`not ready (${NodeStatus_Phase[phase]})`); continue; }
    if (!node.spec?.schedulable) { reject("not schedulable"); continue; }
    if (!connected(node.id)) { reject("no connected hypervisor"); continue; }
    const pl = spec?.placement;
    if (pl?.requiredNodeIds.length && !pl.requiredNodeIds.includes(node.id)) { reject("not in required_node_ids"); continue; }
    if (pl?.excludedNodeIds.includes(node.id)) { reject("excluded"); continue; }
    if (pl && !matchesLabels(node.labels, pl.nodeSelector)) { reject("node_selector does not match"); continue; }
    const taint = node.spec.taints.find((t) => (t.effect === TaintEffect.NO_SCHEDULE || t.effect === TaintEffect.NO_EXECUTE) && !tolerated(spec, t));
    if (taint) { reject(`tainted ${taint.key}:${TaintEffect[taint.effect]}`); continue; }
    const alloc = node.status?.allocatable;
    const used = node.status?.allocated;
    const freeCpu = (alloc?.cpuCores ?? 0) - (used?.cpuCores ?? 0);
    const freeMem = Number(alloc?.memoryMib ?? 0n) - Number(used?.memoryMib ?? 0n);
    largestFreeMem = Math.max(largestFreeMem, freeMem);
    if (freeMem < need.memoryMib) { reject(`insufficient memory (need ${need.memoryMib} MiB)`); continue; }
    if (freeCpu < need.vcpus) { reject(`insufficient CPU (need ${need.vcpus} vCPUs, free ${freeCpu})`); continue; }
    if (!best || freeMem > best.freeMem || (freeMem === best.freeMem && node.hostname < best.node.hostname)) best = { node, freeMem };
  }
  if (best) return { ok: true, nodeId: best.node.id };
  const parts = [...rejections].map(([why, n]) => `${n} ${why}`);
  const memNote = rejections.size > 0 && [...rejections.keys()].some((k) => k.startsWith("insufficient memory")) ? `, largest free ${largestFreeMem} MiB` : "";
  return {
    ok: false,
    reason: "Unschedulable",
    message: `0/${nodes.length} nodes fit${parts.length ? `: ${parts.join(", ")}${memNote}` : ""}`,
  };
}

function tolerated(spec: VmSpec | undefined, taint: { key: string; value: string; effect: TaintEffect }): boolean {
  return (spec?.placement?.tolerations ?? []).some((t) => {
    if (t.effect !== TaintEffect.UNSPECIFIED && t.effect !== taint.effect) return false;
    if (t.operator === TolerationOperator.EXISTS) return t.key === "" || t.key === taint.key;
    return t.key === taint.key && t.value === taint.value;
  });
}
