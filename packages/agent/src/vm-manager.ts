import { clone, create, equals } from "@bufbuild/protobuf";
import { NetworkInterfaceSchema, NetworkInterfaceType, StorageDeviceSchema, StorageInterfaceType, VmConfigSchema, type NetworkInterface, type PciSlot, type StorageDevice, type VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError, randomIds, systemClock, throwIfViolations, type Clock, type IdGenerator, type PciPlacement } from "@quantix/core";
import type { Backend, BackendEvent, BackendVmInfo, BackendVmState, IncomingDiskCopy, IncomingMigration, MigrationOptions, MigrationStats, VmSnapshotInfo } from "./backend.js";
import { CreatedAtStore } from "./created-at-store.js";
import { resolvePortNic, resolvePortNics, type PortTapLookup } from "./nic-ports.js";
import { checkImagePaths, type ImageCheck } from "./image-dirs.js";
import { checkDeviceLayout } from "./migration-layout.js";
import { checkCopyPaths, checkCopies, disksToCopy, requireSharedStorage, type RequestedCopy } from "./migration-storage.js";
import { ConsoleSessions } from "./console-sessions.js";
import { consoleBuffered, DEVICE_ID, requiredCapabilities, validateVmConfig, validateVmId } from "./vm-config-validation.js";
import { pageVms, type ListPage, type ListQuery } from "./vm-list.js";
import { decide, hint, type VmAction } from "./vm-state-table.js";
import { VmWatchHub, type VmChange } from "./vm-watch-hub.js";

/** What the manager needs. */
export interface VmManagerDeps {
  readonly backend: Backend;
  /** The TAPs of NetworkService's ports, for NICs that name a port (NetworkInterface.port_id); absent: such NICs are refused. */
  readonly portTaps?: PortTapLookup;
  readonly clock?: Clock;
  readonly ids?: IdGenerator;
  /** Directories whose files the other hosts reach at the same paths (VMCP_SHARED_DIRS). */
  readonly sharedDirs?: readonly string[];
  /** The address incoming migrations listen on; default 127.0.0.1. */
  readonly migrationHost?: string;
  /**
   * The image allow-list (VMCP_IMAGE_DIRS): kernel, initrd and disk paths must resolve to
   * files below these (or below `sharedDirs`, which migrating VMs use), of the kinds the
   * hypervisors take. The agent process always gives them, whatever its backend.
   * Undefined: no check, for agents inside a process (unit tests, the control plane's demo
   * hosts, whose VMs name images that are not there).
   */
  readonly imageDirs?: readonly string[];
  /**
   * Checks a config's image paths instead of `imageDirs`: a simulated host in a process
   * checks them against the images it models (simulatedImages), not the machine's files.
   */
  readonly imageCheck?: ImageCheck;
  /** The agent's state directory, where creation times persist; without it they live in memory. */
  readonly stateDir?: string;
}

/** BootVm's answer: the VM's state afterwards and, while it runs or is paused, when the guest started (ms since the epoch). */
export interface BootResult {
  readonly state: BackendVmState;
  readonly startedAtMs?: number;
}

const ACTION_RPC: Record<VmAction, string> = { delete: "DeleteVm", boot: "BootVm", shutdown: "ShutdownVm", pause: "PauseVm", resume: "ResumeVm", reboot: "RebootVm", suspend: "SuspendVm" };

/**
 * Owns vmm.v1's rules over any Backend: validation, capabilities, the state table,
 * per-VM serialisation, idempotent create, listing, and change events for WatchVms.
 * The backend stays the source of truth for state: every decision reads it afresh
 * inside the VM's queue.
 */
export class VmManager {
  readonly backend: Backend;
  /** Who may type into each VM's console (AttachConsole). */
  readonly consoleSessions = new ConsoleSessions();
  private readonly clock: Clock;
  private readonly ids: IdGenerator;
  private readonly chains = new Map<string, Promise<unknown>>();
  /** Per VM: aborted by a forced ShutdownVm/DeleteVm so outstanding graceful stops give way. */
  private readonly preempts = new Map<string, AbortController>();
  private readonly createdAt: CreatedAtStore;
  private readonly hub = new VmWatchHub();
  private unsubscribe: (() => void) | undefined;
  private readonly sharedDirs: readonly string[];
  private readonly portTaps: PortTapLookup | undefined;
  private readonly migrationHost: string;
  private readonly imageCheck: ImageCheck | undefined;
  /** Where files of VMs may lie (image and shared directories); undefined: anywhere (unit tests). */
  private readonly allowedDirs: readonly string[] | undefined;

