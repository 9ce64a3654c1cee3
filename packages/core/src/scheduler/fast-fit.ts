import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { demandOf, type ClusterState, type NodeLoad, type SchedulableVm, type StaticMask } from "./cluster.js";
import { capabilitiesFilter, nodeSelectorFilter, readyFilter, schedulableFilter, taintFilter, type Filter, type FilterContext } from "./filters.js";
import { PREFER_NO_SCHEDULE_PENALTY, PREFERRED_BONUS, strategyScoreOf, type ScoringStrategy } from "./scores.js";
import { untoleratedPreferences } from "./taints.js";

/** The filters that read only the node and the VM's spec: their verdicts are cached per set of constraints (staticKey). */
const STATIC_FILTERS: readonly Filter[] = [readyFilter, schedulableFilter, nodeSelectorFilter, capabilitiesFilter, taintFilter];

const NO_LOAD: NodeLoad = { vcpus: 0, memoryMib: 0, vms: [] };

/**
 * What the static filters and the PreferNoSchedule count read of a VM: its node selector,
 * required capabilities (with those cloud-init data and port NICs imply) and tolerations.
 * VMs with the same key get the same static mask.
 */
export function staticKey(vm: SchedulableVm): string {
  const spec = vm.spec;
  const pl = spec?.placement;
  return JSON.stringify([
    pl ? Object.entries(pl.nodeSelector) : [],
    pl?.requiredCapabilities ?? [],
    (pl?.tolerations ?? []).map((t) => [t.key, t.operator, t.value, t.effect]),
    Boolean(spec?.provisioning?.cloudInit),
    spec?.nics.some((n) => n.portId !== "") ?? false,
  ]);
}

function computeMask(vm: SchedulableVm, cluster: ClusterState, nodes: readonly Node[]): StaticMask {
  const ctx: FilterContext = { vm, demand: demandOf(vm.spec), cluster, isConnected: undefined, hardAffinity: [] };
  const ok = new Uint8Array(nodes.length);
  const prefer = new Int32Array(nodes.length);
  const tolerations = vm.spec?.placement?.tolerations ?? [];
  for (const [i, node] of nodes.entries()) {
    ok[i] = STATIC_FILTERS.every((f) => f(ctx, node, NO_LOAD) === undefined) ? 1 : 0;
    prefer[i] = untoleratedPreferences(node.spec?.taints ?? [], tolerations);
  }
  return { ok, prefer };
}

function mark(n: number, positions: readonly number[]): Uint8Array {
  const out = new Uint8Array(n);
  for (const i of positions) out[i] = 1;
  return out;
}

/**
 * The node schedule() chooses for a VM when one fits, else undefined: every filter and
 * the score as filters.ts and scores.ts define them, from the cluster's indexes. Static
 * filters come from a mask cached per set of constraints; required node ids and volume
 * nodes narrow the nodes looked at; capacity is read from the loads; affinity rules from
 * the label index (cluster.nodesHosting). Nodes are visited in id order and the first of
 * equal best scores wins, as schedule() has always done.
 */
export function fastFit(vm: SchedulableVm, cluster: ClusterState, strategy: ScoringStrategy, isConnected: ((nodeId: string) => boolean) | undefined): string | undefined {
  const slots = cluster.slotsInOrder();
  const n = slots.length;
  if (n === 0) return undefined;
  const pl = vm.spec?.placement;
  const demand = demandOf(vm.spec);
  const mask = cluster.staticMask(staticKey(vm), (nodes) => computeMask(vm, cluster, nodes));

  let only: number[] | undefined;
  if (pl?.requiredNodeIds.length) only = cluster.positionsOf(pl.requiredNodeIds);
  if (vm.volumeNodeIds) {
    const reach = mark(n, cluster.positionsOf(vm.volumeNodeIds));
    only = (only ?? slots.map((s) => s.idx)).filter((i) => reach[i]);
  }
  const excluded = pl?.excludedNodeIds.length ? mark(n, cluster.positionsOf(pl.excludedNodeIds)) : undefined;
  const preferred = pl?.preferredNodeIds.length ? mark(n, cluster.positionsOf(pl.preferredNodeIds)) : undefined;

  const hard: { anti: boolean; here: Uint8Array; anyMatch: boolean }[] = [];
  const soft: { weight: number; here: Uint8Array }[] = [];
  for (const rule of pl?.affinity ?? []) {
    const here = cluster.nodesHosting(rule.selector, vm.id);
    if (rule.required) hard.push({ anti: rule.anti, here, anyMatch: !rule.anti && here.includes(1) });
    else {
      const weight = rule.weight > 0 ? rule.weight : 1;
      soft.push({ weight: rule.anti ? -weight : weight, here });
    }
  }

  const alloc = cluster.allocatableArrays();
  // Locals: the hot loop then reads no module bindings.
  const scoreOf = strategyScoreOf;
  const bonus = PREFERRED_BONUS;
  const penalty = PREFER_NO_SCHEDULE_PENALTY;
  const count = only ? only.length : n;
  let best = -1;
  let bestScore = 0;
  for (let k = 0; k < count; k++) {
    const i = only ? only[k]! : k;
    if (!mask.ok[i] || excluded?.[i]) continue;
    const slot = slots[i]!;
    if (isConnected && !isConnected(slot.id)) continue;
    const load = slot.load;
    if (!(alloc.memoryMib[i]! - load.memoryMib >= demand.memoryMib)) continue;
    if (!(alloc.vcpus[i]! - load.vcpus >= demand.vcpus)) continue;
    let blocked = false;
    for (const h of hard) {
      if (h.here[i] ? h.anti : !h.anti && h.anyMatch) {
        blocked = true;
        break;
      }
    }
    if (blocked) continue;
    // The same additions in the same order as scoreNode, so equal inputs give equal floats.
    let score = scoreOf(strategy, alloc.vcpus[i]!, alloc.memoryMib[i]!, load.vcpus, load.memoryMib, demand);
    if (preferred?.[i]) score += bonus;
    for (const s of soft) if (s.here[i]) score += s.weight;
    score -= penalty * mask.prefer[i]!;
    if (best < 0 || score > bestScore) {
      best = i;
      bestScore = score;
    }
  }
  return best < 0 ? undefined : slots[best]!.id;
}
