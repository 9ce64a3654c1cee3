import { execFile } from "node:child_process";
import { rm } from "node:fs/promises";
import { promisify } from "node:util";
import type { VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError, notFound, systemClock, type Clock } from "@quantix/core";
import type { Backend, ConsoleChunk, BackendEvent, BackendVmInfo, BackendVmState, ShutdownOptions } from "../../backend.js";
import { ConsoleRing } from "../../console-ring.js";
import { ConsoleFileTail } from "./console-file-tail.js";
import { UnixHttpClient } from "./unix-http-client.js";
import { listVmIds, readRuntime, readVmConfig, removeVmDir, vmPaths, writeRuntime, writeVmDir, type VmPaths } from "./vm-dir.js";
import { openHostFiles, type HostFile, type HostFiles } from "../../host-files.js";
import { qcow2At } from "./config-checks.js";
import type { VmmDriver, VmmFiles } from "./vmm-driver.js";
import { adoptVmm, isVmmFor, residentBytes, signalVmm, spawnVmm, type VmmExit, type VmmProcess } from "./vmm-process.js";
import { isProcessAlive } from "../../process-state.js";

/** Options shared by the Firecracker and Cloud Hypervisor backends. */
export interface RestVmmBackendOptions {
  /** The VMM binary (absolute path, or a name found on PATH). */
  readonly binary: string;
  /** Per-VM directories go to `<stateDir>/vms/<vmId>/` (pid file, console, config, and the socket unless socketPrefix is set). */
  readonly stateDir: string;
  /**
   * When set, each VM's API socket is `<socketPrefix>-<vmId>.sock` (from VMCP_CH_ENDPOINT /
   * VMCP_FC_ENDPOINT) rather than inside its state directory: a short socket directory
   * keeps within the 107-byte socket path limit whatever the state directory's length.
   */
  readonly socketPrefix?: string;
  /** How long a VMM may take to open its API socket. Default 10 s. */
  readonly startTimeoutMs?: number;
  /** Deadline of one API call. Default 5 s. */
  readonly apiTimeoutMs?: number;
  readonly clock?: Clock;
  /**
   * The directories a VM's kernel, initrd and disks must lie in (the agent's image and
   * shared directories), checked again on the descriptors the VMM is given at each boot
   * (host-files.ts). Undefined: any directory (unit tests).
   */
  readonly imageDirs?: readonly string[];
  /** Test seam: runs after a VM's host files were opened and checked, before the VMM is spawned with them. */
  readonly beforeSpawn?: (vmId: string) => Promise<void>;
}

interface VmRecord {
  readonly paths: VmPaths;
  readonly config: VmConfig;
  readonly ring: ConsoleRing;
  state: BackendVmState;
  process: VmmProcess | undefined;
  startedAtMs: number | undefined;
  crashReason: string | undefined;
  /** Set while the agent itself stops the VMM, so its exit is not reported as a crash. */
  stopping: boolean;
  unwatch: (() => void) | undefined;
  tail: ConsoleFileTail | undefined;
}

const run = promisify(execFile);

/** A backend running one REST-API VMM process per VM; what differs per VMM is in the {@link VmmDriver}. */
export class RestVmmBackend implements Backend {
  readonly type: string;
  readonly capabilities;
  private readonly vms = new Map<string, VmRecord>();
  private readonly listeners = new Set<(e: BackendEvent) => void>();
  private readonly clock: Clock;

  constructor(private readonly driver: VmmDriver, private readonly options: RestVmmBackendOptions) {
    this.type = driver.type;
    this.capabilities = driver.capabilities;
    this.clock = options.clock ?? systemClock;
  }

  async version(): Promise<string> {
    try {
      const { stdout } = await run(this.options.binary, ["--version"], { timeout: 5000 });
      return this.driver.parseVersion(stdout);
    } catch (err) {
      throw new QuantixError("unavailable", `${this.type} binary did not report its version: ${(err as Error).message}`, [], { cause: err });
    }
  }

  async ping(): Promise<void> {
    await this.version();
  }

  async recover(): Promise<string[]> {
    const ids = await listVmIds(this.options.stateDir);
    for (const vmId of ids) {
      const paths = vmPaths(this.options.stateDir, vmId, this.options.socketPrefix);
      const rec = this.newRecord(paths, await readVmConfig(paths));
      const saved = await readRuntime(paths);
      Object.assign(rec, { state: saved.state, startedAtMs: saved.startedAtMs, crashReason: saved.crashReason });
      this.vms.set(vmId, rec);
      if (saved.state !== "running" && saved.state !== "paused") continue;
      if (saved.pid !== undefined && isProcessAlive(saved.pid) && isVmmFor(saved.pid, paths.apiSocket)) {
        rec.process = adoptVmm(saved.pid);
        rec.state = (await this.driver.observe(this.api(rec)).catch(() => "running" as const)) === "paused" ? "paused" : "running";
        this.startWatching(vmId, rec);
      } else {
        await this.setState(rec, "crashed", "the VMM process exited while the agent was not running");
      }
    }
    return ids;
  }