  constructor(deps: VmManagerDeps) {
    this.backend = deps.backend;
    this.sharedDirs = deps.sharedDirs ?? [];
    this.portTaps = deps.portTaps;
    const allowedDirs = deps.imageDirs && [...deps.imageDirs, ...this.sharedDirs];
    this.imageCheck = deps.imageCheck ?? (allowedDirs && ((config) => checkImagePaths(config, allowedDirs)));
    this.allowedDirs = allowedDirs;
    this.migrationHost = deps.migrationHost ?? "127.0.0.1";
    this.clock = deps.clock ?? systemClock;
    this.ids = deps.ids ?? randomIds;
    this.createdAt = new CreatedAtStore(deps.stateDir);
  }

  /** Re-adopts the VMs a previous agent left and starts listening to the backend. */
  async start(): Promise<void> {
    await this.createdAt.load(await this.backend.recover(), this.clock.now());
    this.unsubscribe = this.backend.onEvent((e) => this.onBackendEvent(e));
  }

  /** Ends every watch and stops listening; the backend is closed by its owner. */
  close(): void {
    this.unsubscribe?.();
    this.hub.close();
  }

  /** CreateVm: idempotent per vm_id; an empty id gets a new UUID. */
  async create(vmId: string, config: VmConfig | undefined): Promise<{ vmId: string; state: BackendVmState }> {
    throwIfViolations([...(vmId === "" ? [] : validateVmId("vm_id", vmId)), ...validateVmConfig(config)]);
    const cfg = resolvePortNics(config!, this.portTaps);
    const missing = requiredCapabilities(cfg).filter((n) => !(this.backend.capabilities as ReadonlySet<string>).has(n.capability));
    if (missing.length > 0) {
      const what = missing.map((n) => `${n.field} needs the capability "${n.capability}"`).join("; ");
      throw new QuantixError("failed_precondition", `the ${this.backend.type} backend lacks a capability this config needs: ${what}`);
    }
    await this.checkImages(cfg);
    const id = vmId === "" ? this.ids.newId() : vmId;
    return this.serial(id, async () => {
      const existing = await this.find(id);
      if (existing) {
        if (!equals(VmConfigSchema, existing.config, cfg)) throw new QuantixError("already_exists", `VM '${id}' already exists with a different config`);
        return { vmId: id, state: existing.state };
      }
      await this.backend.createVM(id, cfg);
      await this.createdAt.set(id, this.clock.now());
      await this.publish(id, "CreateVm");
      return { vmId: id, state: "created" as const };
    });
  }

  /** DeleteVm; a running or paused VM needs force and is powered off first. */
  async delete(vmId: string, force: boolean): Promise<void> {
    if (force) this.preemptGraceful(vmId);
    await this.act(vmId, "delete", force, async (info) => {
      if (info.state === "running" || info.state === "paused") await this.backend.shutdownVM(vmId, { force: true, timeoutSeconds: 0 });
      await this.backend.deleteVM(vmId);
      await this.createdAt.delete(vmId);
      this.hub.publish({ type: "deleted", vmId, state: info.state, reason: "DeleteVm", metadata: info.config.metadata });
    });
  }

  /**
   * BootVm: the VM's state afterwards and, while it runs or is paused, when the guest
   * started (what the watch event the boot publishes says), so that the caller records
   * both from the answer.
   */
  async boot(vmId: string): Promise<BootResult> {
    const info = await this.acted(vmId, "boot", false, () => this.backend.bootVM(vmId));
    return { state: info.state, ...(info.startedAtMs !== undefined ? { startedAtMs: info.startedAtMs } : {}) };
  }

  /** ShutdownVm; timeoutSeconds 0 means 60. */
  shutdown(vmId: string, force: boolean, timeoutSeconds: number): Promise<BackendVmState> {
    if (timeoutSeconds < 0 || timeoutSeconds > 3600) throw new QuantixError("invalid_argument", `timeout_seconds: must be between 1 and 3600 (0 means 60), got ${timeoutSeconds}`, [{ field: "timeout_seconds", reason: "OUT_OF_RANGE", description: "must be between 1 and 3600 (0 means 60)" }]);
    if (!force) this.need("graceful-shutdown", "ShutdownVm without force");
    // Force powers off at once (docs/api/vmm-service.md): it must not queue behind a
    // graceful stop that waits for the guest, so it cuts that wait short first.
    if (force) this.preemptGraceful(vmId);
    const signal = force ? undefined : this.gracefulSignal(vmId);
    return this.act(vmId, "shutdown", force, () => this.backend.shutdownVM(vmId, { force, timeoutSeconds: timeoutSeconds || 60, signal }));
  }

  /** PauseVm. */
  pause(vmId: string): Promise<BackendVmState> {
    this.need("pause", "PauseVm");
    return this.act(vmId, "pause", false, () => this.backend.pauseVM(vmId));
  }

