import type { NicModel, VmSpec } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";

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
  /** The cluster whose control plane created the VM on this node (its metadata), when the hypervisor says. */
  readonly owner?: string;
  readonly usage?: { readonly cpuPercent: number; readonly memoryUsedMib: number };
  /** The VM's network interfaces as the hypervisor has them (its definition, hot-plugs included); absent when it does not say. */
  readonly nics?: readonly ObservedNic[];
}

/** One network interface of a VM as its node's hypervisor has it. */
export interface ObservedNic {
  readonly id: string;
  /** The port whose TAP it opens; empty for a NIC with a TAP of its own. */
  readonly portId: string;
}

/** Capabilities a hypervisor may declare (STYLE rule 4: branch on these, never on a name). */
export type Capability = "pause" | "reboot" | "suspend" | "live-migration" | "hotplug" | "console" | "metrics" | "disk-hotplug" | "nic-hotplug" | "vm-snapshot" | "console-input";

/** A disk to hot-plug: its id in the VM, its file on the node, and how the guest sees it. */
export interface HotDisk {
  readonly id: string;
  readonly path: string;
  readonly readOnly: boolean;
}

/** Changes to the disks of a running VM (the hypervisor's "disk-hotplug" capability). */
export interface HypervisorDisks {
  /** Hot-plugs `disk` (virtio) into the running VM; the same disk again changes nothing. */
  attach(vmId: string, disk: HotDisk): Promise<void>;
  /** Hot-unplugs disk `diskId`, waiting for the guest to release it (a short wait with force); a disk the VM lacks changes nothing. */
  detach(vmId: string, diskId: string, force: boolean): Promise<void>;
  /** Grows disk `diskId` of the running VM to `sizeBytes` online; answers the size the guest now sees. */
  resize(vmId: string, diskId: string, sizeBytes: bigint): Promise<bigint>;
}

/** A NIC to hot-plug: its id in the VM, the port whose TAP it opens on the node, its MAC and model. */
export interface HotNic {
  readonly id: string;
  readonly portId: string;
  readonly macAddress: string;
  readonly model: NicModel;
}

/** Changes to the network interfaces of a running VM (the hypervisor's "nic-hotplug" capability). */
export interface HypervisorNics {
  /** Hot-plugs `nic` into the running VM (its port must be set up on the node); the same NIC again changes nothing. */
  attach(vmId: string, nic: HotNic): Promise<void>;
  /** Hot-unplugs NIC `nicId`, waiting for the guest to release it; a NIC the VM lacks changes nothing. */
  detach(vmId: string, nicId: string): Promise<void>;
}

/** Options of a shutdown. */
export interface ShutdownOptions {
  /** Power off at once instead of asking the guest. */
  readonly force: boolean;
  /** Seconds to wait for the guest before powering off. */
  readonly timeoutSec: number;
}

/** Recent console output of a VM. */
export interface ConsoleOutput {
  readonly data: Uint8Array;
  /** Whether older output was dropped from the node's buffer. */
  readonly truncated: boolean;
}

/** How an interactive console session attaches (AttachConsole's first message). */
export interface ConsoleAttachOptions {
  /** Scroll-back: up to this many of the newest buffered bytes first (0: new output only). */
  readonly tailBytes: number;
  /** Start at this output position instead, if still buffered (0: use tailBytes). */
  readonly fromOffset: bigint;
  /** Ask for the writer role. */
  readonly write: boolean;
  /** Take the writer role from its holder. */
  readonly force: boolean;
}

/** What an interactive console session receives. */
export type ConsoleSessionEvent =
  | { readonly kind: "output"; readonly data: Uint8Array; readonly offset: bigint }
  | { readonly kind: "role"; readonly role: "writer" | "viewer" | "displaced"; readonly writerPresent: boolean; readonly message: string; readonly droppedBytes: number };

/** Console access of a hypervisor that declares the "console" capability. */
export interface HypervisorConsole {
  /** The last `tailBytes` bytes of a VM's console output (0 means the node's default). */
  output(vmId: string, tailBytes: number): Promise<ConsoleOutput>;
  /** New console output as it is written, until `signal` aborts or the VM is deleted. */
  follow(vmId: string, signal: AbortSignal): AsyncIterable<Uint8Array>;
  /**
   * An interactive session on the node (which arbitrates the writer role per VM): output
   * and role events until the VM is deleted, `input` ends or `signal` aborts; `input`
   * goes to the guest while the session is the writer. Absent: the node has no sessions.
   */
  attach?(vmId: string, options: ConsoleAttachOptions, input: AsyncIterable<Uint8Array>, signal: AbortSignal): AsyncIterable<ConsoleSessionEvent>;
}

/**
 * One sample of a VM's resource usage, as its node measured it. A field is undefined
 * when the node's hypervisor does not measure it: unknown, never a made-up zero.
 */