  async createVM(vmId: string, config: VmConfig): Promise<void> {
    const paths = vmPaths(this.options.stateDir, vmId, this.options.socketPrefix);
    this.driver.checkConfig(config);
    if (this.vms.has(vmId)) throw new QuantixError("already_exists", `VM '${vmId}' already exists`);
    await writeVmDir(paths, config);
    this.vms.set(vmId, this.newRecord(paths, config));
  }

  async deleteVM(vmId: string): Promise<void> {
    const rec = this.get(vmId);
    if (rec.process) await this.stopProcess(rec, 0);
    await this.detach(rec);
    rec.ring.close();
    await removeVmDir(rec.paths);
    this.vms.delete(vmId);
  }

  async bootVM(vmId: string): Promise<void> {
    const rec = this.get(vmId);
    await this.detach(rec);
    await rm(rec.paths.apiSocket, { force: true });
    await rm(rec.paths.consoleFile, { force: true });
    // A fresh process per boot: Firecracker cannot boot twice, and one rule for both keeps recovery simple.
    // The VMM gets the files opened and checked here, never their names (host-files.ts).
    const files = await openHostFiles(rec.config, this.options.imageDirs);
    try {
      // These VMMs would open a backing file by the name in the image: linked clones run on QEMU only.
      const layered = files.backing.findIndex((chain) => chain.length > 0);
      if (layered >= 0) throw new QuantixError("failed_precondition", `storage[${layered}].path ${files.disks[layered]!.path} is a linked clone (a qcow2 image over a backing volume), which the ${this.type} backend does not open; use a full copy or a QEMU node`);
      await this.options.beforeSpawn?.(vmId);
      const proc = spawnVmm(this.options.binary, this.driver.args(vmId, rec.paths), rec.paths.vmmLog, undefined, files.all.map((f) => f.fd));
      rec.process = proc;
      rec.stopping = false;
      try {
        const api = this.api(rec);
        await this.waitForApi(api, proc.pid);
        rec.tail = new ConsoleFileTail(rec.paths.consoleFile, rec.ring);
        await this.driver.boot(api, rec.config, rec.paths, vmmFiles(files));
      } catch (err) {
        await this.stopProcess(rec, 0);
        await this.detach(rec);
        throw err;
      }
    } finally {
      // The VMM holds its own copies; the agent's are closed whether or not it booted.
      files.close();
    }
    rec.startedAtMs = this.clock.now();
    await this.setState(rec, "running", undefined);
    this.startWatching(vmId, rec);
  }

  async shutdownVM(vmId: string, options: ShutdownOptions): Promise<void> {
    const rec = this.get(vmId);
    const graceMs = options.force ? 0 : Math.max(1, options.timeoutSeconds) * 1000;
    await this.stopProcess(rec, graceMs, options.signal);
    await this.detach(rec);
    rec.startedAtMs = undefined;
    await this.setState(rec, "shutdown", undefined);
  }

  async pauseVM(vmId: string): Promise<void> {
    const rec = this.get(vmId);
    await this.driver.pause(this.api(rec));
    await this.setState(rec, "paused", undefined);
  }

  async resumeVM(vmId: string): Promise<void> {
    const rec = this.get(vmId);
    await this.driver.resume(this.api(rec));
    await this.setState(rec, "running", undefined);
  }

  async rebootVM(vmId: string, force: boolean): Promise<void> {
    if (!this.capabilities.has("reboot")) throw new QuantixError("failed_precondition", `the ${this.type} backend lacks the capability "reboot"`);
    const rec = this.get(vmId);
    await this.driver.reboot(this.api(rec), force);
    rec.startedAtMs = this.clock.now();
    await this.setState(rec, "running", undefined);
  }

  async getVMInfo(vmId: string): Promise<BackendVmInfo> {
    return this.info(vmId, this.get(vmId));
  }

  async listVMs(): Promise<BackendVmInfo[]> {
    return [...this.vms].map(([id, rec]) => this.info(id, rec));
  }

  async consoleTail(vmId: string, tailBytes: number): Promise<Uint8Array> {
    const rec = this.get(vmId);
    await rec.tail?.poll();
    return rec.ring.tail(tailBytes);
  }

  followConsole(vmId: string, signal: AbortSignal, fromOffset?: number): AsyncIterable<ConsoleChunk> {
    return this.get(vmId).ring.follow(signal, fromOffset);
  }

