import { NodeStatus_PhaseSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VmStatus_StateSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { PrometheusText, type Store } from "@quantix/core";
import type { RpcMetrics } from "@quantix/rpc";

/** The control plane's counters a scrape reads besides the store. */
export interface ControlPlaneMetricsSources {
  readonly store: Store;
  readonly rpc: RpcMetrics;
}

/**
 * The control plane's Prometheus exposition: RPC counters and latency, VMs by state and
 * nodes by phase (one count query per value: the store counts, it never lists objects),
 * the store's revision and open watches.
 */
export async function renderControlPlaneMetrics(src: ControlPlaneMetricsSources): Promise<string> {
  const { store } = src;
  // Every value, UNKNOWN too: it is a state a VM or node really reports.
  const vmStates = VmStatus_StateSchema.values;
  const phases = NodeStatus_PhaseSchema.values;
  const [vmCounts, nodeCounts, revision] = await Promise.all([
    Promise.all(vmStates.map((s) => store.vms.list({ states: [s.number], order: { field: "name", desc: false }, limit: 0, countTotal: true }))),
    Promise.all(phases.map((p) => store.nodes.list({ phases: [p.number], order: { field: "hostname", desc: false }, limit: 0, countTotal: true }))),
    store.revision(),
  ]);
  const out = new PrometheusText();
  src.rpc.render(out);
  out.family("quantix_vms", "gauge", "VMs by observed state.");
  vmStates.forEach((s, i) => out.sample("quantix_vms", { state: s.name.toLowerCase() }, vmCounts[i]!.totalCount));
  out.family("quantix_nodes", "gauge", "Nodes by phase.");
  phases.forEach((p, i) => out.sample("quantix_nodes", { phase: p.name.toLowerCase() }, nodeCounts[i]!.totalCount));
  out.family("quantix_store_revision", "gauge", "The store's latest revision.");
  out.sample("quantix_store_revision", {}, revision);
  out.family("quantix_watches_open", "gauge", "Open WatchVMs/WatchNodes streams on this replica.");
  out.sample("quantix_watches_open", {}, src.rpc.openWatches());
  return out.toString();
}

