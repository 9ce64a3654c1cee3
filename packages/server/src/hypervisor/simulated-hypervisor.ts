import type { VmSpec } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { QuantixError, type Capability, type Clock, type HypervisorPort, type ObservedPower, type ShutdownOptions, type VmObservation } from "@quantix/core";

/** How long the simulated transitions take, in milliseconds. */
export interface SimulatedTiming {
  readonly bootMs: number;
  readonly shutdownMs: number;
  readonly suspendMs: number;
}

export const DEFAULT_SIM_TIMING: SimulatedTiming = { bootMs: 300, shutdownMs: 200, suspendMs: 200 };

interface SimVm {
  power: ObservedPower;
  spec: VmSpec;
  startedAt?: number;
  timer?: NodeJS.Timeout;
  error?: string;
}

/**
 * An in-process hypervisor that runs no guests. It models the state machine of a real
 * one (transitional states that take time, what each state allows) so that demo nodes
 * and scale tests behave like real ones; nodes using it say `hypervisor: simulated`.
 */
export class SimulatedHypervisor implements HypervisorPort {
  readonly kind = "simulated";
  readonly version = "simulated-1";
  readonly capabilities: ReadonlySet<Capability> = new Set<Capability>(["pause", "reboot", "suspend"]);
  private readonly vms = new Map<string, SimVm>();
  private readonly listeners = new Set<(vmId: string) => void>();

  constructor(
    private readonly clock: Clock,
    private readonly timing: SimulatedTiming = DEFAULT_SIM_TIMING,
  ) {}

  async createVM(vmId: string, spec: VmSpec): Promise<void> {
    if (!this.vms.has(vmId)) this.set(vmId, { power: "created", spec });
  }

  /** Adopts a VM that is already running (demo data: guests that were running before we started). */
  adoptRunning(vmId: string, spec: VmSpec, startedAt: number): void {
    this.vms.set(vmId, { power: "running", spec, startedAt });
  }

  async deleteVM(vmId: string): Promise<void> {
    const vm = this.vms.get(vmId);
    if (!vm) return;
    clearTimeout(vm.timer);
    this.vms.delete(vmId);
    this.emit(vmId);
  }

  async bootVM(vmId: string): Promise<void> {
    const vm = this.must(vmId);
    if (vm.power === "running" || vm.power === "starting") return;
    this.expect(vmId, vm, ["created", "shutdown", "crashed", "suspended"], "boot");
    this.transition(vmId, vm, "starting", "running", this.timing.bootMs, () => (vm.startedAt = this.clock.now()));
  }

  async shutdownVM(vmId: string, options: ShutdownOptions): Promise<void> {
    const vm = this.must(vmId);
    if (vm.power === "shutdown" || vm.power === "created") return;
    if (options.force || vm.power === "crashed" || vm.power === "suspended") {
      clearTimeout(vm.timer);
      vm.power = "shutdown";
      this.emit(vmId);
      return;
    }
    if (vm.power === "stopping") return;
    this.expect(vmId, vm, ["running", "paused", "starting"], "shut down");
    this.transition(vmId, vm, "stopping", "shutdown", this.timing.shutdownMs);
  }

  async pauseVM(vmId: string): Promise<void> {
    const vm = this.must(vmId);
    if (vm.power === "paused") return;
    this.expect(vmId, vm, ["running"], "pause");
    vm.power = "paused";
    this.emit(vmId);
  }

  async resumeVM(vmId: string): Promise<void> {
    const vm = this.must(vmId);
    if (vm.power === "running") return;
    this.expect(vmId, vm, ["paused"], "resume");
    vm.power = "running";
    this.emit(vmId);
  }

  async rebootVM(vmId: string, force: boolean): Promise<void> {
    const vm = this.must(vmId);
    this.expect(vmId, vm, ["running"], "reboot");
    this.transition(vmId, vm, "starting", "running", force ? this.timing.bootMs / 2 : this.timing.bootMs, () => (vm.startedAt = this.clock.now()));
  }

  async suspendVM(vmId: string): Promise<void> {
    const vm = this.must(vmId);
    if (vm.power === "suspended" || vm.power === "suspending") return;
    this.expect(vmId, vm, ["running", "paused"], "suspend");
    this.transition(vmId, vm, "suspending", "suspended", this.timing.suspendMs);
  }

  async observe(vmId: string): Promise<VmObservation> {
    const vm = this.vms.get(vmId);
    if (!vm) return { vmId, power: "absent" };
    return this.observation(vmId, vm);
  }

  async list(): Promise<VmObservation[]> {
    return [...this.vms].map(([id, vm]) => this.observation(id, vm));
  }

  async ping(): Promise<void> {}

  onChange(listener: (vmId: string) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Simulates the guest's process dying (for HA and crash handling tests). */
  crash(vmId: string, reason: string): void {
    const vm = this.must(vmId);
    clearTimeout(vm.timer);
    vm.power = "crashed";
    vm.error = reason;
    this.emit(vmId);
  }

  /** Stops all timers. */
  close(): void {
    for (const vm of this.vms.values()) clearTimeout(vm.timer);
  }

  private observation(vmId: string, vm: SimVm): VmObservation {
    const running = vm.power === "running" || vm.power === "paused";
    return {
      vmId,
      power: vm.power,
      ...(vm.startedAt !== undefined && running ? { startedAt: vm.startedAt } : {}),
      ...(vm.error !== undefined && vm.power === "crashed" ? { error: vm.error } : {}),
    };
  }

  private transition(vmId: string, vm: SimVm, during: ObservedPower, after: ObservedPower, ms: number, onDone?: () => void): void {
    clearTimeout(vm.timer);
    vm.power = during;
    delete vm.error;
    this.emit(vmId);
    vm.timer = setTimeout(() => {
      vm.power = after;
      onDone?.();
      this.emit(vmId);
    }, ms);
    vm.timer.unref();
  }

  private set(vmId: string, vm: SimVm): void {
    this.vms.set(vmId, vm);
    this.emit(vmId);
  }

  private must(vmId: string): SimVm {
    const vm = this.vms.get(vmId);
    if (!vm) throw new QuantixError("not_found", `VM '${vmId}' is not defined on this hypervisor`);
    return vm;
  }

  private expect(vmId: string, vm: SimVm, allowed: ObservedPower[], what: string): void {
    if (!allowed.includes(vm.power)) {
      throw new QuantixError("failed_precondition", `cannot ${what} VM '${vmId}': the hypervisor reports it ${vm.power}`);
    }
  }

  private emit(vmId: string): void {
    for (const l of this.listeners) l(vmId);
  }
}
