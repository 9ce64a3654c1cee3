import type { VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import type { InProcessAgent } from "../hypervisor/agent-connection.js";
import type { Logger } from "@quantix/rpc";

/** A guest a simulated host starts with, running since `startedAtMs` (its agent re-adopts it). */
export interface SeededGuest {
  readonly vmId: string;
  readonly config: VmConfig;
  readonly startedAtMs: number;
}

/**
 * A host agent over a simulated hypervisor, in the control plane's own process: what the
 * demo's nodes run. The control plane reaches it as it reaches any agent (vmm.v1 and the
 * health report, through AgentHypervisor), only in memory.
 */
export interface SimulatedHost extends InProcessAgent {
  /** The hypervisor as the host's agent registers it. */
  readonly hypervisor: { readonly type: string; readonly version: string; readonly capabilities: readonly string[] };
  readonly agentVersion: string;
  /** Test hook: a guest's process dies, as a real one would. */
  crash(vmId: string, reason: string): void;
  close(): Promise<void>;
}

/**
 * Starts a simulated host. The control plane does not import the agent package: its
 * composition roots (main.ts, the tests' test-server.ts) pass the agent's
 * createSimulatedHost in. `images` are the files the host has (DEMO_IMAGES): a VM naming
 * another path is refused as an agent refuses a file outside its image directories;
 * files below `volumeDirs` (the node's volumes, real files) are allowed as disks.
 */
export type SimulatedHostFactory = (options: { readonly bootMs: number; readonly running: readonly SeededGuest[]; readonly log: Logger; readonly images: readonly string[]; readonly volumeDirs?: readonly string[] }) => Promise<SimulatedHost>;