  /** ResumeVm: of a paused VM needs "pause"; of a suspended one, "suspend". */
  resume(vmId: string): Promise<BackendVmState> {
    return this.act(vmId, "resume", false, async (info) => {
      this.need(info.state === "suspended" ? "suspend" : "pause", "ResumeVm");
      await this.backend.resumeVM(vmId);
    });
  }

  /** SuspendVm: hibernates a running or paused VM (needs "suspend"). */
  async suspend(vmId: string): Promise<BackendVmState> {
    const suspendVM = this.backend.suspendVM?.bind(this.backend);
    if (!suspendVM) throw this.lacks("suspend", "SuspendVm");
    this.need("suspend", "SuspendVm");
    return this.act(vmId, "suspend", false, () => suspendVM(vmId));
  }

  /**
   * SnapshotVm (needs "vm-snapshot"): in every state but SUSPENDED (its memory is in a
   * file; resume it first). Memory is saved only while QEMU runs (RUNNING or PAUSED).
   */
  snapshotVm(vmId: string, snapshotId: string, includeMemory: boolean, diskIds: readonly string[] = []): Promise<VmSnapshotInfo> {
    return this.onSnapshot(vmId, snapshotId, "SnapshotVm", async (b, info) => b.snapshotVM!(vmId, snapshotId, includeMemory && (info.state === "running" || info.state === "paused"), diskIds), diskIds);
  }

  /** RevertVmSnapshot (needs "vm-snapshot"): the backend says which states a snapshot with or without memory allows; watchers see the new state. */
  async revertVmSnapshot(vmId: string, snapshotId: string, diskIds: readonly string[] = []): Promise<VmSnapshotInfo> {
    const snap = await this.onSnapshot(vmId, snapshotId, "RevertVmSnapshot", (b) => b.revertVMSnapshot!(vmId, snapshotId, diskIds), diskIds);
    await this.publish(vmId, "RevertVmSnapshot").catch(() => undefined);
    return snap;
  }

  /** DeleteVmSnapshot (needs "vm-snapshot"). */
  async deleteVmSnapshot(vmId: string, snapshotId: string): Promise<void> {
    await this.onSnapshot(vmId, snapshotId, "DeleteVmSnapshot", (b) => b.deleteVMSnapshot!(vmId, snapshotId));
  }

  /** ListVmSnapshots (needs "vm-snapshot"). */
  listVmSnapshots(vmId: string): Promise<VmSnapshotInfo[]> {
    return this.onSnapshot(vmId, undefined, "ListVmSnapshots", (b) => b.listVMSnapshots!(vmId));
  }

  /** Runs a VM snapshot call in the VM's queue: the capability first, then the ids, then the state. */
  private onSnapshot<T>(vmId: string, snapshotId: string | undefined, rpc: string, fn: (b: Backend, info: BackendVmInfo) => Promise<T>, diskIds: readonly string[] = []): Promise<T> {
    if (!this.backend.snapshotVM || !this.backend.capabilities.has("vm-snapshot")) throw this.lacks("vm-snapshot", rpc);
    const v = validateVmId("vm_id", vmId);
    if (snapshotId !== undefined && !SNAPSHOT_ID.test(snapshotId)) v.push({ field: "snapshot_id", reason: "INVALID_FORMAT", description: "must be a UUID in lowercase" });
    if (diskIds.length > MAX_SNAPSHOT_DISK_IDS) v.push({ field: "disk_ids", reason: "TOO_MANY", description: `at most ${MAX_SNAPSHOT_DISK_IDS} disks` });
    for (const [i, id] of diskIds.entries()) {
      if (!DEVICE_ID.test(id)) v.push({ field: `disk_ids[${i}]`, reason: "INVALID_FORMAT", description: "must be a disk id: a letter, then letters, digits, '_' or '-', at most 63 characters" });
      else if (diskIds.indexOf(id) !== i) v.push({ field: `disk_ids[${i}]`, reason: "DUPLICATE", description: `disk '${id}' is named twice` });
    }
    throwIfViolations(v);
    return this.serial(vmId, async () => {
      const info = await this.backend.getVMInfo(vmId);
      if (info.state === "suspended") throw new QuantixError("failed_precondition", `${rpc} is not allowed: VM '${vmId}' is SUSPENDED (its memory is in a file): resume it or shut it down first`);
      return fn(this.backend, info);
    });
  }

  /** RebootVm (force = reset). */
  reboot(vmId: string, force: boolean): Promise<BackendVmState> {
    this.need("reboot", "RebootVm");
    return this.act(vmId, "reboot", force, () => this.backend.rebootVM(vmId, force));
  }