export interface VmUsageSample {
  /** The VM's power as the node saw it when sampling. */
  readonly power: ObservedPower;
  /** CPU used over the node's last sampling interval, as a percentage of the VM's vCPUs. */
  readonly cpuPercent?: number;
  /** CPU time of the VM's hypervisor process since it started, in seconds. */
  readonly cpuSeconds?: number;
  /** Host memory the VM's process uses (resident set), in bytes. */
  readonly memoryBytes?: bigint;
  /** Block I/O totals over all the VM's disks since its process started. */
  readonly block?: { readonly readBytes: bigint; readonly writeBytes: bigint; readonly readOps: bigint; readonly writeOps: bigint };
}

/** Usage sampling of a hypervisor that declares the "metrics" capability. */
export interface HypervisorMetrics {
  /** Measures a VM now; NOT_FOUND when the node does not know it. */
  sample(vmId: string): Promise<VmUsageSample>;
}

/** Limits of a live migration; 0 means the hypervisor's default (no limit for bandwidth). */
export interface MigrationOptions {
  readonly maxDowntimeMs: number;
  readonly bandwidthMbps: number;
}

/** One progress report of an outgoing migration. */
export interface MigrationProgress {
  /** The hypervisor's word for the phase, e.g. "setup", "active", "completed". */
  readonly status: string;
  readonly transferredBytes: bigint;
  readonly totalBytes: bigint;
  /** Bytes of copied disks written to the target so far; absent when no disk is copied. */
  readonly diskTransferredBytes?: bigint;
  /** Bytes of copied disks in all (it grows while the guest writes). */
  readonly diskTotalBytes?: bigint;
}

/** What a completed migration measured. */
export interface MigrationStatistics {
  readonly transferredBytes: bigint;
  readonly downtimeMs: number;
  readonly durationMs: number;
  /** Bytes of disk copied to the target; absent when no disk was copied. */
  readonly diskTransferredBytes?: bigint;
}

/** One disk a migration copies because the target cannot reach it (node-local storage). */
export interface MigrationDiskCopy {
  /** The disk's id in the VM's spec. */
  readonly diskId: string;
  /** "raw" or "qcow2". */
  readonly format: string;
  readonly virtualSizeBytes: bigint;
}

/**
 * Where one PCI device of a VM sits on its guest's root bus. A source reports its VM's
 * layout (hot-plugged disks included) and the target starts the VM with the same one:
 * the migration stream names devices by their address. The control plane passes it on
 * as it is.
 */
export interface PciPlacement {
  /** A disk, a network interface, or the cloud-init seed disk the hypervisor adds. */
  readonly kind: "disk" | "nic" | "cloud-init-seed";
  /** The disk's or interface's id; empty for the seed. */
  readonly id: string;
  /** Slot 2 to 31 of bus 0. */
  readonly slot: number;
}

/** What the source of a migration says the target needs: the disks to copy and the device layout to reproduce. */
export interface MigrationPlan {
  readonly copies: readonly MigrationDiskCopy[];
  /** Empty: the hypervisor does not place devices itself (the target uses its default layout). */
  readonly devices: readonly PciPlacement[];
}

/** A target prepared to receive a VM: where the source sends its state and, with copies, its disks. */
export interface MigrationTarget {
  readonly uri: string;
  /** Where the copied disks go; empty when no disk is copied. */
  readonly storageUri: string;
}

/**
 * Live migration between two nodes' hypervisors that declare the "live-migration"
 * capability: the target is prepared first, then the source sends the VM to it.
 */
export interface HypervisorMigration {
  /**
   * Source node: the disks a migration of the VM has to copy, those on storage the other
   * nodes cannot reach (empty: all shared). Absent: the hypervisor copies no disk.
   */
  planCopies?(vmId: string): Promise<readonly MigrationDiskCopy[]>;
  /**
   * Source node: the disks to copy (as planCopies) and where the VM's PCI devices sit, for
   * the target to reproduce. Absent: planCopies, and no layout.
   */
  plan?(vmId: string): Promise<MigrationPlan>;
  /**
   * Defines the VM on this (target) node, waiting for its state; with `copies`, creates
   * those disks empty to receive them. Returns where the source sends it.
   */
  /** `volumePaths`: the files of the VM's volume disks on the target (volume id to path; a copied volume's copy goes there). */
  /** `devices`: the source's PCI layout (MigrationPlan.devices), which the target starts with. */
  prepare(vmId: string, spec: VmSpec, copies?: readonly MigrationDiskCopy[], volumePaths?: ReadonlyMap<string, string>, devices?: readonly PciPlacement[]): Promise<MigrationTarget>;
  /**
   * Sends a running VM from this (source) node to `target` (copying the disks it was
   * prepared for), reporting progress; resolves
   * once the guest runs on the target. Rejects (the VM keeps running here) when it fails or
   * `signal` cancels it.
   */
  migrate(vmId: string, target: MigrationTarget, options: MigrationOptions, onProgress: (p: MigrationProgress) => void, signal: AbortSignal): Promise<MigrationStatistics>;
}