  onEvent(listener: (event: BackendEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    for (const rec of this.vms.values()) await this.detach(rec);
    this.vms.clear();
    this.listeners.clear();
  }

  private newRecord(paths: VmPaths, config: VmConfig): VmRecord {
    return { paths, config, ring: new ConsoleRing(), state: "created", process: undefined, startedAtMs: undefined, crashReason: undefined, stopping: false, unwatch: undefined, tail: undefined };
  }

  private get(vmId: string): VmRecord {
    const rec = this.vms.get(vmId);
    if (!rec) throw notFound("VM", vmId);
    return rec;
  }

  private api(rec: VmRecord): UnixHttpClient {
    return new UnixHttpClient(rec.paths.apiSocket, this.options.apiTimeoutMs ?? 5000);
  }

  private info(vmId: string, rec: VmRecord): BackendVmInfo {
    const live = rec.state === "running" || rec.state === "paused";
    const pid = live ? rec.process?.pid : undefined;
    const uptimeMs = live && rec.startedAtMs !== undefined ? Math.max(0, this.clock.now() - rec.startedAtMs) : 0;
    return {
      vmId,
      config: rec.config,
      state: rec.state,
      pid,
      startedAtMs: live ? rec.startedAtMs : undefined,
      crashReason: rec.state === "crashed" ? rec.crashReason : undefined,
      metrics: { cpuUsagePercent: 0, memoryUsageBytes: pid ? residentBytes(pid) : 0n, uptimeSeconds: BigInt(Math.floor(uptimeMs / 1000)) },
    };
  }

  private async setState(rec: VmRecord, state: BackendVmState, crashReason: string | undefined): Promise<void> {
    rec.state = state;
    rec.crashReason = crashReason;
    const live = state === "running" || state === "paused";
    await writeRuntime(rec.paths, { state, pid: live ? rec.process?.pid : undefined, startedAtMs: live ? rec.startedAtMs : undefined, crashReason });
  }

  private async waitForApi(api: UnixHttpClient, pid: number): Promise<void> {
    const deadline = Date.now() + (this.options.startTimeoutMs ?? 10_000);
    for (;;) {
      if (!isProcessAlive(pid)) throw new QuantixError("unavailable", `${this.type} exited before opening its API socket (see vmm.log in the VM's state directory)`);
      try {
        await this.driver.ping(api);
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new QuantixError("unavailable", `${this.type} did not open its API socket in time`, [], { cause: err });
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  /**
   * Ends the VMM: the guest gets `graceMs` to power off (cut short when `signal` aborts:
   * a forced stop preempts), then the API stop, then SIGKILL.
   */
  private async stopProcess(rec: VmRecord, graceMs: number, signal?: AbortSignal): Promise<void> {
    const proc = rec.process;
    if (!proc) return;
    rec.stopping = true;
    const api = this.api(rec);
    if (graceMs > 0 && !signal?.aborted && isProcessAlive(proc.pid)) {
      const asked = await (async () => {
        if (rec.state === "paused") await this.driver.resume(api);
        await this.driver.requestPowerOff(api);
      })().then(() => true, () => false);
      if (asked) await waitGone(proc.pid, graceMs, signal);
    }
    if (isProcessAlive(proc.pid)) {
      if (await this.driver.stopNow(api).catch(() => false)) await waitGone(proc.pid, 2000);
    }
    if (isProcessAlive(proc.pid)) {
      signalVmm(proc.pid, "SIGKILL");
      await waitGone(proc.pid, 5000);
    }
    rec.process = undefined;
  }

  private startWatching(vmId: string, rec: VmRecord): void {
    const proc = rec.process;
    if (!proc) return;
    rec.tail ??= new ConsoleFileTail(rec.paths.consoleFile, rec.ring);
    rec.unwatch = proc.watch((exit) => void this.exited(vmId, rec, proc, exit));
  }

  private async exited(vmId: string, rec: VmRecord, proc: VmmProcess, exit: VmmExit): Promise<void> {
    if (rec.stopping || rec.process !== proc || this.vms.get(vmId) !== rec) return;
    rec.process = undefined;
    rec.startedAtMs = undefined;
    await rec.tail?.stop();
    rec.tail = undefined;
    // Both VMMs exit with 0 when the guest powers off by itself; anything else is a crash.
    const state = exit.code === 0 ? "shutdown" : "crashed";
    const reason = exit.code === 0 ? "the guest powered off" : describeExit(this.type, exit);
    await this.setState(rec, state, state === "crashed" ? reason : undefined).catch(() => undefined);
    for (const l of this.listeners) l({ vmId, state, reason });
  }

  /** Stops watching the process and tailing its console, leaving the process alone. */
  private async detach(rec: VmRecord): Promise<void> {
    rec.unwatch?.();
    rec.unwatch = undefined;
    await rec.tail?.stop();
    rec.tail = undefined;
  }
}

function describeExit(type: string, exit: VmmExit): string {
  if (exit.signal) return `${type} exited with signal ${exit.signal}`;
  if (exit.code !== undefined) return `${type} exited with code ${exit.code}`;
  return `the ${type} process is gone`;
}

async function waitGone(pid: number, timeoutMs: number, signal?: AbortSignal): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (isProcessAlive(pid) && Date.now() < deadline && !signal?.aborted) await new Promise((r) => setTimeout(r, 25));
}

/** The VMM's names for its inherited descriptors: fds 3, 4, ... are `files.all` in order. */
function vmmFiles(files: HostFiles): VmmFiles {
  const name = (f: HostFile | undefined) => (f ? `/proc/self/fd/${3 + files.all.indexOf(f)}` : undefined);
  return { kernel: name(files.kernel), initrd: name(files.initrd), disks: files.disks.map((f) => ({ path: name(f)!, qcow2: qcow2At(f.fd) })) };
}
