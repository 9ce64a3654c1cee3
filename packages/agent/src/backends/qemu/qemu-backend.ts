import { execFile } from "node:child_process";
import { access, constants, open, readFile, rm } from "node:fs/promises";
import { promisify } from "node:util";
import { QuantixError, notFound, systemClock, type Clock, type PciPlacement } from "@quantix/core";
import { ConsoleOutput, type NetworkInterface, type StorageDevice, type VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import type { Backend, ConsoleChunk, BackendCapability, BackendEvent, BackendVmInfo, IncomingDiskCopy, IncomingMigration, MigrationOptions, MigrationStats, ShutdownOptions, VmInfoOptions, VmSnapshotInfo } from "../../backend.js";
import { buildCloudInitSeed } from "../../cloud-init-seed.js";
import { ConsoleRing, DEFAULT_CONSOLE_BUFFER_BYTES } from "../../console-ring.js";
import { checkDiskChain, openHostFiles, type HostFile } from "../../host-files.js";
import { detectDiskFormat, detectDiskFormatOf, detectDiskSource } from "./disk-format.js";
import { probeKvm, type KvmProbeResult } from "./kvm-probe.js";
import { buildQemuArgs, hostPathViolation, qmpChardevOption, type DiskSource } from "./qemu-args.js";
import { describeExit, isQemuProcess, killHard, readPidFile } from "./qemu-process.js";
import { cancelOutgoing, listenIncoming, migrateOut } from "./qemu-migration.js";
import { createDiskCopy, diskVirtualSize } from "./qemu-disk-copy.js";
import { migrateOutCopyingDisks } from "./qemu-disk-mirror.js";
import { exportDisks, stopDiskExports, type PortPicker } from "./qemu-nbd-export.js";
import { stopRuntime } from "./qemu-stop.js";
import { qemuVmInfo } from "./qemu-vm-info.js";
import { diskNodeNames, hotPlugDisk, hotUnplugDisk, resizeDiskOnline } from "./qemu-disk-hotplug.js";
import { hotPlugNic, hotUnplugNic, nicNames } from "./qemu-nic-hotplug.js";
import { QemuRuntime, type RuntimeEnd } from "./qemu-runtime.js";
import { assignPciSlots, pciDevices } from "./qemu-pci-layout.js";
import { loadState, saveState } from "./qemu-suspend.js";
import { applyOffline, deleteLive, findSnapshot, listVmSnapshots, loadLive, saveLive, saveOffline, snapshotDisks } from "./qemu-vm-snapshot.js";
import { QemuImg } from "../../storage/qemu-img.js";
import { NETNS_NAME } from "../../network/names.js";
import { clearRuntimeFiles, listVmDirs, loadRecord, removeVmDir, saveRecord, vmPaths, type VmPaths, type VmRecord } from "./qemu-vm-dir.js";

/** Settings of {@link QemuBackend} (VMCP_QEMU_BINARY, VMCP_QEMU_KVM, the agent's state dir). */
export interface QemuBackendOptions {
  /** Absolute directory holding `vms/<vmId>/` for every VM. */
  readonly stateDir: string;
  /** The QEMU binary; default qemu-system-x86_64 from PATH. */
  readonly binary?: string;
  /** `-accel kvm` when true, `-accel tcg` otherwise. */
  readonly kvm: boolean;
  /** Console bytes kept per VM; default 1 MiB. */
  readonly consoleBufferBytes?: number;
  readonly clock?: Clock;
  /**
   * The directories a VM's kernel, initrd and disks must lie in (the agent's image and
   * shared directories), checked again on the descriptors QEMU is given at each start
   * (host-files.ts). Undefined: any directory (unit tests).
   */
  readonly imageDirs?: readonly string[];
  /** Test seam: runs after a VM's host files were opened and checked, before QEMU is spawned with them. */
  readonly beforeSpawn?: (vmId: string) => Promise<void>;
  /** The program that builds cloud-init seeds; default genisoimage from PATH (a test names a missing one). */
  readonly seedBinary?: string;
  /** Longest save or load of a suspended VM's memory; default 10 minutes. */
  readonly suspendTimeoutMs?: number;
  /** The qemu-img binary that creates an incoming migration's disk copies; default qemu-img from PATH. */
  readonly qemuImgBinary?: string;
  /** Test seam: picks the port of an incoming migration's NBD server. */
  readonly pickPort?: PortPicker;
  /**
   * The network namespace QEMU runs in (a name under /run/netns, as VMCP_NETWORK_NETNS):
   * QEMU is started as `ip netns exec <netns> <binary> ...`, so it opens the TAPs the
   * data plane made there. `ip netns exec` execs QEMU in place (same pid). Everything
   * QEMU listens on (an incoming migration, its NBD server) is then in that namespace.
   * Undefined: the agent's own namespace.
   */
  readonly netns?: string;
}

interface Entry {
  readonly paths: VmPaths;
  readonly record: VmRecord;
  readonly ring: ConsoleRing;
  runtime: QemuRuntime | undefined;
  /** Set while shutdownVM/deleteVM stops QEMU, so its end is not a crash. */
  stopping: boolean;
  /** Set while suspendVM ends QEMU after saving its memory: its end makes the VM "suspended". */
  suspending: boolean;
  /** The record and runtime-file writes QEMU's end started; awaited before the directory is removed or the call returns. */
  afterEnd: Promise<void>;
}

const run = promisify(execFile);
const SUSPEND_TIMEOUT_MS = 600_000;
const exists = (file: string): Promise<boolean> => access(file).then(() => true, () => false);
// Longest unix socket path (sun_path is 108 bytes with the terminating NUL).
const MAX_SOCKET_PATH = 107;

/**
 * The QEMU backend: one detached QEMU process per VM (see qemu-runtime.ts), which keeps
 * running across agent restarts and is re-adopted by recover(). Graceful reboot is a
 * system_reset like the forced one: without a guest agent QEMU has no way to ask the
 * guest to reboot (ACPI has a power button, not a reset button).
 */
export class QemuBackend implements Backend {
  readonly type = "qemu";
  readonly capabilities: ReadonlySet<BackendCapability> = new Set<BackendCapability>(["pause", "reboot", "graceful-shutdown", "console", "qcow2", "readopt", "live-migration", "firmware-boot", "metrics", "cloud-init", "suspend", "disk-hotplug", "nic-hotplug", "live-migration-copy-storage", "vm-snapshot", "console-input"]);
  private readonly img = new QemuImg();
  private readonly entries = new Map<string, Entry>();
  private readonly listeners = new Set<(e: BackendEvent) => void>();
  /** Outgoing migrations that copy disks, by VM: cancelMigration aborts them at any step. */
  private readonly outgoing = new Map<string, AbortController>();
  private readonly binary: string;
  private readonly clock: Clock;
  private versionText: Promise<string> | undefined;
  private kvmProbe: Promise<KvmProbeResult> | undefined;
  private closed = false;

  constructor(private readonly options: QemuBackendOptions) {
    const bad = hostPathViolation("stateDir", options.stateDir);
    if (bad) throw new QuantixError("invalid_argument", `QEMU backend state directory ${bad.description}`);
    if (options.netns !== undefined && !NETNS_NAME.test(options.netns)) throw new QuantixError("invalid_argument", `QEMU backend netns must be a network namespace name (letters, digits, '_', '.', '-'), got '${options.netns}'`);
    this.binary = options.binary ?? "qemu-system-x86_64";
    this.clock = options.clock ?? systemClock;
  }

  version(): Promise<string> {
    this.versionText ??= run(this.binary, ["--version"]).then(
      ({ stdout }) => /QEMU emulator version [0-9][^\s(]*/.exec(stdout)?.[0] ?? stdout.split("\n")[0]?.trim() ?? "unknown",
      (err: unknown) => {
        this.versionText = undefined; // retry next time: it may get installed
        throw new QuantixError("unavailable", `QEMU binary '${this.binary}' does not run (${String(err)}); install qemu-system-x86 or set VMCP_QEMU_BINARY`);
      },
    );
    return this.versionText;
  }

  /** QEMU runs; with KVM, /dev/kvm is there and a test vCPU really runs under it (probed once). */
  async ping(): Promise<void> {
    await this.version();
    if (this.options.kvm) {
      await access("/dev/kvm", constants.R_OK | constants.W_OK).catch(() => {
        throw new QuantixError("unavailable", "KVM is not usable (/dev/kvm is missing or not accessible); set VMCP_QEMU_KVM=false to use TCG");
      });
      // Whether KVM can run a vCPU does not change while the agent runs: probe once.
      this.kvmProbe ??= probeKvm(this.binary);
      const probe = await this.kvmProbe;
      if (!probe.usable) throw new QuantixError("unavailable", `KVM cannot run guests on this host (${probe.reason}); set VMCP_QEMU_KVM=false to use TCG`);
    }
  }

  /**
   * Re-adopts every VM directory. A live QEMU (its pid file names a process whose command
   * line has this VM's QMP socket) is re-attached. A dead one is reported crashed if the
   * agent last knew it running (it ended while no agent watched), and keeps its recorded
   * state (created/shutdown/crashed) otherwise. The console ring starts empty: output
   * from before the restart, and while no agent was connected, is lost.
   */
  async recover(): Promise<string[]> {
    const ids: string[] = [];
    for (const vmId of await listVmDirs(this.options.stateDir)) {
      const paths = vmPaths(this.options.stateDir, vmId);
      const record = await loadRecord(paths);
      if (!record) continue;
      // Copies an incoming migration was filling when the agent stopped: whether that
      // migration completed is no longer known here, so they are kept as the VM's disks
      // (a partial copy left behind is better than a completed one deleted).
      record.incomingCopies = undefined;
      const entry = this.addEntry(vmId, paths, record);
      const pid = await readPidFile(paths.pidFile);
      if (pid && (await isQemuProcess(pid, qmpChardevOption(paths.qmpSocket)))) {
        try {
          entry.runtime = await QemuRuntime.adopt(pid, this.runtimeOptions(vmId, entry));
          record.state = "running";
        } catch (err) {
          killHard(pid); // alive but unreachable: nothing could manage it
          this.markEnded(entry, `QEMU could not be re-adopted: ${String(err)}`);
        }
      } else if (record.state === "running") {
        this.markEnded(entry, "QEMU exited while the agent was not running");
      } else if (record.state === "suspended" && !(await exists(paths.stateFile))) {
        this.markEnded(entry, "the suspended VM's saved memory file is missing");
      }
      await saveRecord(paths, record);
      ids.push(vmId);
    }
    return ids;
  }

  async createVM(vmId: string, config: VmConfig): Promise<void> {
    const paths = vmPaths(this.options.stateDir, vmId);
    if (Buffer.byteLength(paths.consoleSocket) > MAX_SOCKET_PATH) throw new QuantixError("failed_precondition", `the agent's state directory is too long for unix socket paths of VM '${vmId}'`);
    // Detect formats now, before any guest writes to the disk; a disk that does not exist
    // yet is detected at its first boot instead.
    const disks = await Promise.all(config.storage.map((d) => detectDiskSource(d.path).catch(() => undefined)));
    const known = disks.every((d) => d !== undefined) ? (disks as DiskSource[]) : undefined;
    // Builds the command line once to reject what QEMU here cannot do before anything exists.
    buildQemuArgs({ vmId, config, kvm: this.options.kvm, ...paths, disks: known ?? config.storage.map(() => ({ format: "raw", blockDevice: false })) });
    const record: VmRecord = { config, disks: known, state: "created", crashReason: undefined, startedAtMs: undefined };
    try {
      // The seed first: a VM whose seed cannot be built is not created at all.
      if (config.cloudInit) {
        await saveRecord(paths, record);
        await buildCloudInitSeed(vmId, config.cloudInit, paths.seedFile, this.options.seedBinary);
      }
      await saveRecord(paths, record);
    } catch (err) {
      await removeVmDir(paths);
      throw err;
    }
    this.addEntry(vmId, paths, record);
  }

  async deleteVM(vmId: string): Promise<void> {
    const entry = this.entry(vmId);
    if (entry.runtime) await this.stop(entry, { force: true, timeoutSeconds: 0 });
    await entry.afterEnd;
    entry.ring.close();
    this.entries.delete(vmId);
    await removeVmDir(entry.paths);
    // Copies a migration that did not complete created here: partial, nobody's data.
    await Promise.all((entry.record.incomingCopies ?? []).map((f) => rm(f, { force: true })));
  }

  /** Boots; a suspended VM is restored from its saved memory instead. */
  async bootVM(vmId: string): Promise<void> {
    const entry = this.entry(vmId);
    if (entry.record.state === "suspended") return this.restore(vmId);
    if (entry.runtime) return;
    // A cold boot: a saved state left by a suspend whose QEMU outlived an agent crash is stale.
    await rm(entry.paths.stateFile, { force: true });
    await this.launch(vmId, []);
  }

  /**
   * Hibernates: stops the vCPUs, saves the migration stream to the VM's state file
   * (qemu-suspend.ts), then quits QEMU; the VM is "suspended". A failed save removes the
   * partial file and lets the guest run again if it ran.
   */
  async suspendVM(vmId: string): Promise<void> {
    const entry = this.entry(vmId);
    const rt = this.running(vmId);
    const wasRunning = !rt.paused;
    if (wasRunning) await rt.qmp.execute("stop");
    rt.paused = true;
    try {
      await saveState(rt.qmp, entry.paths.suspendSocket, entry.paths.stateFile, this.options.suspendTimeoutMs ?? SUSPEND_TIMEOUT_MS);
    } catch (err) {
      if (wasRunning) await rt.qmp.execute("cont").catch(() => {});
      throw err;
    }
    entry.suspending = true;
    await this.stop(entry, { force: true, timeoutSeconds: 0 });
    await entry.afterEnd;
    entry.suspending = false;
  }

  /**
   * Starts QEMU waiting for an incoming stream, feeds it the saved file as an inherited
   * descriptor, lets the guest run, then removes the file. On failure QEMU is ended and
   * the VM stays suspended with its file, so the restore can be retried or the memory
   * discarded with ShutdownVm.
   */
  private async restore(vmId: string): Promise<void> {
    const entry = this.entry(vmId);
    const state = await open(entry.paths.stateFile, "r").catch((err: unknown) => {
      throw new QuantixError("failed_precondition", `VM '${vmId}' is suspended but its saved memory cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)}); ShutdownVm discards the suspended state`);
    });
    // Until the guest runs again, QEMU's end (say, a stream it cannot load) leaves the VM suspended.
    entry.suspending = true;
    let loading = false;
    try {
      const { runtime, extraFds } = await this.launchWith(vmId, ["-incoming", "defer"], [state.fd]);
      runtime.paused = true;
      loading = true;
      try {
        await loadState(runtime.qmp, extraFds[0]!, this.options.suspendTimeoutMs ?? SUSPEND_TIMEOUT_MS);
      } catch (err) {
        await this.stop(entry, { force: true, timeoutSeconds: 0 });
        throw err;
      }
    } catch (err) {
      await entry.afterEnd;
      // QEMU did not start (a disk gone, say): that error as it is; the VM is still suspended.
      if (!loading) throw err;
      const log = (await readFile(entry.paths.logFile, "utf8").catch(() => "")).trim().split("\n").at(-1) ?? "";
      const why = err instanceof Error ? err.message : String(err);
      throw new QuantixError("aborted", `restoring VM '${vmId}' from its saved memory failed (${why}${log ? `; QEMU: ${log}` : ""}); it stays SUSPENDED with the file: retry, or ShutdownVm to discard it`);
    } finally {
      entry.suspending = false;
      await state.close();
    }
    await rm(entry.paths.stateFile, { force: true });
  }

  /**
   * Defines the VM and starts QEMU with `-incoming defer` and without -S: QEMU takes over
   * the disks (activates them) and starts the guest by itself once the migration
   * completed; QEMU's RESUME event then tells watchers. (A "cont" while it waits would
   * take the disks' locks from under the source, which fails for disks on shared storage.)
   */
  async prepareIncoming(vmId: string, config: VmConfig, listenHost: string, copies: readonly IncomingDiskCopy[] = [], layout: readonly PciPlacement[] = []): Promise<IncomingMigration> {
    await this.createVM(vmId, config);
    const entry = this.entry(vmId);
    // The source's PCI layout (VmManager checked that it places every device): QEMU starts with it.
    if (layout.length > 0) {
      entry.record.pciSlots = layout.map((p) => ({ kind: p.kind, id: p.id, slot: p.slot }));
      await saveRecord(entry.paths, entry.record);
    }
    for (const c of copies) {
      const path = config.storage[c.index]!.path;
      await createDiskCopy(path, c.format, c.virtualSizeBytes, this.options.qemuImgBinary);
      // Recorded as soon as it exists, so a failure from here on removes it with the VM.
      (entry.record.incomingCopies ??= []).push(path);
      await saveRecord(entry.paths, entry.record);
    }
    const rt = (await this.launchWith(vmId, ["-incoming", "defer"], [], true)).runtime;
    rt.paused = true;
    rt.qmp.onEvent((e) => {
      if (e.event !== "RESUME" || this.entries.get(vmId) !== entry) return;
      entry.record.startedAtMs = this.clock.now();
      // The disks are complete (the source flushed them before the switch-over) and now the VM's own.
      entry.record.incomingCopies = undefined;
      void saveRecord(entry.paths, entry.record).catch(() => {});
      if (copies.length > 0) void stopDiskExports(rt.qmp);
      const event: BackendEvent = { vmId, state: "running", reason: "the incoming migration completed" };
      for (const l of [...this.listeners]) l(event);
    });
    const storageUri = copies.length > 0 ? await exportDisks(rt.qmp, listenHost, copies.map((c) => `disk${c.index}`), this.options.pickPort) : "";
    return { targetUri: await listenIncoming(rt.qmp, listenHost), storageUri };
  }

  /**
   * Where the VM's PCI devices sit. While QEMU runs, its own answer (query-pci), found by
   * the qdev ids the agent gave them: positional for the disks QEMU started with,
   * id-derived for hot-plugged ones (qemu-disk-hotplug.ts), `cidata-dev` and `nic<i>`; so
   * a VM started by an agent from before explicit addresses is described right too.
   * Otherwise the layout its next start gets. A device of the config that is not on the
   * bus cannot be reproduced on a target: FAILED_PRECONDITION naming it.
   */
  async deviceLayout(vmId: string): Promise<PciPlacement[]> {
    const entry = this.entry(vmId);
    const devices = pciDevices(entry.record.config, !!entry.record.config.cloudInit);
    const rt = entry.runtime;
    if (!rt) return assignPciSlots(devices, entry.record.pciSlots ?? []);
    const onBus = new Map((await rt.qmp.execute<{ bus: number; devices: { slot: number; function: number; qdev_id?: string }[] }[]>("query-pci"))
      .filter((b) => b.bus === 0).flatMap((b) => b.devices).filter((d) => d.function === 0 && d.qdev_id).map((d) => [d.qdev_id!, d.slot]));
    return devices.map((d) => {
      const qdev = d.kind === "disk" ? this.diskNames(entry, d.id).device : d.kind === "cloud-init-seed" ? "cidata-dev" : this.nicNames(entry, d.id).device;
      const slot = onBus.get(qdev);
      if (slot === undefined) throw new QuantixError("failed_precondition", `VM '${vmId}' cannot migrate: its ${d.kind}${d.id ? ` '${d.id}'` : ""} is not on its PCI bus as ${qdev}, so a target cannot start with the same device layout; restart the VM first`);
      return { ...d, slot };
    });
  }

  /** Format and virtual size of disks of a VM: QEMU's answer while it runs, the files' otherwise. */
  async describeDisks(vmId: string, disks: readonly number[]): Promise<IncomingDiskCopy[]> {
    const entry = this.entry(vmId);
    const qmp = entry.runtime?.qmp;
    return Promise.all(disks.map(async (index) => {
      const path = entry.record.config.storage[index]!.path;
      const format = entry.record.disks?.[index]?.format ?? (await detectDiskFormat(path));
      return { index, format, virtualSizeBytes: await diskVirtualSize(path, format, qmp, this.diskNames(entry, entry.record.config.storage[index]!.id).format) };
    }));
  }

  async migrateOut(vmId: string, targetUri: string, options: MigrationOptions): Promise<MigrationStats> {
    const qmp = this.running(vmId).qmp;
    const entry = this.entry(vmId);
    if (!options.storage) return migrateOut(qmp, targetUri, options);
    // The source's node names: positional for the disks QEMU started with, id-derived for hot-plugged ones;
    // the target started with all of them and exports each by its position (disk<i>).
    const nodes = options.storage.disks.map((i) => this.diskNames(entry, entry.record.config.storage[i]!.id).format);
    if (this.outgoing.has(vmId)) throw new QuantixError("failed_precondition", `VM '${vmId}' is already migrating`);
    const abort = new AbortController();
    this.outgoing.set(vmId, abort);
    try {
      return await migrateOutCopyingDisks(qmp, targetUri, { storageUri: options.storage.uri, nodes, exports: options.storage.disks.map((i) => `disk${i}`) }, options, abort.signal);
    } finally {
      this.outgoing.delete(vmId);
    }
  }

  async cancelMigration(vmId: string): Promise<boolean> {
    const copying = this.outgoing.get(vmId);
    if (copying) {
      const was = copying.signal.aborted;
      copying.abort();
      return !was;
    }
    return cancelOutgoing(this.running(vmId).qmp);
  }

  private async launch(vmId: string, extraArgs: readonly string[]): Promise<QemuRuntime> {
    const running = this.entry(vmId).runtime;
    if (running) return running;
    return (await this.launchWith(vmId, extraArgs, [])).runtime;
  }

  /**
   * Starts QEMU with `extraArgs`; `inherit` descriptors are passed after the host files,
   * and `extraFds` answers their numbers in QEMU's process. `incoming`: for a migration's
   * target, QEMU starts the guest itself when the state has arrived (no -S, no "cont").
   */
  private async launchWith(vmId: string, extraArgs: readonly string[], inherit: readonly number[], incoming = false): Promise<{ runtime: QemuRuntime; extraFds: number[] }> {
    const entry = this.entry(vmId);
    if (entry.runtime) throw new QuantixError("failed_precondition", `VM '${vmId}' already runs`);
    const { record, paths } = entry;
    // QEMU gets the files opened and checked here, never their names (host-files.ts).
    const files = await openHostFiles(record.config, this.options.imageDirs);
    let extraFds: number[] = [];
    let pciSlots: PciPlacement[] = [];
    let started: VmRecord | undefined;
    try {
      record.disks ??= files.disks.map((f) => ({ format: detectDiskFormatOf(f.fd), blockDevice: f.blockDevice }));
      const disks = record.disks.map((d, i) => ({ ...d, blockDevice: files.disks[i]!.blockDevice }));
      // The child's fds 3, 4, ... are files.all in order.
      const childFd = (f: HostFile | undefined) => (f ? 3 + files.all.indexOf(f) : undefined);
      const fds = { kernel: childFd(files.kernel), initrd: childFd(files.initrd), disks: files.disks.map((f) => childFd(f)!), backing: files.backing.map((chain) => chain.map((f) => childFd(f)!)) };
      const backing = files.backing.map((chain) => chain.map((f) => ({ format: f.format, blockDevice: f.blockDevice, path: f.real })));
      const seedFile = record.config.cloudInit ? paths.seedFile : undefined;
      if (record.config.cloudInit && !(await exists(paths.seedFile))) await buildCloudInitSeed(vmId, record.config.cloudInit, paths.seedFile, this.options.seedBinary);
      // The slots recorded (a previous start, hot-plug, or a migration's source) are kept; new devices fill free ones.
      pciSlots = assignPciSlots(pciDevices(record.config, seedFile !== undefined), record.pciSlots ?? []);
      const args = [...buildQemuArgs({ vmId, config: record.config, kvm: this.options.kvm, ...paths, disks, backing, fds, seedFile, pciSlots, autostart: incoming }), ...extraArgs];
      extraFds = inherit.map((_, i) => 3 + files.all.length + i);
      await this.options.beforeSpawn?.(vmId);
      entry.stopping = false;
      // In a namespace, `ip` switches into it and execs QEMU: the pid spawned is QEMU's.
      const [bin, argv] = this.options.netns === undefined ? [this.binary, args] : ["ip", ["netns", "exec", this.options.netns, this.binary, ...args]];
      // The record says "running" once a QEMU exists: saved while QEMU initialises (its
      // answer waits for it), so an agent that restarts finds it; put back if QEMU fails.
      started = { ...record, state: "running", crashReason: undefined, startedAtMs: this.clock.now(), launchedDiskIds: record.config.storage.map((d) => d.id), launchedNicIds: record.config.network.map((n) => n.id), pciSlots };
      const saving = started;
      entry.runtime = await QemuRuntime.start(bin, argv, this.runtimeOptions(vmId, entry), [...files.all.map((f) => f.fd), ...inherit], !incoming, () => saveRecord(paths, saving)).catch(async (err: unknown) => {
        await saveRecord(paths, record).catch(() => {});
        if (!this.options.kvm || !(err instanceof QuantixError)) throw err;
        throw new QuantixError(err.code, `${err.message}; if KVM cannot run guests on this host, set VMCP_QEMU_KVM=false`);
      });
    } finally {
      // QEMU holds its own copies; the agent's are closed whether or not it started.
      files.close();
    }
    Object.assign(record, started!);
    return { runtime: entry.runtime, extraFds };
  }

  /** Stops QEMU; a suspended VM's saved memory is discarded instead (the next boot is cold). */
  async shutdownVM(vmId: string, options: ShutdownOptions): Promise<void> {
    const entry = this.entry(vmId);
    if (!entry.runtime && entry.record.state === "suspended") {
      await rm(entry.paths.stateFile, { force: true });
      this.markEnded(entry, undefined);
      await saveRecord(entry.paths, entry.record);
      return;
    }
    await this.stop(entry, options);
    await entry.afterEnd;
  }

  async pauseVM(vmId: string): Promise<void> {
    const rt = this.running(vmId);
    await rt.qmp.execute("stop");
    rt.paused = true;
  }

  /** Lets a paused guest run; a suspended VM is restored from its saved memory. */
  async resumeVM(vmId: string): Promise<void> {
    if (!this.entry(vmId).runtime && this.entry(vmId).record.state === "suspended") return this.restore(vmId);
    const rt = this.running(vmId);
    await rt.qmp.execute("cont");
    rt.paused = false;
  }

  /** A consistent snapshot of every writable qcow2 disk (qemu-vm-snapshot.ts): QMP while QEMU runs, qemu-img otherwise. */
  async snapshotVM(vmId: string, snapshotId: string, includeMemory: boolean, diskIds: readonly string[] = []): Promise<VmSnapshotInfo> {
    const entry = this.entry(vmId);
    const disks = await snapshotDisks(vmId, entry.record.config, entry.record.disks, (id) => this.diskNames(entry, id).format, diskIds);
    const existing = (await listVmSnapshots(this.img, disks)).find((x) => x.snapshotId === snapshotId);
    if (existing?.complete) return this.snapshotOfVm(entry, existing);
    if (existing) throw new QuantixError("failed_precondition", `snapshot '${snapshotId}' of VM '${vmId}' is on some of its disks only (${existing.diskIds.join(", ")}): delete it first`);
    const rt = entry.runtime;
    if (rt) await saveLive(rt.qmp, disks, snapshotId, includeMemory, rt.paused);
    else await saveOffline(this.img, disks, snapshotId);
    return this.snapshotOfVm(entry, findSnapshot(await listVmSnapshots(this.img, disks), snapshotId));
  }

  /** A snapshot found among some of the VM's disks, with `complete` saying whether every writable disk holds it. */
  private snapshotOfVm(entry: Entry, snap: VmSnapshotInfo): VmSnapshotInfo {
    const writable = entry.record.config.storage.filter((d) => !d.readOnly).length;
    return { ...snap, complete: snap.diskIds.length === writable };
  }

  /**
   * Reverts every disk. With memory: loaded into the running QEMU, or into a QEMU started
   * with `-loadvm` for a stopped VM; the guest continues from the snapshot point. Without
   * memory: offline only, the VM stopped.
   */
  async revertVMSnapshot(vmId: string, snapshotId: string, diskIds: readonly string[] = []): Promise<VmSnapshotInfo> {
    const entry = this.entry(vmId);
    const disks = await snapshotDisks(vmId, entry.record.config, entry.record.disks, (id) => this.diskNames(entry, id).format, diskIds);
    const snap = findSnapshot(await listVmSnapshots(this.img, disks), snapshotId);
    if (!snap.complete) throw new QuantixError("failed_precondition", `snapshot '${snapshotId}' of VM '${vmId}' is on some of ${diskIds.length > 0 ? "the disks named" : "its disks"} only (${snap.diskIds.join(", ")})`);
    const rt = entry.runtime;
    if (snap.memoryIncluded) {
      if (rt) {
        await loadLive(rt.qmp, disks, snapshotId, snap.diskIds[0]!);
        rt.paused = false;
      } else {
        // QEMU's -loadvm wants the snapshot on every writable disk.
        if (diskIds.length > 0) throw new QuantixError("failed_precondition", `snapshot '${snapshotId}' of VM '${vmId}' with memory is on some of its disks only: revert it while the VM runs`);
        await rm(entry.paths.stateFile, { force: true });
        await this.launch(vmId, ["-loadvm", snapshotId]);
      }
      return this.snapshotOfVm(entry, snap);
    }
    if (rt) throw new QuantixError("failed_precondition", `VM '${vmId}' runs: a snapshot without memory is reverted with the VM stopped`);
    await applyOffline(this.img, disks, snapshotId, "apply", snap.diskIds);
    return this.snapshotOfVm(entry, snap);
  }

  async deleteVMSnapshot(vmId: string, snapshotId: string): Promise<void> {
    const entry = this.entry(vmId);
    const disks = await snapshotDisks(vmId, entry.record.config, entry.record.disks, (id) => this.diskNames(entry, id).format, [], "skip");
    const snap = findSnapshot(await listVmSnapshots(this.img, disks), snapshotId);
    const rt = entry.runtime;
    if (rt) await deleteLive(rt.qmp, disks.filter((d) => snap.diskIds.includes(d.id)), snapshotId);
    else await applyOffline(this.img, disks, snapshotId, "delete", snap.diskIds);
  }

  async listVMSnapshots(vmId: string): Promise<VmSnapshotInfo[]> {
    const entry = this.entry(vmId);
    const all = await listVmSnapshots(this.img, await snapshotDisks(vmId, entry.record.config, entry.record.disks, (id) => this.diskNames(entry, id).format, [], "skip"));
    return all.map((s) => this.snapshotOfVm(entry, s));
  }

  async rebootVM(vmId: string, _force: boolean): Promise<void> {
    await this.running(vmId).qmp.execute("system_reset");
    const entry = this.entry(vmId);
    entry.record.startedAtMs = this.clock.now();
    await saveRecord(entry.paths, entry.record);
  }

  async getVMInfo(vmId: string, options?: VmInfoOptions): Promise<BackendVmInfo> {
    const entry = this.entry(vmId);
    return qemuVmInfo(vmId, entry.record, entry.runtime, this.clock, options?.usage ?? true);
  }

  async listVMs(): Promise<BackendVmInfo[]> {
    return Promise.all([...this.entries].map(([id, e]) => this.info(id, e)));
  }

  async consoleTail(vmId: string, tailBytes: number): Promise<Uint8Array> {
    return this.entry(vmId).ring.tail(tailBytes);
  }

  async consolePosition(vmId: string): Promise<{ start: number; end: number }> {
    return this.entry(vmId).ring.position();
  }

  followConsole(vmId: string, signal: AbortSignal, fromOffset?: number): AsyncIterable<ConsoleChunk> {
    return this.entry(vmId).ring.follow(signal, fromOffset);
  }

  /** Writes to the serial chardev socket the agent already holds (QEMU feeds it to the guest's UART). */
  async consoleWrite(vmId: string, data: Uint8Array): Promise<void> {
    const rt = this.entry(vmId).runtime;
    if (!rt) throw new QuantixError("failed_precondition", `VM '${vmId}' is not running: console input reaches only a running or paused guest`);
    await rt.writeConsole(data);
  }

  /** Hot-plugs a disk (qemu-disk-hotplug.ts) and records it in the VM's config and detected formats. */
  async attachDisk(vmId: string, disk: StorageDevice): Promise<void> {
    const entry = this.entry(vmId);
    const rt = this.running(vmId);
    // The file and its backing chain are checked as at boot (host-files.ts); QEMU is told their resolved paths.
    const checked = await checkDiskChain(`disk '${disk.id}'`, disk.path, !disk.readOnly, this.options.imageDirs);
    const { slot, ...source } = await hotPlugDisk(rt.qmp, disk, this.diskNames(entry, disk.id), checked);
    entry.record.config.storage.push(disk);
    entry.record.disks?.push(source);
    // Where it went, so that a restore, a restart or a migration's target puts it there again.
    entry.record.pciSlots?.push({ kind: "disk", id: disk.id, slot });
    await saveRecord(entry.paths, entry.record);
  }

  /** Hot-unplugs a disk and drops it from the VM's config (the next start no longer has it). */
  async detachDisk(vmId: string, diskId: string, timeoutMs: number): Promise<void> {
    const entry = this.entry(vmId);
    await hotUnplugDisk(this.running(vmId).qmp, this.diskNames(entry, diskId), timeoutMs);
    const i = entry.record.config.storage.findIndex((d) => d.id === diskId);
    if (i >= 0) {
      entry.record.config.storage.splice(i, 1);
      entry.record.disks?.splice(i, 1);
    }
    if (entry.record.pciSlots) entry.record.pciSlots = entry.record.pciSlots.filter((p) => !(p.kind === "disk" && p.id === diskId));
    await saveRecord(entry.paths, entry.record);
  }

  /** Grows a disk of the running VM with block_resize (qemu-img cannot: QEMU holds the image's lock). */
  async resizeDisk(vmId: string, diskId: string, sizeBytes: bigint): Promise<bigint> {
    const entry = this.entry(vmId);
    return resizeDiskOnline(this.running(vmId).qmp, this.diskNames(entry, diskId), sizeBytes);
  }

  /** Hot-plugs a NIC (qemu-nic-hotplug.ts) and records it in the VM's config and PCI layout. */
  async attachNic(vmId: string, nic: NetworkInterface): Promise<void> {
    const entry = this.entry(vmId);
    const slot = await hotPlugNic(this.running(vmId).qmp, nic, this.nicNames(entry, nic.id));
    entry.record.config.network.push(nic);
    // Where it went, so that a restore, a restart or a migration's target puts it there again.
    entry.record.pciSlots?.push({ kind: "nic", id: nic.id, slot });
    await saveRecord(entry.paths, entry.record);
  }

  /** Hot-unplugs a NIC and drops it from the VM's config (the next start no longer has it). */
  async detachNic(vmId: string, nicId: string, timeoutMs: number): Promise<void> {
    const entry = this.entry(vmId);
    await hotUnplugNic(this.running(vmId).qmp, this.nicNames(entry, nicId), timeoutMs);
    entry.record.config.network = entry.record.config.network.filter((n) => n.id !== nicId);
    if (entry.record.pciSlots) entry.record.pciSlots = entry.record.pciSlots.filter((p) => !(p.kind === "nic" && p.id === nicId));
    await saveRecord(entry.paths, entry.record);
  }

  private nicNames(entry: Entry, nicId: string) {
    return nicNames(nicId, entry.record.launchedNicIds ?? entry.record.config.network.map((n) => n.id));
  }

  private diskNames(entry: Entry, diskId: string) {
    return diskNodeNames(diskId, entry.record.launchedDiskIds ?? entry.record.config.storage.map((d) => d.id));
  }

  /** Runs a QMP command on a running VM: for diagnostics and tests, not for the agent's logic. */
  async executeQmp<T = unknown>(vmId: string, command: string, args?: Record<string, unknown>): Promise<T> {
    return this.running(vmId).qmp.execute<T>(command, args);
  }

  onEvent(listener: (event: BackendEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const entry of this.entries.values()) {
      entry.runtime?.detach();
      entry.runtime = undefined;
      entry.ring.close();
    }
    this.entries.clear();
    this.listeners.clear();
  }

  /** Ends the VM's QEMU (qemu-stop.ts); its end is then a requested one, not a crash. */
  private async stop(entry: Entry, options: ShutdownOptions): Promise<void> {
    const rt = entry.runtime;
    if (!rt) return;
    entry.stopping = true;
    await stopRuntime(rt, options, this.clock);
  }

  private runtimeOptions(vmId: string, entry: Entry) {
    const console = entry.record.config.console;
    const consoleSocket = (!console || console.enabled) && console?.output !== ConsoleOutput.NULL;
    return { paths: entry.paths, ring: entry.ring, consoleSocket, onEnd: (end: RuntimeEnd) => this.onEnd(vmId, entry, end) };
  }

  /** QEMU ended: asked to (shutdown), the guest powered off (shutdown), or else crashed. */
  private onEnd(vmId: string, entry: Entry, end: RuntimeEnd): void {
    if (this.closed || this.entries.get(vmId) !== entry) return;
    if (entry.suspending) {
      // suspendVM saved the memory and quit QEMU (or restore gave up): the VM is suspended.
      entry.runtime = undefined;
      Object.assign(entry.record, { state: "suspended", crashReason: undefined, startedAtMs: undefined });
      entry.afterEnd = this.persistEnd(entry);
      return;
    }
    const requested = entry.stopping;
    let reason = end.guestShutdown ? "the guest powered off" : end.exit ? `QEMU exited with ${describeExit(end.exit)}` : "QEMU exited (adopted from an earlier agent: exit status unknown)";
    // A KVM that cannot run this guest makes QEMU abort at the first vCPU run (seen on hosts
    // with a paravirtualised /dev/kvm), so say what to change.
    if (this.options.kvm && end.exit?.signal === "SIGABRT") reason += "; KVM may not be usable on this host: set VMCP_QEMU_KVM=false";
    this.markEnded(entry, requested || end.guestShutdown ? undefined : reason);
    entry.afterEnd = this.persistEnd(entry);
    if (requested) return;
    const event: BackendEvent = { vmId, state: entry.record.state, reason };
    for (const l of [...this.listeners]) l(event);
  }

  /** Saves the record and clears the sockets and pid file after QEMU ended. */
  private async persistEnd(entry: Entry): Promise<void> {
    await Promise.all([saveRecord(entry.paths, entry.record).catch(() => {}), clearRuntimeFiles(entry.paths).catch(() => {})]);
  }

  /** Records that QEMU is gone: crashed with `crashReason`, or shut down without one. */
  private markEnded(entry: Entry, crashReason: string | undefined): void {
    entry.runtime = undefined;
    Object.assign(entry.record, { state: crashReason ? "crashed" : "shutdown", crashReason, startedAtMs: undefined });
  }

  private info(vmId: string, entry: Entry): Promise<BackendVmInfo> {
    return qemuVmInfo(vmId, entry.record, entry.runtime, this.clock);
  }

  private addEntry(vmId: string, paths: VmPaths, record: VmRecord): Entry {
    const entry: Entry = { paths, record, ring: new ConsoleRing(this.options.consoleBufferBytes ?? DEFAULT_CONSOLE_BUFFER_BYTES), runtime: undefined, stopping: false, suspending: false, afterEnd: Promise.resolve() };
    this.entries.set(vmId, entry);
    return entry;
  }

  private entry(vmId: string): Entry {
    const entry = this.entries.get(vmId);
    if (!entry) throw notFound("VM", vmId);
    return entry;
  }

  private running(vmId: string): QemuRuntime {
    const rt = this.entry(vmId).runtime;
    if (!rt) throw new QuantixError("failed_precondition", `VM '${vmId}' is not running`);
    return rt;
  }
}
