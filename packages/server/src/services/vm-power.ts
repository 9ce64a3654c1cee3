import { VmStatus_State as State, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { checkPowerAction, notFound, desiredPowerStateOf, targetStateOf, type HypervisorConsole, type PowerAction, type ShutdownOptions, type Store, VM_KIND } from "@quantix/core";
import { requireId } from "./vm-service.js";
import { waitFor } from "./wait.js";

/** What the power service needs from the reconciler, which knows each VM's node. */
export interface PowerDriver {
  enqueue(vmId: string): void;
  hintStop(vmId: string, options: ShutdownOptions): void;
  reboot(vm: VirtualMachine, force: boolean): Promise<void>;
  consoleOf(vm: VirtualMachine): HypervisorConsole;
}

/** How long a power action may wait, from the request's deadline and the server's limit. */
export interface WaitBudget {
  readonly ms: number;
  readonly signal: AbortSignal;
}

/** States in which waiting for a power action is pointless: the action failed. */
const FAILED = [State.CRASHED, State.ERROR];

/**
 * Power actions: check the state table, set the desired power state (a new spec
 * generation), and return once the node has observed the result or the budget ends.
 */
export class VmPowerService {
  constructor(
    private readonly store: Store,
    private readonly driver: PowerDriver,
  ) {}

  async act(action: Exclude<PowerAction, "delete" | "reboot">, id: string, budget: WaitBudget, stop?: ShutdownOptions): Promise<VirtualMachine> {
    requireId("id", id);
    const desired = desiredPowerStateOf(action)!;
    const target = targetStateOf(action)!;
    const vm = await this.store.of(VM_KIND).update(id, (cur) => {
      const state = cur.status?.state ?? State.UNKNOWN;
      const decision = checkPowerAction(action, state, id);
      // Start on a CRASHED VM asks again even though RUNNING was already desired.
      const again = decision === "apply" && state === State.CRASHED;
      if (cur.spec?.desiredPowerState === desired && !again) return undefined;
      cur.spec!.desiredPowerState = desired;
      cur.generation += 1n;
      return cur;
    });
    if (stop && action === "stop") this.driver.hintStop(id, stop);
    this.driver.enqueue(id);
    const settled = (x: VirtualMachine) => x.status?.state === target || (x.generation === x.status?.observedGeneration && FAILED.includes(x.status.state));
    if (vm.status?.state === target) return vm;
    return waitFor(this.store.of(VM_KIND), "VM", id, settled, budget.ms, budget.signal);
  }

  /**
   * The console of a VM's node: NOT_FOUND for an unknown VM, FAILED_PRECONDITION when it
   * has no node or the node's hypervisor lacks "console". Here beside reboot because
   * both go straight to the VM's node rather than through the desired state.
   */
  async console(id: string): Promise<{ vm: VirtualMachine; console: HypervisorConsole }> {
    requireId("vm_id", id);
    const vm = await this.store.of(VM_KIND).get(id);
    if (!vm) throw notFound("VM", id);
    return { vm, console: this.driver.consoleOf(vm) };
  }

  async reboot(id: string, force: boolean, budget: WaitBudget): Promise<VirtualMachine> {
    requireId("id", id);
    const vm = await this.store.of(VM_KIND).get(id);
    if (!vm) throw notFound("VM", id);
    checkPowerAction("reboot", vm.status?.state ?? State.UNKNOWN, id);
    const before = vm.status?.startedAt;
    await this.driver.reboot(vm, force);
    const rebooted = (x: VirtualMachine) =>
      x.status?.state === State.RUNNING && !!x.status.startedAt && (!before || x.status.startedAt.seconds > before.seconds || (x.status.startedAt.seconds === before.seconds && x.status.startedAt.nanos > before.nanos));
    return waitFor(this.store.of(VM_KIND), "VM", id, rebooted, budget.ms, budget.signal);
  }
}
