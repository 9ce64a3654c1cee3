import type { VmSpec } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";

/** What a hypervisor reports about one VM's process. */
export type ObservedPower =
  | "absent"
  | "created"
  | "starting"
  | "running"
  | "paused"
  | "stopping"
  | "shutdown"
  | "suspending"
  | "suspended"
  | "crashed";

/** One observation of a VM on a node. */
export interface VmObservation {
  readonly vmId: string;
  readonly power: ObservedPower;
  /** When the guest last started running (ms since epoch). */
  readonly startedAt?: number;
  /** Why the VM crashed or failed, in words. */
  readonly error?: string;
  readonly usage?: { readonly cpuPercent: number; readonly memoryUsedMib: number };
}

/** Capabilities a hypervisor may declare (STYLE rule 4: branch on these, never on a name). */
export type Capability = "pause" | "reboot" | "suspend" | "live-migration" | "hotplug" | "console";

/** Options of a shutdown. */
export interface ShutdownOptions {
  /** Power off at once instead of asking the guest. */
  readonly force: boolean;
  /** Seconds to wait for the guest before powering off. */
  readonly timeoutSec: number;
}

/**
 * The control plane's port to one node's hypervisor, shaped like the seed's Backend
 * interface (CreateVM ... Ping) plus observation and declared capabilities. Every call
 * is idempotent with respect to its result: booting a running VM is not an error.
 */
export interface HypervisorPort {
  /** "simulated", "qemu", "cloud-hypervisor", "firecracker". */
  readonly kind: string;
  readonly version: string;
  readonly capabilities: ReadonlySet<Capability>;
  createVM(vmId: string, spec: VmSpec): Promise<void>;
  deleteVM(vmId: string): Promise<void>;
  bootVM(vmId: string): Promise<void>;
  shutdownVM(vmId: string, options: ShutdownOptions): Promise<void>;
  pauseVM(vmId: string): Promise<void>;
  resumeVM(vmId: string): Promise<void>;
  rebootVM(vmId: string, force: boolean): Promise<void>;
  suspendVM(vmId: string): Promise<void>;
  observe(vmId: string): Promise<VmObservation>;
  /** Every VM the hypervisor knows. */
  list(): Promise<VmObservation[]>;
  ping(): Promise<void>;
  /** Calls `listener` with a VM's id whenever its observed state may have changed. */
  onChange(listener: (vmId: string) => void): () => void;
}