  /**
   * PrepareMigration: the target half of a live migration; answers where to send the
   * state and, with disk copies, the disks. Without copy_storage every host path must be
   * shared; with it, the disks in `copies` are created here and every other path must
   * exist here (migration-storage.ts checks which).
   */
  async prepareMigration(vmId: string, given: VmConfig | undefined, copyStorage = false, requested: readonly RequestedCopy[] = [], deviceLayout: readonly PciSlot[] = []): Promise<IncomingMigration> {
    throwIfViolations([...validateVmId("vm_id", vmId), ...validateVmConfig(given)]);
    const layout = checkDeviceLayout(given!, deviceLayout);
    throwIfViolations(layout.violations);
    // A port NIC opens the port's TAP here, which the control plane applied on this host first.
    const config = resolvePortNics(given!, this.portTaps);
    const prepare = this.backend.prepareIncoming?.bind(this.backend);
    if (!prepare) throw this.lacks("live-migration", "PrepareMigration");
    this.need("live-migration", "PrepareMigration");
    let copies: IncomingDiskCopy[] = [];
    if (!copyStorage) {
      if (requested.length > 0) throw new QuantixError("invalid_argument", "disk_copies: only with copy_storage", [{ field: "disk_copies", reason: "NOT_ALLOWED", description: "only with copy_storage" }]);
      requireSharedStorage(vmId, config!, this.sharedDirs);
      await this.checkImages(config!);
    } else {
      this.need("live-migration-copy-storage", "PrepareMigration with copy_storage");
      const { violations, unshared, indexes } = checkCopies(config!, requested, this.sharedDirs);
      throwIfViolations(violations);
      if (unshared.length > 0) throw new QuantixError("failed_precondition", `VM '${vmId}' cannot migrate here: ${unshared.join(", ")} ${unshared.length === 1 ? "is" : "are"} neither on shared storage nor among disk_copies (PlanMigration on the source lists the disks to copy)`);
      copies = indexes.map((index, k) => ({ index, format: requested[k]!.format as "raw" | "qcow2", virtualSizeBytes: requested[k]!.virtualSizeBytes }));
      // The copies do not exist yet: their paths are checked to lie where VM files may, the rest to exist.
      if (this.allowedDirs) throwIfViolations(await checkCopyPaths(config!, indexes, this.allowedDirs));
      await this.checkImages(create(VmConfigSchema, { ...config!, storage: config!.storage.filter((_, i) => !indexes.includes(i)) }));
    }
    return this.serial(vmId, async () => {
      if (await this.find(vmId)) throw new QuantixError("already_exists", `VM '${vmId}' already exists on this host`);
      try {
        const prepared = await prepare(vmId, config!, this.migrationHost, copies, layout.placements);
        await this.createdAt.set(vmId, this.clock.now());
        await this.publish(vmId, "PrepareMigration");
        return prepared;
      } catch (err) {
        // Nothing half-made stays behind (the backend removes the copies it created with the
        // VM): a later PrepareMigration must find the id free.
        if (await this.find(vmId)) await this.backend.deleteVM(vmId).catch(() => undefined);
        throw err;
      }
    });
  }

  /**
   * PlanMigration: which disks a migration with copy_storage copies, measured (any state),
   * and where the VM's PCI devices sit (backends that place them). A VM with nothing to
   * copy gets an empty list of copies from any backend that migrates.
   */
  async planMigration(vmId: string): Promise<{ copies: { diskId: string; format: string; virtualSizeBytes: bigint }[]; layout: PciPlacement[] }> {
    throwIfViolations(validateVmId("vm_id", vmId));
    if (!this.backend.migrateOut) throw this.lacks("live-migration", "PlanMigration");
    this.need("live-migration", "PlanMigration");
    return this.serial(vmId, async () => {
      // The config only (no usage measured: no /proc reads, no query-blockstats), and the layout alongside.
      const [info, layout] = await Promise.all([this.backend.getVMInfo(vmId, STATE_ONLY), this.backend.deviceLayout?.(vmId) ?? []]);
      const indexes = disksToCopy(info.config, this.sharedDirs);
      if (indexes.length === 0) return { copies: [], layout };
      const describe = this.backend.describeDisks?.bind(this.backend);
      if (!describe) throw this.lacks("live-migration-copy-storage", `a migration of VM '${vmId}' (its disk ${indexes.map((i) => info.config.storage[i]!.path).join(", ")} is not on shared storage)`);
      this.need("live-migration-copy-storage", `a migration of VM '${vmId}' (its disk ${indexes.map((i) => info.config.storage[i]!.path).join(", ")} is not on shared storage)`);
      const disks = await describe(vmId, indexes);
      return { copies: disks.map((d) => ({ diskId: info.config.storage[d.index]!.id, format: d.format, virtualSizeBytes: d.virtualSizeBytes })), layout };
    });
  }

