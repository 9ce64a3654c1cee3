import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { allocatableOf, type Demand, type NodeLoad, type SchedulableVm } from "./cluster.js";
import { hostsMatch } from "./filters.js";
import { untoleratedPreferences } from "./taints.js";

/** How nodes that fit are ranked: spread (most left free), pack (least left free), balanced (CPU and memory used alike). */
export type ScoringStrategy = "spread" | "pack" | "balanced";

/** Every strategy, for configuration. */
export const SCORING_STRATEGIES: readonly ScoringStrategy[] = ["spread", "pack", "balanced"];

/** A preferred node outranks any difference the strategy can make (0-100). */
export const PREFERRED_BONUS = 200;
/** Each untolerated PREFER_NO_SCHEDULE taint outranks every other score: such nodes are used only when nothing else fits. */
export const PREFER_NO_SCHEDULE_PENALTY = 100_000;

/** Each strategy's score, 0-100, from the fractions of CPU and memory used once the VM is there. */
const BY_USE: { readonly [S in ScoringStrategy]: (cpuUsed: number, memUsed: number) => number } = {
  spread: (cpuUsed, memUsed) => 100 * (1 - (cpuUsed + memUsed) / 2),
  pack: (cpuUsed, memUsed) => 100 * ((cpuUsed + memUsed) / 2),
  balanced: (cpuUsed, memUsed) => 100 * (1 - Math.abs(cpuUsed - memUsed)),
};

/** A strategy's score from the fractions used (for the scheduler's fast path, which looks it up once per VM). */
export function scoreByUse(strategy: ScoringStrategy): (cpuUsed: number, memUsed: number) => number {
  return BY_USE[strategy];
}

/** The fraction of a resource used once `need` is added to `given` out of `alloc`; a resource the node has none of counts as fully used. */
export function usedFraction(alloc: number, given: number, need: number): number {
  return alloc > 0 ? (given + need) / alloc : 1;
}

/**
 * The strategy's score of a node for a VM, 0-100, from the fractions of CPU and memory
 * used once the VM is there. A resource the node has none of counts as fully used.
 */
export function strategyScore(strategy: ScoringStrategy, node: Node, load: NodeLoad, need: Demand): number {
  const alloc = allocatableOf(node);
  return BY_USE[strategy](usedFraction(alloc.vcpus, load.vcpus, need.vcpus), usedFraction(alloc.memoryMib, load.memoryMib, need.memoryMib));
}

/**
 * A node's total score: the strategy's, plus PREFERRED_BONUS on a preferred node, plus
 * (minus) each soft affinity (anti-affinity) rule's weight when the node hosts a VM it
 * matches, minus PREFER_NO_SCHEDULE_PENALTY per untolerated PreferNoSchedule taint.
 */
export function scoreNode(strategy: ScoringStrategy, vm: SchedulableVm, need: Demand, node: Node, load: NodeLoad): number {
  const pl = vm.spec?.placement;
  let score = strategyScore(strategy, node, load, need);
  if (pl?.preferredNodeIds.includes(node.id)) score += PREFERRED_BONUS;
  for (const rule of pl?.affinity ?? []) {
    if (rule.required || !hostsMatch(load, rule, vm.id)) continue;
    const weight = rule.weight > 0 ? rule.weight : 1;
    score += rule.anti ? -weight : weight;
  }
  score -= PREFER_NO_SCHEDULE_PENALTY * untoleratedPreferences(node.spec?.taints ?? [], pl?.tolerations ?? []);
  return score;
}
