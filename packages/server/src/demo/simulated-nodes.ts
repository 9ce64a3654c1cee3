import { create } from "@bufbuild/protobuf";
import { UpdateHeartbeatRequestSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { PowerState } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { QuantixError, type Clock, type Store, VM_KIND, NODE_KIND } from "@quantix/core";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";
import { SimulatedHypervisor, type SimulatedTiming } from "../hypervisor/simulated-hypervisor.js";
import type { Logger } from "../log.js";
import { HEARTBEAT_INTERVAL_SEC, type NodeService } from "../services/node-service.js";

/**
 * Runs an in-process simulated hypervisor, and its heartbeats, for every node whose
 * status says `hypervisor: simulated` (the demo nodes). VMs that the store records as
 * running on such a node are adopted as running, as a real agent adopts live guests.
 */
export class SimulatedNodes {
  private readonly hypervisors = new Map<string, SimulatedHypervisor>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: { store: Store; drivers: NodeDrivers; nodes: NodeService; clock: Clock; log: Logger; timing?: SimulatedTiming }) {}

  async start(): Promise<void> {
    const nodes = await this.deps.store.of(NODE_KIND).list({ order: { field: "hostname", desc: false }, limit: 10_000 });
    for (const node of nodes.items) {
      // A node with an agent_endpoint is a real agent (perhaps over its simulated backend): attachAgentNodes drives it.
      if (node.status?.hypervisor?.type !== "simulated" || node.spec?.agentEndpoint) continue;
      const hv = new SimulatedHypervisor(this.deps.clock, this.deps.timing);
      const vms = await this.deps.store.of(VM_KIND).list({ where: { node_id: node.id }, order: { field: "name", desc: false }, limit: 100_000 });
      for (const vm of vms.items) {
        if (vm.spec && vm.spec.desiredPowerState === PowerState.RUNNING && vm.status?.startedAt) {
          hv.adoptRunning(vm.id, vm.spec, Number(vm.status.startedAt.seconds) * 1000);
        }
      }
      this.hypervisors.set(node.id, hv);
      this.deps.drivers.attach(node.id, hv);
    }
    await this.beat();
    this.timer = setInterval(() => void this.beat(), HEARTBEAT_INTERVAL_SEC * 1000);
    this.timer.unref();
    if (this.hypervisors.size > 0) this.deps.log.log("info", "simulated hypervisors running", { nodes: this.hypervisors.size });
  }

  /** The simulated hypervisor of a node (tests use it to inject crashes). */
  hypervisor(nodeId: string): SimulatedHypervisor | undefined {
    return this.hypervisors.get(nodeId);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    for (const [id, hv] of this.hypervisors) {
      hv.close();
      this.deps.drivers.detach(id);
    }
  }

  private async beat(): Promise<void> {
    for (const id of this.hypervisors.keys()) {
      try {
        await this.deps.nodes.heartbeat(create(UpdateHeartbeatRequestSchema, { id }));
      } catch (err) {
        if (err instanceof QuantixError && err.code === "not_found") {
          // The node was decommissioned: its simulated host goes away with it.
          this.hypervisors.get(id)?.close();
          this.hypervisors.delete(id);
          this.deps.drivers.detach(id);
          continue;
        }
        this.deps.log.log("warn", "simulated heartbeat failed", { node_id: id, error: String(err) });
      }
    }
  }
}
