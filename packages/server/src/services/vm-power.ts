import { create } from "@bufbuild/protobuf";
import { ConditionStatus } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { RebootRequestSchema, ShutdownPolicySchema, VmStatus_State as State, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { checkPowerAction, desiredPowerStateOf, NODE_KIND, notFound, QuantixError, targetStateOf, VM_KIND, type Capability, type HypervisorConsole, type PowerAction, type ShutdownOptions, type Store } from "@quantix/core";
import { consoleOf, driverOf } from "../controllers/node-access.js";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";
import { requireId } from "./vm-service.js";
import { waitFor } from "./wait.js";

/** How long a power action may wait, from the request's deadline and the server's limit. */
export interface WaitBudget {
  readonly ms: number;
  readonly signal: AbortSignal;
}

/** The capability a power action needs from the VM's node, beyond the state table. */
const NEEDS: Partial<Record<PowerAction, Capability>> = { suspend: "suspend" };

/** States in which waiting for a power action is pointless: the action failed. */
const FAILED = [State.CRASHED, State.ERROR];

/**
 * Power actions: check the state table, write what the user asks for into the spec (the
 * desired power state, StopVM's shutdown options, RebootVM's reboot request: a new spec
 * generation), and return once the node has observed the result or the budget ends. The
 * VM controller, on the leader, carries it out; this replica only writes the store.
 */
export class VmPowerService {
  constructor(
    private readonly store: Store,
    private readonly drivers: NodeDrivers,
  ) {}

  async act(action: Exclude<PowerAction, "delete" | "reboot">, id: string, budget: WaitBudget, stop?: ShutdownOptions): Promise<VirtualMachine> {
    requireId("id", id);
    const desired = desiredPowerStateOf(action)!;
    const target = targetStateOf(action)!;
    const needs = NEEDS[action];
    if (needs) await this.requireCapability(id, action, needs);
    const vm = await this.store.of(VM_KIND).update(
      id,
      (cur) => {
        refuseIfDeleting(cur, action);
        const state = cur.status?.state ?? State.UNKNOWN;
        const decision = checkPowerAction(action, state, id);
        // Start on a CRASHED or failed (ERROR) VM asks again even though RUNNING was already desired.
        const again = decision === "apply" && (state === State.CRASHED || state === State.ERROR);
        const shutdown = stop && action === "stop" ? create(ShutdownPolicySchema, { force: stop.force, timeoutSec: stop.timeoutSec }) : undefined;
        const sameShutdown = !shutdown || (cur.spec?.shutdown?.force === shutdown.force && cur.spec?.shutdown?.timeoutSec === shutdown.timeoutSec);
        if (cur.spec?.desiredPowerState === desired && !again && sameShutdown) return undefined;
        cur.spec!.desiredPowerState = desired;
        if (shutdown) cur.spec!.shutdown = shutdown;
        cur.generation += 1n;
        return cur;
      },
      { actor: "api" },
    );
    const settled = (x: VirtualMachine) => x.status?.state === target || failureOf(x, target) !== undefined;
    if (vm.status?.state === target) return vm;
    return refuseFailure(action, await waitFor(this.store.of(VM_KIND), "VM", id, settled, budget.ms, budget.signal), target);
  }

  /**
   * FAILED_PRECONDITION at once, naming the capability, when the VM's node does not list
   * it in its status (status.hypervisor.capabilities, as its agent registered them), so an
   * action no node can carry out is never written into the spec to be retried forever.
   * Checked after the state table, whose answer (and no-op) comes first.
   */
  private async requireCapability(id: string, action: PowerAction, capability: Capability): Promise<void> {
    const vm = await this.store.of(VM_KIND).get(id);
    if (!vm) throw notFound("VM", id);
    refuseIfDeleting(vm, action);
    if (checkPowerAction(action, vm.status?.state ?? State.UNKNOWN, id) === "noop") return;
    const nodeId = vm.status?.nodeId ?? "";
    const node = nodeId ? await this.store.of(NODE_KIND).get(nodeId) : undefined;
    const hv = node?.status?.hypervisor;
    if (hv?.capabilities.includes(capability)) return;
    const where = node ? `node '${node.hostname}', whose ${hv?.type || "unknown"} hypervisor` : `no node that`;
    throw new QuantixError("failed_precondition", `cannot ${action} VM '${id}': it runs on ${where} lacks the '${capability}' capability`);
  }

  /**
   * The console of a VM's node: NOT_FOUND for an unknown VM, FAILED_PRECONDITION when it
   * has no node or the node's hypervisor lacks "console". A read any replica serves.
   */
  async console(id: string): Promise<{ vm: VirtualMachine; console: HypervisorConsole }> {
    requireId("vm_id", id);
    const vm = await this.store.of(VM_KIND).get(id);
    if (!vm) throw notFound("VM", id);
    return { vm, console: consoleOf(this.drivers, vm) };
  }

  /**
   * RebootVM: checked against the state table and the node's capabilities at once, then
   * asked for in the spec (spec.reboot.sequence + 1); returns once the guest has started
   * again (a newer started_at) or the budget ends.
   */
  async reboot(id: string, force: boolean, budget: WaitBudget): Promise<VirtualMachine> {
    requireId("id", id);
    const vm = await this.store.of(VM_KIND).get(id);
    if (!vm) throw notFound("VM", id);
    refuseIfDeleting(vm, "reboot");
    checkPowerAction("reboot", vm.status?.state ?? State.UNKNOWN, id);
    const driver = driverOf(this.drivers, vm);
    if (!driver.capabilities.has("reboot")) throw new QuantixError("failed_precondition", `VM '${vm.id}' runs on a ${driver.kind} hypervisor, which lacks the 'reboot' capability`);
    const before = vm.status?.startedAt;
    const asked = await this.store.of(VM_KIND).update(
      id,
      (cur) => {
        refuseIfDeleting(cur, "reboot");
        checkPowerAction("reboot", cur.status?.state ?? State.UNKNOWN, id);
        cur.spec!.reboot = create(RebootRequestSchema, { sequence: (cur.spec?.reboot?.sequence ?? 0n) + 1n, force });
        cur.generation += 1n;
        return cur;
      },
      { actor: "api" },
    );
    const sequence = asked.spec!.reboot!.sequence;
    const rebooted = (x: VirtualMachine) =>
      x.status?.state === State.RUNNING && (x.status.rebootSequence ?? 0n) >= sequence && !!x.status.startedAt && (!before || x.status.startedAt.seconds > before.seconds || (x.status.startedAt.seconds === before.seconds && x.status.startedAt.nanos > before.nanos));
    const done = await waitFor(this.store.of(VM_KIND), "VM", id, (x) => rebooted(x) || failureOf(x, State.RUNNING) !== undefined, budget.ms, budget.signal);
    return rebooted(done) ? done : refuseFailure("reboot", done, State.RUNNING);
  }
}

/**
 * Why the VM's node failed its current spec generation, when its status says so: ERROR
 * (a step the node failed, or a spec it refused) or CRASHED, observed at this generation.
 * The reason is the condition that says it (PowerStateReached, SpecAccepted, Crashed).
 * A crash is no failure of a stop (`target` STOPPED): the guest is on its way off.
 */
export function failureOf(vm: VirtualMachine, target: State): { reason: string; message: string } | undefined {
  const s = vm.status;
  if (!s || vm.generation !== s.observedGeneration || !FAILED.includes(s.state)) return undefined;
  if (target === State.STOPPED && s.state === State.CRASHED) return undefined;
  const cond = s.conditions.find((c) => (c.type === "Crashed" && c.status === ConditionStatus.TRUE) || ((c.type === "PowerStateReached" || c.type === "SpecAccepted") && c.status === ConditionStatus.FALSE));
  return { reason: cond ? `${cond.type}: ${cond.reason}` : State[s.state], message: s.errorMessage || cond?.message || `the VM is ${State[s.state]}` };
}

/**
 * The answer of a power action once its outcome is known: the VM when the result holds,
 * else FAILED_PRECONDITION with the node's reason, as soon as it is in the VM's status.
 * A VM still on its way (the deadline came first) is returned as it is.
 */
function refuseFailure(action: PowerAction, vm: VirtualMachine, target: State): VirtualMachine {
  const failure = vm.status?.state === target ? undefined : failureOf(vm, target);
  if (!failure) return vm;
  throw new QuantixError("failed_precondition", `cannot ${action} VM '${vm.id}': ${failure.message} (${failure.reason}); the VM is ${State[vm.status!.state]}, see its status`);
}

/** FAILED_PRECONDITION for any power action on a VM being deleted. */
export function refuseIfDeleting(vm: VirtualMachine, action: string): void {
  if (vm.deletionRequestedAt) throw new QuantixError("failed_precondition", `cannot ${action} VM '${vm.id}': it is being deleted`);
}
