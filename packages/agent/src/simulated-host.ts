import { createRouterTransport, type Transport } from "@connectrpc/connect";
import type { Logger } from "@quantix/rpc";
import type { BackendCapability } from "./backend.js";
import { SimulatedBackend, type AdoptedVm } from "./backends/simulated/simulated-backend.js";
import { AGENT_VERSION, healthReport, type HealthReport } from "./rpc/health.js";
import { vmmRouter } from "./rpc/vmm-router.js";
import { VmManager } from "./vm-manager.js";
import { simulatedImages } from "./image-dirs.js";

export type { AdoptedVm } from "./backends/simulated/simulated-backend.js";

/** What a simulated host is made from. */
export interface SimulatedHostOptions {
  /** How long a guest takes to boot (and to reboot); a graceful shutdown takes half. */
  readonly bootMs: number;
  /** Guests already running when the host starts: its agent re-adopts them. */
  readonly running: readonly AdoptedVm[];
  /** Where the host's agent logs (one line per vmm.v1 call, as an agent process does). */
  readonly log: Logger;
  /**
   * The image files the host has (kernel, initrd and disk paths): a VM naming any other
   * is refused, as an agent process refuses a file that is not in its image directories.
   */
  readonly images: readonly string[];
  /** Directories whose files (volumes the control plane made for this host) are allowed as disks. */
  readonly volumeDirs?: readonly string[];
}

/** A host agent over the simulated backend, running in the caller's process. */
export interface SimulatedHost {
  /** vmm.v1 in memory, through the same interceptors as an agent's port. */
  readonly transport: Transport;
  /** What the agent's GET /_/health would answer. */
  health(): Promise<HealthReport>;
  /** The hypervisor as an agent registers it with the control plane. */
  readonly hypervisor: { readonly type: string; readonly version: string; readonly capabilities: string[] };
  readonly agentVersion: string;
  /** Test hook: a guest's process dies, as a real one would (watchers hear of it). */
  crash(vmId: string, reason: string): void;
  /** Ends the agent's watches and timers; nothing outlives it. */
  close(): Promise<void>;
}

/**
 * What a simulated host declares: everything the simulator emulates but the console and
 * usage. A demo host has no guest whose output or load could be shown, and synthetic
 * console lines or made-up numbers would pass for a real guest's (the API's console and
 * metrics are a real guest's); nodes that run it say so (no 'console', no 'metrics').
 */
const HOST_CAPABILITIES: readonly BackendCapability[] = [
  "pause", "reboot", "graceful-shutdown", "firmware-boot", "cpu-hotplug", "memory-hotplug",
  "virtio-scsi", "nvme", "sata", "qcow2", "e1000", "rtl8139",
];

/**
 * A simulated host in this process: the agent's own VmManager (vmm.v1's state rules) over
 * the simulated backend, served in memory. The control plane reaches it through
 * AgentHypervisor exactly as it reaches a host agent over the network, so the demo's
 * nodes and a `VMCP_BACKEND=simulated` agent run one model of a hypervisor.
 */
export async function createSimulatedHost(o: SimulatedHostOptions): Promise<SimulatedHost> {
  const backend = new SimulatedBackend({ bootMs: o.bootMs, consoleIntervalMs: 0, capabilities: HOST_CAPABILITIES, running: o.running });
  const manager = new VmManager({ backend, imageCheck: simulatedImages(o.images, o.volumeDirs ?? []) });
  await manager.start();
  const version = await backend.version();
  const vmm = vmmRouter(manager, version, o.log);
  return {
    transport: createRouterTransport(vmm.routes, { router: { interceptors: vmm.interceptors } }),
    health: () => healthReport(backend, version),
    hypervisor: { type: backend.type, version, capabilities: [...backend.capabilities].sort() },
    agentVersion: AGENT_VERSION,
    crash: (vmId, reason) => backend.simulateCrash(vmId, reason),
    async close() {
      manager.close();
      await backend.close();
    },
  };
}
