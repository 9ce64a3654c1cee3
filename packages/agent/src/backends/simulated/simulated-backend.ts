import type { VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError, notFound, systemClock, type Clock } from "@quantix/core";
import type { Backend, ConsoleChunk, BackendCapability, BackendEvent, BackendVmInfo, BackendVmState, ShutdownOptions } from "../../backend.js";
import { ConsoleRing } from "../../console-ring.js";

/** Timing and clock of a simulated hypervisor. */
export interface SimulatedBackendOptions {
  /** How long a boot (and a reboot) takes. */
  readonly bootMs?: number;
  /** How long a graceful shutdown takes; a forced one is immediate. */
  readonly shutdownMs?: number;
  /** Interval of the synthetic console counter lines; 0 writes only the boot lines. */
  readonly consoleIntervalMs?: number;
  /** Console bytes kept per VM; default 1 MiB (small values let tests overrun the buffer). */
  readonly consoleBufferBytes?: number;
  readonly clock?: Clock;
  /**
   * What the simulator declares, from what it can emulate (the default: all of it); a
   * narrower set models a hypervisor that lacks the rest, and the agent refuses what needs it.
   */
  readonly capabilities?: Iterable<BackendCapability>;
  /**
   * VMs a previous agent process left running on this host: recover() re-adopts them, as a
   * real agent re-adopts the guests it finds (the demo's hosts start with the seed's guests).
   */
  readonly running?: readonly AdoptedVm[];
}

/** A running VM the simulator is given to re-adopt, with when its guest started. */
export interface AdoptedVm {
  readonly vmId: string;
  readonly config: VmConfig;
  readonly startedAtMs: number;
}

interface SimVm {
  config: VmConfig;
  state: BackendVmState;
  startedAtMs: number | undefined;
  crashReason: string | undefined;
  ring: ConsoleRing;
  ticks: number;
  ticker: NodeJS.Timeout | undefined;
}

/** Everything the simulator can honestly emulate: it has no real devices, so every device model is accepted. */
const CAPABILITIES: ReadonlySet<BackendCapability> = new Set<BackendCapability>([
  "pause", "reboot", "graceful-shutdown", "console", "cpu-hotplug", "memory-hotplug",
  "virtio-scsi", "nvme", "sata", "qcow2", "firmware-boot", "e1000", "rtl8139", "metrics",
  "console-input",
]);

const encoder = new TextEncoder();

/**
 * A hypervisor without processes, for demo nodes and scale tests (many agents in one
 * process). VMs live in memory; boot and shutdown take the configured time; the console
 * gets synthetic lines. No pid is reported, since none exists. VMs do not survive the
 * agent process, so the simulator does not claim "readopt"; recover() finds only the VMs
 * it was given as running.
 */
export class SimulatedBackend implements Backend {
  readonly type = "simulated";
  readonly capabilities: ReadonlySet<BackendCapability>;
  private readonly vms = new Map<string, SimVm>();
  private readonly listeners = new Set<(e: BackendEvent) => void>();
  private readonly pending = new Map<NodeJS.Timeout, () => void>();
  private unavailable: string | undefined;
  private readonly bootMs: number;
  private readonly shutdownMs: number;
  private readonly consoleIntervalMs: number;
  private readonly consoleBufferBytes: number | undefined;
  private readonly clock: Clock;
  private readonly adopt: readonly AdoptedVm[];

  constructor(options: SimulatedBackendOptions = {}) {
    this.capabilities = new Set(options.capabilities ?? CAPABILITIES);
    const beyond = [...this.capabilities].filter((c) => !CAPABILITIES.has(c));
    if (beyond.length > 0) throw new QuantixError("invalid_argument", `the simulator cannot emulate ${beyond.join(", ")}`);
    this.adopt = options.running ?? [];
    this.bootMs = options.bootMs ?? 200;
    this.shutdownMs = options.shutdownMs ?? Math.round(this.bootMs / 2);
    this.consoleIntervalMs = options.consoleIntervalMs ?? 1000;
    this.consoleBufferBytes = options.consoleBufferBytes;
    this.clock = options.clock ?? systemClock;
  }

  async version(): Promise<string> {
    return "quantix-simulator 0.1.0";
  }

  async recover(): Promise<string[]> {
    for (const a of this.adopt) {
      const vm = this.define(a.vmId, a.config);
      this.start(vm, `simulated console: re-adopted ${a.vmId}`);
      vm.startedAtMs = a.startedAtMs;
    }
    return this.adopt.map((a) => a.vmId);
  }

  async createVM(vmId: string, config: VmConfig): Promise<void> {
    if (this.vms.has(vmId)) throw new QuantixError("already_exists", `VM '${vmId}' already exists`);
    this.define(vmId, config);
  }

  async deleteVM(vmId: string): Promise<void> {
    const vm = this.vm(vmId);
    this.stopTicker(vm);
    vm.ring.close();
    this.vms.delete(vmId);
  }

  async bootVM(vmId: string): Promise<void> {
    const vm = this.vm(vmId);
    await this.delay(this.bootMs);
    this.start(vm, `simulated console: booted ${vmId}`);
  }

  async shutdownVM(vmId: string, options: ShutdownOptions): Promise<void> {
    const vm = this.vm(vmId);
    if (!options.force) await this.delay(Math.min(this.shutdownMs, options.timeoutSeconds * 1000), options.signal);
    this.stop(vm, "shutdown", "simulated console: powered off");
  }

  async pauseVM(vmId: string): Promise<void> {
    this.vm(vmId).state = "paused";
  }

  async resumeVM(vmId: string): Promise<void> {
    this.vm(vmId).state = "running";
  }

