import type { BackendVmState } from "./backend.js";

/** The vmm.v1 calls that change a VM's power state. */
export type VmAction = "delete" | "boot" | "shutdown" | "pause" | "resume" | "reboot" | "suspend";

/**
 * What a call does in a state: `apply` calls the backend, `noop` succeeds without
 * touching it (the idempotent cases of vm.proto), `force` is allowed only with force
 * (DeleteVm of a running VM), `forbidden` is FAILED_PRECONDITION naming the state.
 */
export type Decision = "apply" | "noop" | "force" | "forbidden";

/** Every action, for tables and tests. */
export const VM_ACTIONS: readonly VmAction[] = ["delete", "boot", "shutdown", "pause", "resume", "reboot", "suspend"];
/** Every state a backend reports, for tables and tests. */
export const VM_STATES: readonly BackendVmState[] = ["created", "running", "paused", "shutdown", "crashed", "suspended"];

/** The total table action × state of vm.proto's comments, as an exhaustive switch. */
export function decide(action: VmAction, state: BackendVmState): Decision {
  switch (action) {
    case "delete":
      return state === "running" || state === "paused" ? "force" : "apply";
    case "boot":
      return state === "running" ? "noop" : state === "paused" ? "forbidden" : "apply";
    case "shutdown":
      // Suspended: discards the saved memory.
      return state === "running" || state === "paused" || state === "suspended" ? "apply" : "noop";
    case "pause":
      return state === "running" ? "apply" : state === "paused" ? "noop" : "forbidden";
    case "resume":
      return state === "paused" || state === "suspended" ? "apply" : state === "running" ? "noop" : "forbidden";
    case "reboot":
      return state === "running" ? "apply" : "forbidden";
    case "suspend":
      return state === "running" || state === "paused" ? "apply" : state === "suspended" ? "noop" : "forbidden";
    default: {
      const never: never = action;
      throw new Error(`unknown action ${String(never)}`);
    }
  }
}

/** What to do instead, for the FAILED_PRECONDITION message. */
export function hint(action: VmAction, state: BackendVmState): string {
  if (action === "boot" && state === "paused") return "; use ResumeVm";
  if (action === "delete") return "; set force to power it off first";
  if ((action === "reboot" || action === "pause") && state === "suspended") return "; use ResumeVm";
  if (action === "reboot" || action === "pause" || action === "suspend") return "; boot it first";
  if (action === "resume") return state === "crashed" || state === "shutdown" || state === "created" ? "; use BootVm" : "";
  return "";
}
