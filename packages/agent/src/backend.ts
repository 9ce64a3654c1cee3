import type { NetworkInterface, StorageDevice, VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import type { PciPlacement } from "@quantix/core";

/**
 * The host agent's port to one hypervisor, shaped like the seed's Backend interface
 * (CreateVM ... Ping) plus declared capabilities, listing, events and the console.
 *
 * Division of work: the agent's VM manager (vm-manager.ts) owns the state rules of
 * vmm.v1 (which call is allowed in which state, which is an idempotent no-op), validates
 * configs, and serialises calls per VM. A backend is only the mechanism: it is called
 * only in a state where the call is allowed, and it reports what really happened.
 * Every backend passes backend.contract.ts.
 */

/** What a backend reports about one VM. Mirrors vmm.v1.VmState. */
export type BackendVmState = "created" | "running" | "paused" | "shutdown" | "crashed" | "suspended";

/**
 * Capabilities a backend may declare (STYLE rule 4: callers branch on these, never on a
 * backend's name). Strings, because they are reported as-is in vmm.v1 BackendInfo.
 */
export type BackendCapability =
  | "pause"
  | "reboot"
  | "graceful-shutdown"
  | "console"
  | "live-migration"
  | "cpu-hotplug"
  | "memory-hotplug"
  | "virtio-scsi"
  | "nvme"
  | "sata"
  | "qcow2"
  | "firmware-boot"
  | "e1000"
  | "rtl8139"
  | "readopt"
  /** config.cloud_init becomes a NoCloud seed disk attached read-only. */
  | "cloud-init"
  /** suspendVM hibernates: memory saved to a file, the VMM process ended; resumeVM/bootVM restore it. */
  | "suspend"
  /** getVMInfo measures the VM's usage (what it cannot measure it leaves out). */
  | "metrics"
  /** attachDisk, detachDisk and resizeDisk change the disks of a running VM (hot-plug, online resize). */
  | "disk-hotplug"
  /** attachNic and detachNic change the network interfaces of a running VM (hot-plug). */
  | "nic-hotplug"
  /** Live migration copies disks that are not on shared storage while the guest runs (MigrateVm's copy_storage). */
  | "live-migration-copy-storage"
  /** snapshotVM and friends: internal snapshots of every disk at one instant, optionally with memory. */
  | "vm-snapshot"
  /** consoleWrite: bytes typed into the guest's console (AttachConsole's writer). */
  | "console-input";

/** A snapshot of a whole VM as its disks hold it. */
export interface VmSnapshotInfo {
  readonly snapshotId: string;
  /** Whether memory and device state were saved with it. */
  readonly memoryIncluded: boolean;
  readonly vmStateBytes: bigint;
  /** The disks (StorageDevice.id) that hold it. */
  readonly diskIds: readonly string[];
  /** When it was taken (from the image), ms since the epoch. */
  readonly createdAtMs: number;
  /** Whether every snapshotted disk of the VM holds it. */
  readonly complete: boolean;
}

/** What getVMInfo is asked for. */
export interface VmInfoOptions {
  /** Measure usage (default true); false: state and config are enough. */
  readonly usage?: boolean;
}

/** One VM as the backend sees it now. */
export interface BackendVmInfo {
  readonly vmId: string;
  readonly config: VmConfig;
  readonly state: BackendVmState;
  /** The VMM process's pid while one runs. */
  readonly pid?: number | undefined;
  /** When the guest last started (ms since the epoch), while running or paused. */
  readonly startedAtMs?: number | undefined;
  /** Why the VM is crashed, in words (e.g. "QEMU exited with signal SIGKILL"). */
  readonly crashReason?: string | undefined;
  readonly metrics: {
    readonly cpuUsagePercent: number;
    readonly memoryUsageBytes: bigint;
    readonly uptimeSeconds: bigint;
    /** CPU time of the VMM process since it started (user + system); undefined when not measured. */
    readonly cpuSeconds?: number | undefined;
    /** Block I/O over all the VM's disks; undefined when the backend does not measure it. */
    readonly block?: BlockStats | undefined;
  };
}

/** Block I/O totals since the VMM process started. */
export interface BlockStats {
  readonly readBytes: bigint;
  readonly writeBytes: bigint;
  readonly readOps: bigint;
  readonly writeOps: bigint;
}

/** A change the backend observed by itself (guest powered off, process died, ...). */
export interface BackendEvent {
  readonly vmId: string;
  readonly state: BackendVmState;
  readonly reason?: string | undefined;
}

/**
 * A slice of one VM's console output and the position of its first byte in all the
 * output since the VM was created. A reader that fell behind the backend's buffer sees
 * the skip as an offset past the end of its previous chunk.
 */
export interface ConsoleChunk {
  readonly data: Uint8Array;
  readonly offset: number;
}

export interface ShutdownOptions {
  /** Power off at once. */
  readonly force: boolean;
  /** How long to wait for the guest to power off before forcing it (graceful only). */
  readonly timeoutSeconds: number;
  /**
   * Graceful only: aborted when a forced ShutdownVm or DeleteVm preempts this stop. The
   * backend then stops waiting for the guest and powers off at once, as force would.
   */
  readonly signal?: AbortSignal | undefined;
}

/** Where an outgoing live migration stands (QEMU's query-migrate, in its own words). */
export interface MigrationProgress {
  /** "setup", "active", "pre-switchover", "device", "completed", ... */
  readonly status: string;
  readonly transferredBytes: bigint;
  readonly remainingBytes: bigint;
  readonly totalBytes: bigint;
  /** Bytes of copied disks written to the target so far; absent when no disk is copied. */
  readonly diskTransferredBytes?: bigint;
  /** Bytes of copied disks to write in all (it grows while the guest writes). */
  readonly diskTotalBytes?: bigint;
}

/** What a completed migration measured. */
export interface MigrationStats {
  readonly transferredBytes: bigint;
  readonly downtimeMs: number;
  readonly totalTimeMs: number;
  /** Bytes of disk copied to the target; absent when no disk was copied. */
  readonly diskTransferredBytes?: bigint;
}

/** The disks an outgoing migration copies to the target, and where to. */
export interface MigrationStorageCopy {
  /** The target's storage_uri ("tcp:<host>:<port>", its hypervisor's NBD server). */
  readonly uri: string;
  /** Indexes in config.storage of the disks copied. */
  readonly disks: readonly number[];
}

/** One disk an incoming migration receives: it is created empty, then written by the source. */
export interface IncomingDiskCopy {
  /** Index in config.storage; the disk's path there is where it is created. */
  readonly index: number;
  readonly format: "raw" | "qcow2";
  readonly virtualSizeBytes: bigint;
}

/** Where an incoming migration is sent. */
export interface IncomingMigration {
  /** The migration stream's URI. */
  readonly targetUri: string;
  /** The copied disks' NBD server; empty when nothing is copied. */
  readonly storageUri: string;
}

/** Settings of one outgoing migration. */
export interface MigrationOptions {
  /** Longest switch-over pause; 0 keeps the hypervisor's default. */
  readonly maxDowntimeMs: number;
  /** Bandwidth limit in Mbit/s; 0 means unlimited. */
  readonly bandwidthMbps: number;
  /** Called about every 100 ms while the migration runs. */
  readonly onProgress: (progress: MigrationProgress) => void;
  /** Disks to copy while the guest runs (needs "live-migration-copy-storage"); absent: storage is shared. */
  readonly storage?: MigrationStorageCopy;
}

export interface Backend {
  /** "qemu", "cloud-hypervisor", "firecracker" or "simulated". */
  readonly type: string;
  readonly capabilities: ReadonlySet<BackendCapability>;
  /** The hypervisor's version as it reports it (e.g. "QEMU emulator version 7.2.x"). */
  version(): Promise<string>;
  /**
   * Re-adopts the VMs a previous agent process left (state directory, pid files,
   * sockets) and returns their ids. Called once at start, before any other call.
   */
  recover(): Promise<string[]>;
  /** Defines a VM in state "created"; its config is already validated. */
  createVM(vmId: string, config: VmConfig): Promise<void>;
  /** Frees the VM's process, sockets and state directory. Called in created/shutdown/crashed/suspended. */
  deleteVM(vmId: string): Promise<void>;
  /** Starts the VM and resolves once the guest runs. Called in created/shutdown/crashed, and in suspended (restores it as resumeVM does). */
  bootVM(vmId: string): Promise<void>;
  /** Stops the VM (graceful, then forced after the timeout); resolves once it is off. Called in running/paused, and in suspended (discards the saved memory). */
  shutdownVM(vmId: string, options: ShutdownOptions): Promise<void>;
  /** Called in running; needs "pause". */
  pauseVM(vmId: string): Promise<void>;
  /** Called in paused (needs "pause"), and in suspended (needs "suspend": restores the saved memory). */
  resumeVM(vmId: string): Promise<void>;
  /**
   * Hibernates (needs "suspend"): saves the guest's memory and device state to a file and
   * ends the VMM process; the VM is then "suspended". Called in running/paused. A failed
   * save leaves the VM running or paused as it was.
   */
  suspendVM?(vmId: string): Promise<void>;
  /**
   * Takes snapshot `snapshotId` of every writable disk (or of those `diskIds` names) at one
   * instant (needs "vm-snapshot"), with memory when `includeMemory` and QEMU runs. Called in
   * created/shutdown/crashed/running/paused; idempotent for an existing id.
   */
  snapshotVM?(vmId: string, snapshotId: string, includeMemory: boolean, diskIds?: readonly string[]): Promise<VmSnapshotInfo>;
  /** Rolls every disk (or those of `diskIds`) back to the snapshot; with memory, the guest continues from it (the VM runs afterwards). */
  revertVMSnapshot?(vmId: string, snapshotId: string, diskIds?: readonly string[]): Promise<VmSnapshotInfo>;
  /** Deletes the snapshot from every disk holding it; NOT_FOUND when none does. */
  deleteVMSnapshot?(vmId: string, snapshotId: string): Promise<void>;
  /** The VM's snapshots (UUID tags), oldest first. */
  listVMSnapshots?(vmId: string): Promise<VmSnapshotInfo[]>;
  /** Called in running; needs "reboot" (force = hard reset). */
  rebootVM(vmId: string, force: boolean): Promise<void>;
  /**
   * NOT_FOUND (QuantixError) for an unknown id. With `usage: false` a backend may leave
   * out the metrics it would have to ask the VMM for (a caller that reads only state and
   * config: the state table, watch events), so that no query waits on a VMM that is busy
   * starting; the metrics it leaves out are zero.
   */
  getVMInfo(vmId: string, options?: VmInfoOptions): Promise<BackendVmInfo>;
  listVMs(): Promise<BackendVmInfo[]>;
  /** Resolves when the hypervisor is usable; rejects with UNAVAILABLE and the reason. */
  ping(): Promise<void>;
  /** The last `tailBytes` bytes of console output (needs "console"); empty before first boot. */
  consoleTail(vmId: string, tailBytes: number): Promise<Uint8Array>;
  /**
   * Where the buffered console output lies in the VM's output since creation: `start` is
   * the position of the oldest byte still held, `end` is just past the newest. Optional:
   * without it the agent cannot give GetConsoleOutput's offset or serve from_offset.
   */
  consolePosition?(vmId: string): Promise<{ start: number; end: number }>;
  /**
   * Console output from `fromOffset` (default: the end, i.e. only new output) as it is
   * written, until `signal` aborts or the VM is deleted. Each chunk carries its offset, so
   * output dropped because the reader fell behind the buffer shows as a jump. An offset
   * older than the buffer starts at its oldest byte.
   */
  followConsole(vmId: string, signal: AbortSignal, fromOffset?: number): AsyncIterable<ConsoleChunk>;
  /**
   * Writes `data` to the guest's console input (needs "console-input"); resolves once the
   * hypervisor has taken it. FAILED_PRECONDITION naming the state when the VM is neither
   * running nor paused (no hypervisor process holds the console).
   */
  consoleWrite?(vmId: string, data: Uint8Array): Promise<void>;
  /**
   * Live migration, target half (needs "live-migration"): defines the VM and starts its
   * hypervisor waiting for the incoming state on a TCP port of `listenHost`; answers the
   * URI the source must send to. With `copies` (needs "live-migration-copy-storage") those
   * disks are created empty at their config paths first and served for the source to
   * write (storageUri); they are removed again if the VM is deleted before the migration
   * completed. The VM is "paused" until the state has arrived, then
   * "running" (reported through onEvent); a failed incoming migration leaves it crashed.
   * With `layout` (the source's deviceLayout) the VM starts with its PCI devices where
   * the source has them.
   */
  prepareIncoming?(vmId: string, config: VmConfig, listenHost: string, copies?: readonly IncomingDiskCopy[], layout?: readonly PciPlacement[]): Promise<IncomingMigration>;
  /**
   * Where the VM's PCI devices sit (while it runs, as the hypervisor reports its bus), for
   * a migration's target to start with the same layout. FAILED_PRECONDITION when a device
   * is not where the backend can say. Absent: the backend does not place devices.
   */
  deviceLayout?(vmId: string): Promise<PciPlacement[]>;
  /**
   * The format and virtual size of each of `disks` (indexes in config.storage), for the
   * target to create their copies (needs "live-migration-copy-storage"). Any state.
   */
  describeDisks?(vmId: string, disks: readonly number[]): Promise<IncomingDiskCopy[]>;
  /**
   * Live migration, source half (needs "live-migration"): sends a running VM to
   * `targetUri` and resolves with the statistics once it runs there; the VM is then
   * paused here, and the caller deletes it. Rejects with ABORTED (the reason) when the
   * migration fails or is cancelled; the VM then keeps running here.
   */
  migrateOut?(vmId: string, targetUri: string, options: MigrationOptions): Promise<MigrationStats>;
  /** Asks a running outgoing migration to stop; false when none runs. */
  cancelMigration?(vmId: string): Promise<boolean>;
  /** Calls `listener` on every change the backend observes by itself; returns an unsubscribe. */
  /**
   * Hot-plugs `disk` into the running (or paused) VM and adds it to the VM's config; the
   * VM has no disk with its id. Declared with "disk-hotplug".
   */
  attachDisk?(vmId: string, disk: StorageDevice): Promise<void>;
  /**
   * Hot-unplugs the VM's disk `diskId` (waiting up to `timeoutMs` for the guest to release
   * it: DEADLINE_EXCEEDED and still attached otherwise) and removes it from the config.
   */
  detachDisk?(vmId: string, diskId: string, timeoutMs: number): Promise<void>;
  /** Grows the running VM's disk `diskId` to `sizeBytes` online; answers the size the hypervisor reports. */
  resizeDisk?(vmId: string, diskId: string, sizeBytes: bigint): Promise<bigint>;
  /**
   * Hot-plugs `nic` (its tap_device resolved: the TAP exists on the host) into the running
   * (or paused) VM and adds it to the VM's config; the VM has no NIC with its id. Declared
   * with "nic-hotplug".
   */
  attachNic?(vmId: string, nic: NetworkInterface): Promise<void>;
  /**
   * Hot-unplugs the VM's NIC `nicId` (waiting up to `timeoutMs` for the guest to release
   * it: DEADLINE_EXCEEDED and still attached otherwise) and removes it from the config.
   */
  detachNic?(vmId: string, nicId: string, timeoutMs: number): Promise<void>;
  onEvent(listener: (event: BackendEvent) => void): () => void;
  /** Releases the agent's hold (sockets, timers) and leaves running VMs running. */
  close(): Promise<void>;
}