/** A VM snapshot as the node's hypervisor holds it. */
export interface NodeVmSnapshot {
  readonly memoryIncluded: boolean;
  readonly vmStateBytes: bigint;
  /** The VM's disks (DiskDevice ids) that hold it. */
  readonly diskIds: readonly string[];
  readonly takenAtMs: number;
}

/** Snapshots of a whole VM on its node, tagged with the snapshot's id: every disk at one instant, optionally with memory. */
export interface HypervisorVmSnapshots {
  /**
   * Takes it (idempotent for an existing id), on every writable disk or only on `diskIds`
   * (one disk of a running VM: a live snapshot of the volume attached there).
   */
  take(vmId: string, snapshotId: string, includeMemory: boolean, diskIds?: readonly string[]): Promise<NodeVmSnapshot>;
  /** Rolls the VM (the disks `diskIds` names, or every one) back to it; with memory the guest continues from the snapshot point. */
  revert(vmId: string, snapshotId: string, diskIds?: readonly string[]): Promise<NodeVmSnapshot>;
  /** Deletes it; NOT_FOUND when the VM's disks do not hold it. */
  delete(vmId: string, snapshotId: string): Promise<void>;
}

/**
 * The control plane's port to one node's hypervisor, shaped like the seed's Backend
 * interface (CreateVM ... Ping) plus observation and declared capabilities. Every call
 * is idempotent with respect to its result: booting a running VM is not an error. Every
 * implementation passes packages/server/src/hypervisor/hypervisor-port.contract.ts.
 */
export interface HypervisorPort {
  /** "simulated", "qemu", "cloud-hypervisor", "firecracker". */
  readonly kind: string;
  readonly version: string;
  readonly capabilities: ReadonlySet<Capability>;
  /** Console access; callers check for the "console" capability first. */
  readonly console?: HypervisorConsole;
  /** Usage sampling; callers check for the "metrics" capability first. */
  readonly metrics?: HypervisorMetrics;
  /** Live migration; callers check for the "live-migration" capability first. */
  readonly migration?: HypervisorMigration;
  /** Disk hot-plug and online resize of running VMs; callers check for the "disk-hotplug" capability first. */
  readonly disks?: HypervisorDisks;
  /** NIC hot-plug of running VMs; callers check for the "nic-hotplug" capability first. */
  readonly nics?: HypervisorNics;
  /** Snapshots of whole VMs; callers check for the "vm-snapshot" capability first. */
  readonly vmSnapshots?: HypervisorVmSnapshots;
  /**
   * Defines a VM (its process is not started: "created"). A VM already defined is left as
   * it is. `volumePaths` gives the files of the volumes its disks name (volume id to path
   * on the node), resolved by the caller.
   */
  createVM(vmId: string, spec: VmSpec, volumePaths?: ReadonlyMap<string, string>): Promise<void>;
  /** Removes a VM and its process; a VM that does not exist is not an error. */
  deleteVM(vmId: string): Promise<void>;
  /**
   * Starts a created, shut-down, crashed or suspended VM; no-op when starting or running.
   * FAILED_PRECONDITION otherwise. Resolves with what the hypervisor observes right after
   * when its answer says it (so the caller need not ask again; `nics` left out: a boot
   * does not change them; `startedAt` as observe() will say it), else with nothing.
   */
  bootVM(vmId: string): Promise<VmObservation | void>;
  /** Asks the guest to power off (or powers off at once with force, or after the timeout); no-op when already off. */
  shutdownVM(vmId: string, options: ShutdownOptions): Promise<void>;
  /** Pauses a running VM's vCPUs; no-op when paused. Needs the "pause" capability. */
  pauseVM(vmId: string): Promise<void>;
  /** Resumes a paused VM; no-op when running. */
  resumeVM(vmId: string): Promise<void>;
  /** Reboots a running VM (a hard reset with force). Needs the "reboot" capability. */
  rebootVM(vmId: string, force: boolean): Promise<void>;
  /** Saves a running or paused VM's memory and stops its process. Needs the "suspend" capability. */
  suspendVM(vmId: string): Promise<void>;
  /** What the hypervisor reports about a VM now ("absent" when it does not know it). */
  observe(vmId: string): Promise<VmObservation>;
  /**
   * What observe() would answer, known without asking when the hypervisor's event stream
   * is connected and synced and nothing since its last confirmed answer for this VM can
   * have changed it unseen (no call on the VM since, or in flight); undefined otherwise,
   * and the caller observes. Optional: a hypervisor without such a view leaves it out.
   */
  observeWatched?(vmId: string): VmObservation | undefined;
  /** Every VM the hypervisor knows. */
  list(): Promise<VmObservation[]>;
  /** Resolves when the hypervisor answers; rejects with UNAVAILABLE and the reason otherwise. */
  ping(): Promise<void>;
  /** Calls `listener` with a VM's id whenever its observed state may have changed. */
  onChange(listener: (vmId: string) => void): () => void;
}
