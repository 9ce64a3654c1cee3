import { demandOf, type ClusterState, type ClusterView, type SchedulableVm } from "./cluster.js";
import { explain } from "./explain.js";
import { fastFit } from "./fast-fit.js";
import { FILTERS, hostsMatch, type FilterContext, type Rejection } from "./filters.js";
import { scoreNode, type ScoringStrategy } from "./scores.js";

/** How to schedule. */
export interface ScheduleOptions {
  readonly strategy: ScoringStrategy;
  /** Whether the control plane can drive a node's hypervisor; absent means every node. */
  readonly isConnected?: ((nodeId: string) => boolean) | undefined;
}

/** The result of scheduling: a node, or why no node fits. */
export type Placement =
  | { readonly ok: true; readonly nodeId: string }
  | { readonly ok: false; readonly reason: "Unschedulable"; readonly message: string };

/**
 * Chooses a node for a VM as Nova's filter scheduler and kube-scheduler do: every filter
 * (filters.ts) drops nodes, then the highest score (scores.ts) wins, ties to the lowest
 * node id. Pure: the caller records the placement with `cluster.assign` before the next.
 * A fitting node is found from the cluster's indexes (fast-fit.ts); only a VM that fits
 * nowhere is filtered node by node, for the explanation.
 */
export function schedule(vm: SchedulableVm, cluster: ClusterState, options: ScheduleOptions): Placement {
  const nodeId = fastFit(vm, cluster, options.strategy, options.isConnected);
  if (nodeId !== undefined) return { ok: true, nodeId };
  return scheduleNodeByNode(vm, cluster, options);
}

/**
 * The scheduler node by node, as it was before the indexes: every filter on every node, in
 * order, so each node's first rejection is known for the explanation. schedule() takes this
 * way only when no node fits (fastFit found none); its answer is then the explanation. The
 * tests hold fastFit to it over randomized clusters (fast-fit.test.ts).
 */
export function scheduleNodeByNode(vm: SchedulableVm, cluster: ClusterView, options: ScheduleOptions): Placement {
  const demand = demandOf(vm.spec);
  const hard = (vm.spec?.placement?.affinity ?? []).filter((r) => r.required);
  const ctx: FilterContext = {
    vm,
    demand,
    cluster,
    isConnected: options.isConnected,
    hardAffinity: hard.map((rule) => ({ rule, anyMatch: !rule.anti && cluster.nodes.some((n) => hostsMatch(cluster.loadOf(n.id), rule, vm.id)) })),
  };
  const rejections: Rejection[] = [];
  let best: { id: string; score: number } | undefined;
  for (const node of cluster.nodes) {
    const load = cluster.loadOf(node.id);
    let rejected: Rejection | undefined;
    for (const filter of FILTERS) {
      rejected = filter(ctx, node, load);
      if (rejected) break;
    }
    if (rejected) {
      rejections.push(rejected);
      continue;
    }
    const score = scoreNode(options.strategy, vm, demand, node, load);
    // Nodes come in id order, so keeping the first of equal scores breaks ties by id.
    if (!best || score > best.score) best = { id: node.id, score };
  }
  if (best) return { ok: true, nodeId: best.id };
  return { ok: false, reason: "Unschedulable", message: explain(cluster.nodes.length, rejections) };
}
