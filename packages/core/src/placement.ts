import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { VmSpec } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { ClusterState } from "./scheduler/cluster.js";
import { schedule, type Placement } from "./scheduler/schedule.js";
import type { ScoringStrategy } from "./scheduler/scores.js";

export * from "./scheduler/index.js";

/**
 * Chooses a node for one VM from nodes alone, taking what each node has given out from
 * its status.allocated (so VM affinity rules see no VMs). For a quick answer outside the
 * scheduler controller, e.g. a drain target; the controller itself schedules against a
 * ClusterState built from every VM, which is what keeps concurrent placements honest.
 */
export function placeVm(spec: VmSpec | undefined, nodes: readonly Node[], connected: (nodeId: string) => boolean, strategy: ScoringStrategy = "spread"): Placement {
  const cluster = new ClusterState(nodes);
  for (const n of nodes) {
    const load = cluster.loadOf(n.id);
    load.vcpus = n.status?.allocated?.cpuCores ?? 0;
    load.memoryMib = Number(n.status?.allocated?.memoryMib ?? 0n);
  }
  return schedule({ id: "", labels: {}, spec }, cluster, { strategy, isConnected: connected });
}