  /**
   * MigrateVm: the source half. Runs in the VM's queue (no other call changes it
   * meanwhile); on success the VM is deleted here and watchers see it DELETED. With
   * `copy`, the writable disks not on shared storage are copied to its storage URI.
   */
  async migrate(vmId: string, targetUri: string, options: MigrationOptions, copy?: { storageUri: string }): Promise<MigrationStats> {
    throwIfViolations(validateVmId("vm_id", vmId));
    const migrateOut = this.backend.migrateOut?.bind(this.backend);
    if (!migrateOut) throw this.lacks("live-migration", "MigrateVm");
    this.need("live-migration", "MigrateVm");
    if (copy) this.need("live-migration-copy-storage", "MigrateVm with copy_storage");
    return this.serial(vmId, async () => {
      const info = await this.backend.getVMInfo(vmId, STATE_ONLY);
      if (info.state !== "running") throw new QuantixError("failed_precondition", `MigrateVm is not allowed: VM '${vmId}' is ${info.state.toUpperCase()}; only a RUNNING VM migrates live`);
      let opts = options;
      if (!copy) requireSharedStorage(vmId, info.config, this.sharedDirs);
      else {
        const disks = disksToCopy(info.config, this.sharedDirs);
        if (disks.length > 0 && copy.storageUri === "") throw new QuantixError("invalid_argument", "storage_uri: required with copy_storage when a disk is copied (PrepareMigration answers it)", [{ field: "storage_uri", reason: "REQUIRED", description: "PrepareMigration on the target answers it" }]);
        if (disks.length > 0) opts = { ...options, storage: { uri: copy.storageUri, disks } };
      }
      const stats = await migrateOut(vmId, targetUri, opts);
      await this.backend.deleteVM(vmId);
      await this.createdAt.delete(vmId);
      this.hub.publish({ type: "deleted", vmId, state: info.state, reason: "MigrateVm: the VM now runs on another host", metadata: info.config.metadata });
      return stats;
    });
  }

  /** CancelMigration: outside the VM's queue, which the migration itself holds. */
  async cancelMigration(vmId: string): Promise<boolean> {
    throwIfViolations(validateVmId("vm_id", vmId));
    const info = await this.backend.getVMInfo(vmId);
    // Paused too: a migration that copies disks stops the vCPUs while it completes them.
    if ((info.state !== "running" && info.state !== "paused") || !this.backend.cancelMigration) return false;
    return this.backend.cancelMigration(vmId);
  }

  /**
   * AttachDisk: hot-plugs `disk` into a RUNNING or PAUSED VM (needs "disk-hotplug"); the
   * disk is checked as a disk of the VM's config (id, path under the allow-list). The
   * same disk again is a no-op (false); the same id with other settings ALREADY_EXISTS.
   */
  async attachDisk(vmId: string, disk: StorageDevice | undefined): Promise<{ state: BackendVmState; hotPlugged: boolean }> {
    throwIfViolations(validateVmId("vm_id", vmId));
    if (!disk) throw new QuantixError("invalid_argument", "disk: is required", [{ field: "disk", reason: "REQUIRED", description: "is required" }]);
    const attach = this.backend.attachDisk?.bind(this.backend);
    if (!attach) throw this.lacks("disk-hotplug", "AttachDisk");
    this.need("disk-hotplug", "AttachDisk");
    const d = clone(StorageDeviceSchema, disk);
    if (d.interfaceType === StorageInterfaceType.UNSPECIFIED) d.interfaceType = StorageInterfaceType.VIRTIO_BLK;
    if (d.isRootDevice) throw new QuantixError("invalid_argument", "disk.is_root_device: a hot-plugged disk is never the root device", [{ field: "disk.is_root_device", reason: "CONFLICT", description: "a hot-plugged disk is never the root device" }]);
    if (d.interfaceType !== StorageInterfaceType.VIRTIO_BLK) throw new QuantixError("failed_precondition", `disk.interface_type: only VIRTIO_BLK disks hot-plug on the ${this.backend.type} backend`);
    return this.serial(vmId, async () => {
      const info = await this.backend.getVMInfo(vmId);
      const same = info.config.storage.find((x) => x.id === d.id);
      if (same) {
        if (equals(StorageDeviceSchema, same, d)) return { state: info.state, hotPlugged: false };
        throw new QuantixError("already_exists", `VM '${vmId}' already has a disk '${d.id}' with other settings`);
      }
      this.requireLive(vmId, "AttachDisk", info.state);
      // The disk is checked as part of the config it makes (field names say config.storage[i]).
      const next = create(VmConfigSchema, { ...clone(VmConfigSchema, info.config), storage: [...info.config.storage, d] });
      throwIfViolations(validateVmConfig(next));
      await this.checkImages(next);
      await attach(vmId, d);
      return { state: (await this.publish(vmId, "AttachDisk")).state, hotPlugged: true };
    });
  }

