import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { demandOf, type ClusterState, type NodeLoad, type SchedulableVm, type StaticMask } from "./cluster.js";
import { capabilitiesFilter, nodeSelectorFilter, readyFilter, schedulableFilter, taintFilter, type Filter, type FilterContext } from "./filters.js";
import { PREFER_NO_SCHEDULE_PENALTY, PREFERRED_BONUS, scoreByUse, usedFraction, type ScoringStrategy } from "./scores.js";
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
  const passing: number[] = [];
  const tolerations = vm.spec?.placement?.tolerations ?? [];
  for (const [i, node] of nodes.entries()) {
    ok[i] = STATIC_FILTERS.every((f) => f(ctx, node, NO_LOAD) === undefined) ? 1 : 0;
    if (ok[i]) passing.push(i);
    prefer[i] = untoleratedPreferences(node.spec?.taints ?? [], tolerations);
  }
  return { ok, prefer, passing: Int32Array.from(passing) };
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
  const n = cluster.slotsInOrder().length;
  if (n === 0) return undefined;
  let borrowed = 0;
  const flags = () => cluster.scratchFlags(borrowed++);
  try {
    return bestNode(vm, cluster, strategy, isConnected, flags);
  } finally {
    for (let k = 0; k < borrowed; k++) cluster.scratchFlags(k).fill(0);
  }
}

function bestNode(vm: SchedulableVm, cluster: ClusterState, strategy: ScoringStrategy, isConnected: ((nodeId: string) => boolean) | undefined, flags: () => Uint8Array): string | undefined {
  const slots = cluster.slotsInOrder();
  const pl = vm.spec?.placement;
  const demand = demandOf(vm.spec);
  const mask = cluster.staticMask(staticKey(vm), (nodes) => computeMask(vm, cluster, nodes));
  const mark = (ids: readonly string[]) => {
    const out = flags();
    for (const i of cluster.positionsOf(ids)) out[i] = 1;
    return out;
  };

  let only: number[] | undefined;
  if (pl?.requiredNodeIds.length) only = cluster.positionsOf(pl.requiredNodeIds);
  if (vm.volumeNodeIds) {
    const reach = mark(vm.volumeNodeIds);
    only = (only ?? Array.from(mask.passing)).filter((i) => reach[i]);
  }
  const excluded = pl?.excludedNodeIds.length ? mark(pl.excludedNodeIds) : undefined;
  const preferred = pl?.preferredNodeIds.length ? mark(pl.preferredNodeIds) : undefined;

  const hard: { anti: boolean; here: Uint8Array; anyMatch: boolean }[] = [];
  const soft: { weight: number; here: Uint8Array }[] = [];
  for (const rule of pl?.affinity ?? []) {
    const here = cluster.nodesHosting(rule.selector, vm.id, flags());
    if (rule.required) hard.push({ anti: rule.anti, here, anyMatch: !rule.anti && here.includes(1) });
    else {
      const weight = rule.weight > 0 ? rule.weight : 1;
      soft.push({ weight: rule.anti ? -weight : weight, here });
    }
  }

  const alloc = cluster.allocatableArrays();
  // Locals: the hot loop then reads no module bindings and no object properties it can hoist.
  const byUse = scoreByUse(strategy);
  const used = usedFraction;
  const bonus = PREFERRED_BONUS;
  const penalty = PREFER_NO_SCHEDULE_PENALTY;
  const { ok, prefer } = mask;
  const allocVcpus = alloc.vcpus;
  const allocMem = alloc.memoryMib;
  const needVcpus = demand.vcpus;
  const needMem = demand.memoryMib;
  // The nodes the static filters pass, unless required ids or volumes name fewer.
  const visit = only ? Int32Array.from(only) : mask.passing;
  const count = visit.length;
  const hardCount = hard.length;
  const softCount = soft.length;
  let best = -1;
  let bestScore = 0;
  for (let k = 0; k < count; k++) {
    const i = visit[k]!;
    if (!ok[i] || excluded?.[i]) continue;
    const slot = slots[i]!;
    if (isConnected && !isConnected(slot.id)) continue;
    const load = slot.load;
    const av = allocVcpus[i]!;
    const am = allocMem[i]!;
    if (!(am - load.memoryMib >= needMem)) continue;
    if (!(av - load.vcpus >= needVcpus)) continue;
    let blocked = false;
    for (let r = 0; r < hardCount; r++) {
      const h = hard[r]!;
      if (h.here[i] ? h.anti : !h.anti && h.anyMatch) {
        blocked = true;
        break;
      }
    }
    if (blocked) continue;
    // The same additions in the same order as scoreNode, so equal inputs give equal floats.
    let score = byUse(used(av, load.vcpus, needVcpus), used(am, load.memoryMib, needMem));
    if (preferred?.[i]) score += bonus;
    for (let r = 0; r < softCount; r++) {
      const sr = soft[r]!;
      if (sr.here[i]) score += sr.weight;
    }
    score -= penalty * prefer[i]!;
    // Positions ascend, so keeping the first of equal scores breaks ties by node id.
    if (best < 0 || score > bestScore) {
      best = i;
      bestScore = score;
    }
  }
  return best < 0 ? undefined : slots[best]!.id;
}
