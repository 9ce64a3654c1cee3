import { PowerState, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { QuantixError, type HypervisorPort, type ShutdownOptions, type VmObservation } from "@quantix/core";
import { TerminalError } from "../runtime/controller.js";

/**
 * A step the VM's node refused or failed (the hypervisor did not start, a QMP command
 * failed): retried with backoff, and meanwhile written to the VM's status (state ERROR, a
 * PowerStateReached=False condition whose reason names the step) so that the user, and
 * the power action waiting for the outcome, read why. An unreachable node is not a
 * step failure (the VM's state is then UNKNOWN), nor a spec the node refuses (terminal).
 */
export class StepFailure extends Error {
  override readonly name = "StepFailure";
  constructor(
    /** The condition's reason, e.g. "BootFailed". */
    readonly reason: string,
    message: string,
    options: { cause: QuantixError },
  ) {
    super(message, options);
  }
}

/** The files, on the VM's node, of the volumes its disks name (volume id to path). */
export type VolumePathResolver = (vm: VirtualMachine) => Promise<ReadonlyMap<string, string>>;

const noVolumes: VolumePathResolver = async () => new Map();

/** What a step did: nothing, a power change, or a reboot the spec asked for. */
export type Step = false | true | "rebooted";

/**
 * A step and, when the node's answer to it said so, what the node observes afterwards:
 * then the caller need not observe again (one round trip less on every start).
 */
export interface StepResult {
  readonly step: Step;
  readonly observed?: VmObservation;
}

/**
 * Takes at most one idempotent step of a VM towards its spec on its node's hypervisor:
 * the desired power state, then a reboot the spec asks for (spec.reboot.sequence newer
 * than status.reboot_sequence). The shutdown is done as spec.shutdown says (StopVM writes
 * its force and timeout there).
 */
export async function stepVm(vm: VirtualMachine, desired: PowerState, d: HypervisorPort, obs: VmObservation, volumePaths: VolumePathResolver = noVolumes): Promise<StepResult> {
  const step = await takeStep(vm, desired, d, obs, volumePaths);
  return typeof step === "object" ? step : { step };
}

async function takeStep(vm: VirtualMachine, desired: PowerState, d: HypervisorPort, obs: VmObservation, volumePaths: VolumePathResolver): Promise<Step | StepResult> {
  const p = obs.power;
  switch (desired) {
    case PowerState.RUNNING:
      if (p === "absent") {
        // Just defined: what NICs the node gave it is not known here, so the caller observes.
        await define(d, vm, volumePaths);
        await attempt("boot", () => d.bootVM(vm.id));
        return true;
      }
      if (p === "created" || p === "shutdown" || p === "suspended") {
        return booted(await attempt("boot", () => d.bootVM(vm.id)), obs);
      }
      if (p === "paused") {
        await attempt("resume", () => d.resumeVM(vm.id));
        return true;
      }
      // A crash is final until StartVM asks again (a newer generation than the crash's).
      if (p === "crashed" && vm.generation > (crashedAt(vm) ?? vm.generation)) {
        return booted(await attempt("boot", () => d.bootVM(vm.id)), obs);
      }
      if (p === "running" && rebootDue(vm)) {
        await attempt("reboot", () => d.rebootVM(vm.id, vm.spec?.reboot?.force ?? false));
        return "rebooted";
      }
      return false;
    case PowerState.PAUSED:
      if (p === "running") {
        await attempt("pause", () => d.pauseVM(vm.id));
        return true;
      }
      return false;
    case PowerState.SUSPENDED:
      if (p === "running" || p === "paused") {
        await attempt("suspend", () => d.suspendVM(vm.id));
        return true;
      }
      return false;
    case PowerState.STOPPED:
    case PowerState.UNSPECIFIED: {
      const how = shutdownOf(vm);
      if (p === "running" || p === "paused" || p === "starting" || p === "crashed" || p === "suspended" || (p === "stopping" && how.force)) {
        await attempt("shut down", () => d.shutdownVM(vm.id, how));
        return true;
      }
      return false;
    }
    default:
      return false;
  }
}

/** How the VM is to be stopped (spec.shutdown; a timeout of 0 means 60 s). */
export function shutdownOf(vm: VirtualMachine): ShutdownOptions {
  const s = vm.spec?.shutdown;
  return { force: s?.force ?? false, timeoutSec: s && s.timeoutSec > 0 ? s.timeoutSec : 60 };
}

/** Whether the spec asks for a reboot the node has not done yet. */
export function rebootDue(vm: VirtualMachine): boolean {
  return (vm.spec?.reboot?.sequence ?? 0n) > (vm.status?.rebootSequence ?? 0n);
}

/** Defines a VM on its node, telling a refused spec (terminal) apart from a passing failure. */
async function define(d: HypervisorPort, vm: VirtualMachine, volumePaths: VolumePathResolver): Promise<void> {
  let paths: ReadonlyMap<string, string>;
  try {
    paths = await volumePaths(vm);
  } catch (err) {
    // A volume's file not reachable yet (its pool being set up again, its node's storage
    // busy) passes: retried, with the reason in the VM's status meanwhile. A volume still
    // being made (NotReadyYet) is waited for by the caller.
    if (err instanceof QuantixError && err.code !== "unavailable") throw new StepFailure("VolumeUnavailable", `the VM's volumes cannot be used on its node yet: ${err.message}`, { cause: err });
    throw err;
  }
  try {
    await d.createVM(vm.id, vm.spec!, paths);
  } catch (err) {
    if (err instanceof QuantixError && (err.code === "failed_precondition" || err.code === "invalid_argument" || err.code === "already_exists")) {
      throw new TerminalError("HypervisorRejected", `node refused the VM: ${err.message}`, { cause: err });
    }
    if (err instanceof QuantixError && err.code !== "unavailable") throw new StepFailure("CreateFailed", `the node could not define the VM: ${err.message}`, { cause: err });
    throw err;
  }
}

/** A boot's step, with the node's answer as the observation (the NICs as observed before: a boot keeps them). */
function booted(answer: VmObservation | void, before: VmObservation): StepResult {
  if (!answer) return { step: true };
  return { step: true, observed: { ...answer, ...(before.nics ? { nics: before.nics } : {}) } };
}

/** Runs one call of a step on the node; a failure other than an unreachable node becomes a {@link StepFailure}. */
async function attempt<T>(step: "boot" | "resume" | "reboot" | "pause" | "suspend" | "shut down", call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (!(err instanceof QuantixError) || err.code === "unavailable") throw err;
    const reason = `${step === "shut down" ? "Shutdown" : step[0]!.toUpperCase() + step.slice(1)}Failed`;
    // An agent hides an unexpected error's words from callers: say where they are.
    const words = err.code === "internal" ? "its agent failed unexpectedly (the agent's log on the node has the details)" : err.message;
    throw new StepFailure(reason, `the node could not ${step} the VM: ${words}`, { cause: err });
  }
}

/** The generation at which the VM was seen crashed (StartVM bumps past it); undefined before it is recorded. */
function crashedAt(vm: VirtualMachine): bigint | undefined {
  return vm.status?.conditions.find((c) => c.type === "Crashed")?.observedGeneration;
}