  /** DetachDisk: hot-unplugs a disk of a RUNNING or PAUSED VM; a disk it does not have is a no-op (false). */
  async detachDisk(vmId: string, diskId: string, timeoutSeconds: number): Promise<{ state: BackendVmState; hotUnplugged: boolean }> {
    throwIfViolations(validateVmId("vm_id", vmId));
    if (diskId === "") throw new QuantixError("invalid_argument", "disk_id: is required", [{ field: "disk_id", reason: "REQUIRED", description: "is required" }]);
    if (timeoutSeconds < 0 || timeoutSeconds > 600) throw new QuantixError("invalid_argument", "timeout_seconds: must be between 0 and 600", [{ field: "timeout_seconds", reason: "OUT_OF_RANGE", description: "must be between 1 and 600 (0 means 30)" }]);
    const detach = this.backend.detachDisk?.bind(this.backend);
    if (!detach) throw this.lacks("disk-hotplug", "DetachDisk");
    this.need("disk-hotplug", "DetachDisk");
    return this.serial(vmId, async () => {
      const info = await this.backend.getVMInfo(vmId);
      const disk = info.config.storage.find((x) => x.id === diskId);
      if (!disk) return { state: info.state, hotUnplugged: false };
      if (disk.isRootDevice) throw new QuantixError("failed_precondition", `disk '${diskId}' is VM '${vmId}''s root device, which does not hot-unplug`);
      this.requireLive(vmId, "DetachDisk", info.state);
      await detach(vmId, diskId, (timeoutSeconds || 30) * 1000);
      return { state: (await this.publish(vmId, "DetachDisk")).state, hotUnplugged: true };
    });
  }

  /** ResizeDisk: grows a disk of a RUNNING or PAUSED VM online. */
  async resizeDisk(vmId: string, diskId: string, sizeBytes: bigint): Promise<bigint> {
    throwIfViolations(validateVmId("vm_id", vmId));
    if (diskId === "") throw new QuantixError("invalid_argument", "disk_id: is required", [{ field: "disk_id", reason: "REQUIRED", description: "is required" }]);
    if (sizeBytes <= 0n || sizeBytes % 512n !== 0n) throw new QuantixError("invalid_argument", "size_bytes: must be a positive multiple of 512", [{ field: "size_bytes", reason: "OUT_OF_RANGE", description: "must be a positive multiple of 512" }]);
    const resize = this.backend.resizeDisk?.bind(this.backend);
    if (!resize) throw this.lacks("disk-hotplug", "ResizeDisk");
    this.need("disk-hotplug", "ResizeDisk");
    return this.serial(vmId, async () => {
      const info = await this.backend.getVMInfo(vmId);
      if (!info.config.storage.some((x) => x.id === diskId)) throw new QuantixError("not_found", `VM '${vmId}' has no disk '${diskId}'`);
      this.requireLive(vmId, "ResizeDisk", info.state);
      return resize(vmId, diskId, sizeBytes);
    });
  }

  /**
   * AttachNic: hot-plugs `nic` into a RUNNING or PAUSED VM (needs "nic-hotplug"); a NIC
   * naming a port opens the port's TAP (resolvePortNic, as CreateVm), and the NIC is
   * checked as an interface of the VM's config. The same NIC again is a no-op (false); the
   * same id with other settings ALREADY_EXISTS.
   */
  async attachNic(vmId: string, nic: NetworkInterface | undefined): Promise<{ state: BackendVmState; hotPlugged: boolean }> {
    throwIfViolations(validateVmId("vm_id", vmId));
    if (!nic) throw new QuantixError("invalid_argument", "nic: is required", [{ field: "nic", reason: "REQUIRED", description: "is required" }]);
    const attach = this.backend.attachNic?.bind(this.backend);
    if (!attach) throw this.lacks("nic-hotplug", "AttachNic");
    this.need("nic-hotplug", "AttachNic");
    const given = clone(NetworkInterfaceSchema, nic);
    if (given.interfaceType === NetworkInterfaceType.UNSPECIFIED) given.interfaceType = NetworkInterfaceType.VIRTIO_NET;
    given.macAddress = given.macAddress.toLowerCase();
    return this.serial(vmId, async () => {
      const info = await this.backend.getVMInfo(vmId);
      const same = info.config.network.find((x) => x.id === given.id);
      if (same) {
        // A NIC on a port was stored with the port's TAP: the request may leave it out.
        const tap = given.tapDevice === "" && given.portId !== "" ? same.tapDevice : given.tapDevice;
        if (equals(NetworkInterfaceSchema, { ...same, macAddress: same.macAddress.toLowerCase() }, { ...given, tapDevice: tap })) return { state: info.state, hotPlugged: false };
        throw new QuantixError("already_exists", `VM '${vmId}' already has a network interface '${given.id}' with other settings`);
      }
      this.requireLive(vmId, "AttachNic", info.state);
      // The NIC is checked as part of the config it makes (field names say config.network[i]).
      const k = info.config.network.length;
      const next = create(VmConfigSchema, { ...clone(VmConfigSchema, info.config), network: [...info.config.network, given] });
      throwIfViolations(validateVmConfig(next));
      const twin = info.config.network.find((x) => x.macAddress.toLowerCase() === given.macAddress);
      if (twin) throw new QuantixError("invalid_argument", `config.network[${k}].mac_address: ${given.macAddress} is the MAC of the VM's interface '${twin.id}'`, [{ field: `config.network[${k}].mac_address`, reason: "DUPLICATE", description: `is the MAC of interface '${twin.id}'` }]);
      const missing = requiredCapabilities(next).filter((c) => c.field.startsWith(`config.network[${k}]`) && !(this.backend.capabilities as ReadonlySet<string>).has(c.capability));
      if (missing.length > 0) throw this.lacks(missing[0]!.capability, `${missing[0]!.field} ${NetworkInterfaceType[given.interfaceType]}`);
      const n = resolvePortNic(given, this.portTaps, `config.network[${k}]`);
      await attach(vmId, n);
      return { state: (await this.publish(vmId, "AttachNic")).state, hotPlugged: true };
    });
  }

