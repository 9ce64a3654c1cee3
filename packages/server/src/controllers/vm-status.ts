import { create, equals } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { PowerState, VmStatusSchema, VmStatus_State as State, type VirtualMachine, type VmStatus } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { copyMessage, type ObservedPower } from "@quantix/core";

/** The power state a VM's spec asks for (unset means stopped). */
export function desiredOf(vm: VirtualMachine): PowerState {
  const d = vm.spec?.desiredPowerState ?? PowerState.UNSPECIFIED;
  return d === PowerState.UNSPECIFIED ? PowerState.STOPPED : d;
}

/** The API state for what the hypervisor observes, given what is desired. */
export function stateOf(power: ObservedPower, desired: PowerState): State {
  switch (power) {
    case "absent":
      return desired === PowerState.STOPPED ? State.STOPPED : State.PROVISIONING;
    case "created":
    case "shutdown":
      return desired === PowerState.STOPPED ? State.STOPPED : desired === PowerState.RUNNING ? State.STARTING : State.STOPPED;
    case "starting":
      return State.STARTING;
    case "running":
      return desired === PowerState.STOPPED || desired === PowerState.SUSPENDED ? State.STOPPING : State.RUNNING;
    case "paused":
      return State.PAUSED;
    case "stopping":
    case "suspending":
      return State.STOPPING;
    case "suspended":
      return State.SUSPENDED;
    case "crashed":
      return State.CRASHED;
    default: {
      const never: never = power;
      throw new Error(`unknown power ${String(never)}`);
    }
  }
}

/**
 * Applies `edit` to a copy of the VM's status: the VM with the new status and `updated_at`, or
 * undefined when the edit changed nothing (so the caller writes nothing).
 */
export function withEditedStatus(vm: VirtualMachine, edit: (status: VmStatus) => void, nowMs: number): VirtualMachine | undefined {
  return withStatus(vm, editedStatus(vm, edit), nowMs);
}

/** The VM with `status` (an edited copy, editedStatus's) and `updated_at`; undefined when there is none (nothing changed). */
export function withStatus(vm: VirtualMachine, status: VmStatus | undefined, nowMs: number): VirtualMachine | undefined {
  if (status === undefined) return undefined;
  vm.status = status;
  vm.updatedAt = timestampFromMs(nowMs);
  return vm;
}

/** `edit` applied to a copy of the VM's status (which may be a stored, frozen VM): that copy, or undefined when the edit changed nothing. */
export function editedStatus(vm: VirtualMachine, edit: (status: VmStatus) => void): VmStatus | undefined {
  const before = vm.status ?? create(VmStatusSchema);
  // A stored status (checked when it was written): copied without protobuf-es's per-field checks.
  const next = copyMessage(before);
  edit(next);
  return equals(VmStatusSchema, before, next) ? undefined : next;
}
