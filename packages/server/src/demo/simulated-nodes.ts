import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { RegisterNodeRequestSchema, UpdateHeartbeatRequestSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { PowerState, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { allOf, NODE_KIND, QuantixError, toAgentVmConfig, VM_KIND, type Store, type VmObservation } from "@quantix/core";
import { inProcessConnection } from "../hypervisor/agent-connection.js";
import { AgentHypervisor } from "../hypervisor/agent-hypervisor.js";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";
import type { Logger } from "@quantix/rpc";
import { HEARTBEAT_INTERVAL_SEC, type NodeService } from "../services/node-service.js";
import type { SeededGuest, SimulatedHost, SimulatedHostFactory } from "./simulated-host.js";
import { DEMO_IMAGES } from "./demo-data.js";

/** What {@link SimulatedNodes} needs from the composition root. */
export interface SimulatedNodesDeps {
  readonly store: Store;
  readonly drivers: NodeDrivers;
  readonly nodes: NodeService;
  readonly log: Logger;
  /** Starts a node's simulated host; without it, simulated nodes stay unconnected (and say so). */
  readonly hosts?: SimulatedHostFactory | undefined;
  /** How long a simulated guest takes to boot (QUANTIX_SIM_BOOT_MS). */
  readonly bootMs: number;
  /** The directories holding a node's volume files (its DirNodeStorage root, the shared dirs): VM disks there are allowed. */
  readonly volumeDirs?: (nodeId: string) => readonly string[];
  /** The files of a VM's volume disks on its node, for the guests a host re-adopts at start. */
  readonly volumePaths?: (vm: VirtualMachine) => Promise<ReadonlyMap<string, string>>;
}

/** A demo node's hypervisor as tests reach it: what the control plane observes, and a fault to inject. */
export interface SimulatedNode {
  observe(vmId: string): Promise<VmObservation>;
  crash(vmId: string, reason: string): void;
}

/**
 * Runs a simulated host, and its heartbeats, for every node whose status says
 * `hypervisor: simulated` and that has no agent endpoint (the demo nodes). Each host is
 * an agent over the simulated backend in this process, registered and driven like any
 * agent (AgentHypervisor, in memory). VMs that the store records as running on the node
 * are guests its agent re-adopts at start, as a real agent adopts live guests.
 */
export class SimulatedNodes {
  private readonly hosts = new Map<string, { hv: AgentHypervisor; host: SimulatedHost }>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: SimulatedNodesDeps) {}

  async start(): Promise<void> {
    const nodes = await this.deps.store.of(NODE_KIND).list({ order: { field: "hostname", desc: false }, limit: 10_000 });
    // A node with an agent_endpoint is a real agent (perhaps over its simulated backend): attachAgentNodes drives it.
    const simulated = nodes.items.filter((n) => n.status?.hypervisor?.type === "simulated" && !n.spec?.agentEndpoint);
    if (simulated.length > 0 && !this.deps.hosts) {
      this.deps.log.log("warn", "simulated nodes have no host: the composition root passed no simulated host factory", { nodes: simulated.length });
      return;
    }
    for (const node of simulated) await this.attach(node);
    await this.beat();
    this.timer = setInterval(() => void this.beat(), HEARTBEAT_INTERVAL_SEC * 1000);
    this.timer.unref();
    if (this.hosts.size > 0) this.deps.log.log("info", "simulated hosts running", { nodes: this.hosts.size });
  }

  /** A simulated node's hypervisor (tests observe it and inject crashes). */
  hypervisor(nodeId: string): SimulatedNode | undefined {
    const h = this.hosts.get(nodeId);
    return h && { observe: (vmId) => h.hv.observe(vmId), crash: (vmId, reason) => h.host.crash(vmId, reason) };
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    for (const id of [...this.hosts.keys()]) await this.detach(id);
  }

  private async attach(node: Node): Promise<void> {
    const name = node.hostname;
    const host = await this.deps.hosts!({ bootMs: this.deps.bootMs, running: await this.seededGuests(node), log: this.hostLog(name), images: DEMO_IMAGES, volumeDirs: this.deps.volumeDirs?.(node.id) ?? [] });
    // The host registers as an agent would: its hypervisor's type, version and capabilities
    // reach the node's status through RegisterNode, their one writer.
    await this.deps.nodes.register(create(RegisterNodeRequestSchema, {
      hostname: name,
      managementIp: node.managementIp,
      cpuInfo: node.spec?.cpu,
      memoryInfo: node.spec?.memory,
      storageDevices: node.spec?.storage ?? [],
      networkDevices: node.spec?.network ?? [],
      hypervisor: { type: host.hypervisor.type, version: host.hypervisor.version, capabilities: [...host.hypervisor.capabilities] },
      agentVersion: host.agentVersion,
      nodeId: node.id,
    })).catch((err: unknown) => this.deps.log.log("warn", "a simulated host could not register its hypervisor", { node_id: node.id, error: String(err) }));
    const h = host.hypervisor;
    const hv = new AgentHypervisor({ connection: inProcessConnection(name, host), node: name, kind: h.type, version: h.version, capabilities: h.capabilities, log: this.deps.log });
    hv.start();
    await hv.connected();
    this.hosts.set(node.id, { hv, host });
    this.deps.drivers.attach(node.id, hv);
  }

  private async detach(nodeId: string): Promise<void> {
    const h = this.hosts.get(nodeId);
    if (!h) return;
    this.hosts.delete(nodeId);
    this.deps.drivers.detach(nodeId);
    await h.hv.close();
    await h.host.close();
  }

  /** The guests the store says run on the node: desired RUNNING and started. */
  private async seededGuests(node: Node): Promise<SeededGuest[]> {
    const out: SeededGuest[] = [];
    for await (const vm of allOf(this.deps.store.of(VM_KIND), { where: { node_id: node.id } })) {
      if (!vm.spec || vm.spec.desiredPowerState !== PowerState.RUNNING || !vm.status?.startedAt) continue;
      try {
        const paths = this.deps.volumePaths && vm.spec.disks.some((d) => d.volumeId !== "") ? await this.deps.volumePaths(vm) : undefined;
        out.push({ vmId: vm.id, config: toAgentVmConfig(vm.id, vm.spec, paths), startedAtMs: timestampMs(vm.status.startedAt) });
      } catch (err) {
        // Not a guest an agent can run (e.g. a disk that needs a volume): the reconciler reports why.
        this.deps.log.log("warn", "a running VM is not re-adopted by its simulated host", { vm_id: vm.id, node_id: node.id, error: String(err) });
      }
    }
    return out;
  }

  /** The host agent's log: its one line per vmm.v1 call is the control plane talking to itself, so debug. */
  private hostLog(name: string): Logger {
    return { log: (level, msg, fields) => this.deps.log.log(msg === "rpc" && level === "info" ? "debug" : level, msg, { simulated_host: name, ...fields }) };
  }

  private async beat(): Promise<void> {
    for (const id of [...this.hosts.keys()]) {
      try {
        await this.deps.nodes.heartbeat(create(UpdateHeartbeatRequestSchema, { id }));
      } catch (err) {
        // The node was decommissioned: its simulated host goes away with it.
        if (err instanceof QuantixError && err.code === "not_found") await this.detach(id);
        else this.deps.log.log("warn", "simulated heartbeat failed", { node_id: id, error: String(err) });
      }
    }
  }
}