  /** DetachNic: hot-unplugs a NIC of a RUNNING or PAUSED VM; a NIC it does not have is a no-op (false). */
  async detachNic(vmId: string, nicId: string, timeoutSeconds: number): Promise<{ state: BackendVmState; hotUnplugged: boolean }> {
    throwIfViolations(validateVmId("vm_id", vmId));
    if (nicId === "") throw new QuantixError("invalid_argument", "nic_id: is required", [{ field: "nic_id", reason: "REQUIRED", description: "is required" }]);
    if (timeoutSeconds < 0 || timeoutSeconds > 600) throw new QuantixError("invalid_argument", "timeout_seconds: must be between 0 and 600", [{ field: "timeout_seconds", reason: "OUT_OF_RANGE", description: "must be between 1 and 600 (0 means 30)" }]);
    const detach = this.backend.detachNic?.bind(this.backend);
    if (!detach) throw this.lacks("nic-hotplug", "DetachNic");
    this.need("nic-hotplug", "DetachNic");
    return this.serial(vmId, async () => {
      const info = await this.backend.getVMInfo(vmId);
      if (!info.config.network.some((x) => x.id === nicId)) return { state: info.state, hotUnplugged: false };
      this.requireLive(vmId, "DetachNic", info.state);
      await detach(vmId, nicId, (timeoutSeconds || 30) * 1000);
      return { state: (await this.publish(vmId, "DetachNic")).state, hotUnplugged: true };
    });
  }

  /** FAILED_PRECONDITION naming the state unless the VM runs (or is paused): its hypervisor holds the devices. */
  private requireLive(vmId: string, rpc: string, state: BackendVmState): void {
    if (state === "running" || state === "paused") return;
    throw new QuantixError("failed_precondition", `${rpc} is not allowed: VM '${vmId}' is ${state.toUpperCase()}; a VM that does not run gets its devices from its config (CreateVm)`);
  }

  /** GetVmInfo. */
  async info(vmId: string): Promise<BackendVmInfo> {
    throwIfViolations(validateVmId("vm_id", vmId));
    return this.backend.getVMInfo(vmId);
  }

  /** ListVms. */
  async list(q: ListQuery): Promise<ListPage> {
    const all = await this.backend.listVMs();
    return pageVms(all, (id) => this.createdAt.get(id) ?? 0, q);
  }

  /** Checks that the VM exists and has a buffered console; returns its info. */
  async consoleReady(vmId: string): Promise<BackendVmInfo> {
    this.need("console", "the console");
    const info = await this.info(vmId);
    if (!consoleBuffered(info.config)) throw new QuantixError("failed_precondition", `VM '${vmId}' has no buffered console: its config.console is disabled or its output is NULL`);
    return info;
  }

  /** FAILED_PRECONDITION naming "console-input" unless the backend takes console input. */
  consoleInputReady(): void {
    if (!this.backend.consoleWrite) throw this.lacks("console-input", "Writing to the console");
    this.need("console-input", "Writing to the console");
  }

  /** Console input for a VM (AttachConsole's writer): straight to the backend, not queued behind state changes. */
  async consoleWrite(vmId: string, data: Uint8Array): Promise<void> {
    this.consoleInputReady();
    await this.backend.consoleWrite!(vmId, data);
  }

