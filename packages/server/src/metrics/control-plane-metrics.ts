import { NodeStatus_PhaseSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VmStatus_StateSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { NODE_KIND, VM_KIND, type Store } from "@quantix/core";
import type { ControllerManager } from "../runtime/manager.js";
import type { RpcMetrics } from "@quantix/rpc";
import { Gauge } from "prom-client";

/** The control plane's counters a scrape reads besides the store. */
export interface ControlPlaneMetricsSources {
  readonly store: Store;
  readonly rpc: RpcMetrics;
  /** Whether this replica leads (runs the controllers). */
  readonly controllers?: ControllerManager;
}

/**
 * The control plane's Prometheus exposition: the RPC metrics (kept by the RPC kit in
 * `rpc.registry`), VMs by state and nodes by phase (one count query per value, when
 * scraped: the store counts, it never lists objects), the store's revision and open
 * watches. Registers its gauges in `rpc.registry` and returns what renders the whole.
 */
export function controlPlaneMetrics(src: ControlPlaneMetricsSources): () => Promise<string> {
  const { store, rpc } = src;
  const registers = [rpc.registry];
  /** A gauge of how many objects have each value of an enum (every value, UNKNOWN too: a state a VM or node really reports). */
  const countsBy = (name: string, help: string, label: string, values: readonly { name: string; number: number }[], count: (value: number) => Promise<{ totalCount: number }>) =>
    new Gauge({
      name,
      help,
      labelNames: [label],
      registers,
      async collect() {
        const counts = await Promise.all(values.map((v) => count(v.number)));
        values.forEach((v, i) => this.set({ [label]: v.name.toLowerCase() }, counts[i]!.totalCount));
      },
    });
  countsBy("quantix_vms", "VMs by observed state.", "state", VmStatus_StateSchema.values, (state) => store.of(VM_KIND).list({ where: { state }, order: { field: "name", desc: false }, limit: 0, countTotal: true }));
  countsBy("quantix_nodes", "Nodes by phase.", "phase", NodeStatus_PhaseSchema.values, (phase) => store.of(NODE_KIND).list({ where: { phase }, order: { field: "hostname", desc: false }, limit: 0, countTotal: true }));
  new Gauge({
    name: "quantix_store_revision",
    help: "The store's latest revision.",
    registers,
    async collect() {
      this.set(Number(await store.revision()));
    },
  });
  new Gauge({
    name: "quantix_watches_open",
    help: "Open WatchVMs/WatchNodes streams on this replica.",
    registers,
    collect() {
      this.set(rpc.openWatches());
    },
  });
  new Gauge({
    name: "quantix_leader",
    help: "1 while this replica leads the store and runs the controllers, else 0.",
    registers,
    collect() {
      this.set(src.controllers?.leading ? 1 : 0);
    },
  });
  return () => rpc.registry.metrics();
}