  async rebootVM(vmId: string, force: boolean): Promise<void> {
    const vm = this.vm(vmId);
    this.write(vm, force ? "simulated console: reset" : "simulated console: rebooting");
    await this.delay(this.bootMs);
    this.start(vm, `simulated console: booted ${vmId}`);
  }

  async getVMInfo(vmId: string): Promise<BackendVmInfo> {
    return this.info(vmId, this.vm(vmId));
  }

  async listVMs(): Promise<BackendVmInfo[]> {
    return [...this.vms].map(([id, vm]) => this.info(id, vm));
  }

  async ping(): Promise<void> {
    if (this.unavailable !== undefined) throw new QuantixError("unavailable", this.unavailable);
  }

  async consoleTail(vmId: string, tailBytes: number): Promise<Uint8Array> {
    return this.vm(vmId).ring.tail(tailBytes);
  }

  async consolePosition(vmId: string): Promise<{ start: number; end: number }> {
    const ring = this.vm(vmId).ring;
    return { start: ring.startOffset, end: ring.endOffset };
  }

  followConsole(vmId: string, signal: AbortSignal, fromOffset?: number): AsyncIterable<ConsoleChunk> {
    return this.vm(vmId).ring.follow(signal, fromOffset);
  }

  /**
   * The simulated guest has no shell: it echoes its console input, byte for byte, into its
   * console output (as a terminal in cooked mode echoes what is typed), so that fast tests
   * see input arrive without a real guest.
   */
  async consoleWrite(vmId: string, data: Uint8Array): Promise<void> {
    const vm = this.vm(vmId);
    if (vm.state !== "running" && vm.state !== "paused") throw new QuantixError("failed_precondition", `VM '${vmId}' is ${vm.state.toUpperCase()}: console input reaches only a running or paused guest`);
    vm.ring.append(data.slice());
  }

  onEvent(listener: (event: BackendEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    // Calls still waiting finish now rather than hang: the process is going away.
    for (const [t, resolve] of this.pending) {
      clearTimeout(t);
      resolve();
    }
    this.pending.clear();
    for (const vm of this.vms.values()) this.stopTicker(vm);
  }

  /** Test hook: the VM's "process" dies as a real one would, and watchers hear of it. */
  simulateCrash(vmId: string, reason = "simulated crash"): void {
    const vm = this.vm(vmId);
    this.stop(vm, "crashed", `simulated console: crashed (${reason})`);
    vm.crashReason = reason;
    this.emit({ vmId, state: "crashed", reason });
  }

  /** Test hook: the guest powers itself off. */
  simulateGuestPowerOff(vmId: string): void {
    this.stop(this.vm(vmId), "shutdown", "simulated console: guest powered off");
    this.emit({ vmId, state: "shutdown", reason: "guest powered off" });
  }

  /** Test hook: ping() fails with this reason until called with undefined. */
  setUnavailable(reason: string | undefined): void {
    this.unavailable = reason;
  }

  private define(vmId: string, config: VmConfig): SimVm {
    const vm: SimVm = { config, state: "created", startedAtMs: undefined, crashReason: undefined, ring: new ConsoleRing(this.consoleBufferBytes), ticks: 0, ticker: undefined };
    this.vms.set(vmId, vm);
    return vm;
  }

  private vm(vmId: string): SimVm {
    const vm = this.vms.get(vmId);
    if (!vm) throw notFound("VM", vmId);
    return vm;
  }

  private info(vmId: string, vm: SimVm): BackendVmInfo {
    const on = vm.state === "running" || vm.state === "paused";
    const uptime = on && vm.startedAtMs !== undefined ? BigInt(Math.max(0, Math.floor((this.clock.now() - vm.startedAtMs) / 1000))) : 0n;
    return {
      vmId,
      config: vm.config,
      state: vm.state,
      startedAtMs: on ? vm.startedAtMs : undefined,
      crashReason: vm.state === "crashed" ? vm.crashReason : undefined,
      metrics: { cpuUsagePercent: vm.state === "running" ? 1 : 0, memoryUsageBytes: on ? vm.config.memory?.sizeBytes ?? 0n : 0n, uptimeSeconds: uptime },
    };
  }

  private start(vm: SimVm, line: string): void {
    vm.state = "running";
    vm.crashReason = undefined;
    vm.startedAtMs = this.clock.now();
    this.write(vm, line);
    this.stopTicker(vm);
    if (this.consoleIntervalMs > 0) {
      vm.ticker = setInterval(() => this.write(vm, `simulated console: tick ${++vm.ticks}`), this.consoleIntervalMs);
      vm.ticker.unref();
    }
  }

  private stop(vm: SimVm, state: BackendVmState, line: string): void {
    this.stopTicker(vm);
    vm.state = state;
    vm.startedAtMs = undefined;
    this.write(vm, line);
  }

  private stopTicker(vm: SimVm): void {
    if (vm.ticker) clearInterval(vm.ticker);
    vm.ticker = undefined;
  }

  private write(vm: SimVm, line: string): void {
    vm.ring.append(encoder.encode(`${line}\r\n`));
  }

  private emit(event: BackendEvent): void {
    for (const l of this.listeners) l(event);
  }

  /** Waits without holding the process open after close(); ends early when `signal` aborts. */
  private delay(ms: number, signal?: AbortSignal): Promise<void> {
    if (ms <= 0 || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(t);
        this.pending.delete(t);
        signal?.removeEventListener("abort", done);
        resolve();
      };
      const t = setTimeout(done, ms);
      this.pending.set(t, done);
      signal?.addEventListener("abort", done, { once: true });
    });
  }
}