  /** WatchVms: snapshot, SYNCED, then changes. */
  watch(signal: AbortSignal): AsyncIterable<VmChange> {
    const snapshot = async () => (await this.backend.listVMs()).sort((a, b) => (a.vmId < b.vmId ? -1 : 1)).map((vm) => change("existing", vm, vm.crashReason ?? ""));
    return this.hub.watch(snapshot, signal);
  }

  /** Runs one state-changing call in the VM's queue, after the state table allows it; resolves with the VM's state afterwards. */
  private async act(vmId: string, action: VmAction, force: boolean, run: (info: BackendVmInfo) => Promise<void>): Promise<BackendVmState> {
    return (await this.acted(vmId, action, force, run)).state;
  }

  /** act(), resolving with the VM as the backend has it afterwards (as watchers were told), or before a delete. */
  private acted(vmId: string, action: VmAction, force: boolean, run: (info: BackendVmInfo) => Promise<void>): Promise<BackendVmInfo> {
    throwIfViolations(validateVmId("vm_id", vmId));
    return this.serial(vmId, async () => {
      const info = await this.backend.getVMInfo(vmId, STATE_ONLY);
      const d = decide(action, info.state);
      if (d === "noop") return info;
      if (d === "forbidden" || (d === "force" && !force)) {
        throw new QuantixError("failed_precondition", `${ACTION_RPC[action]} is not allowed: VM '${vmId}' is ${info.state.toUpperCase()}${hint(action, info.state)}`);
      }
      await run(info);
      if (action === "delete") return info;
      return this.publish(vmId, ACTION_RPC[action]);
    });
  }

  /** Chains `fn` after every earlier call on the same VM, whatever their outcome. */
  private serial<T>(vmId: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.chains.get(vmId) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const tail = run.then(
      () => undefined,
      () => undefined,
    );
    this.chains.set(vmId, tail);
    void tail.then(() => {
      if (this.chains.get(vmId) !== tail) return;
      this.chains.delete(vmId);
      this.preempts.delete(vmId);
    });
    return run;
  }

  /** The signal every graceful stop of this VM queued until the next forced one observes. */
  private gracefulSignal(vmId: string): AbortSignal {
    let ac = this.preempts.get(vmId);
    if (!ac) this.preempts.set(vmId, (ac = new AbortController()));
    return ac.signal;
  }

  /** Makes the VM's outstanding graceful stops (running or queued) power off at once. */
  private preemptGraceful(vmId: string): void {
    this.preempts.get(vmId)?.abort();
    this.preempts.delete(vmId);
  }

  /** INVALID_ARGUMENT for every host path of `config` outside the image allow-list (or not among a simulated host's images). */
  private async checkImages(config: VmConfig): Promise<void> {
    if (this.imageCheck) throwIfViolations(await this.imageCheck(config));
  }

  private need(capability: string, what: string): void {
    if (!(this.backend.capabilities as ReadonlySet<string>).has(capability)) throw this.lacks(capability, what);
  }

  private lacks(capability: string, what: string): QuantixError {
    return new QuantixError("failed_precondition", `${what} needs the capability "${capability}", which the ${this.backend.type} backend lacks`);
  }

  private async find(vmId: string): Promise<BackendVmInfo | undefined> {
    try {
      return await this.backend.getVMInfo(vmId, STATE_ONLY);
    } catch (err) {
      if (err instanceof QuantixError && err.code === "not_found") return undefined;
      throw err;
    }
  }

  /** Reads the VM's state as the backend has it now and tells watchers. */
  private async publish(vmId: string, reason: string): Promise<BackendVmInfo> {
    const info = await this.backend.getVMInfo(vmId, STATE_ONLY);
    this.hub.publish(change("changed", info, reason));
    return info;
  }

  private onBackendEvent(e: BackendEvent): void {
    const reason = e.reason ?? `the hypervisor reported ${e.state}`;
    this.backend.getVMInfo(e.vmId, STATE_ONLY).then(
      (info) => this.hub.publish(change("changed", info, reason)),
      () => this.hub.publish({ type: "changed", vmId: e.vmId, state: e.state, reason, metadata: {} }),
    );
  }
}

/** What the state table and watch events read: a VM's state, not its usage (no query to a VMM busy starting). */
const STATE_ONLY = { usage: false } as const;

/** At most this many disks in a SnapshotVm / RevertVmSnapshot request. */
const MAX_SNAPSHOT_DISK_IDS = 64;
const SNAPSHOT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function change(type: VmChange["type"], vm: BackendVmInfo, reason: string): VmChange {
  return { type, vmId: vm.vmId, state: vm.state, reason, pid: vm.pid, startedAtMs: vm.startedAtMs, metadata: vm.config.metadata };
}
