import { PowerState, VmStatus_State as State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { QuantixError } from "./errors.js";

/** A user action on a VM's power state, or its deletion. */
export type PowerAction = "start" | "stop" | "pause" | "resume" | "reboot" | "suspend" | "delete";

/**
 * What an action does in a state: `apply` it, `noop` because its result already holds
 * (so that automation can retry safely), `force` (allowed only with force), or `forbidden`.
 */
export type Decision = "apply" | "noop" | "force" | "forbidden";

/** The state names as users see them in the API. */
export function stateName(s: State): string {
  return State[s] ?? `STATE_${s}`;
}

/**
 * The total table from action and observed state to a decision. It is the single source
 * of truth for docs/api/vm-service.md; an exhaustive switch keeps it total.
 */
export function decide(action: PowerAction, state: State): Decision {
  switch (action) {
    case "start":
      return pick(state, { noop: [State.RUNNING, State.STARTING, State.PROVISIONING], apply: [State.STOPPED, State.PENDING, State.CRASHED, State.ERROR, State.SUSPENDED] });
    case "stop":
      return pick(state, { noop: [State.STOPPED, State.STOPPING], apply: [State.RUNNING, State.PAUSED, State.STARTING, State.PROVISIONING, State.PENDING, State.CRASHED, State.ERROR, State.SUSPENDED] });
    case "pause":
      return pick(state, { noop: [State.PAUSED], apply: [State.RUNNING] });
    case "resume":
      return pick(state, { noop: [State.RUNNING], apply: [State.PAUSED, State.SUSPENDED] });
    case "reboot":
      return pick(state, { apply: [State.RUNNING] });
    case "suspend":
      return pick(state, { noop: [State.SUSPENDED], apply: [State.RUNNING, State.PAUSED] });
    case "delete":
      return pick(state, {
        apply: [State.STOPPED, State.PENDING, State.CRASHED, State.ERROR, State.SUSPENDED],
        force: [State.RUNNING, State.PAUSED, State.STARTING, State.STOPPING, State.PROVISIONING, State.MIGRATING, State.UNKNOWN, State.STATE_UNSPECIFIED],
      });
    default: {
      const never: never = action;
      throw new Error(`unknown action ${String(never)}`);
    }
  }
}

function pick(state: State, t: { noop?: State[]; apply?: State[]; force?: State[] }): Decision {
  if (t.noop?.includes(state)) return "noop";
  if (t.apply?.includes(state)) return "apply";
  if (t.force?.includes(state)) return "force";
  return "forbidden";
}

/** The power state an action asks for; reboot and delete ask for none. */
export function desiredPowerStateOf(action: PowerAction): PowerState | undefined {
  switch (action) {
    case "start":
    case "resume":
      return PowerState.RUNNING;
    case "stop":
      return PowerState.STOPPED;
    case "pause":
      return PowerState.PAUSED;
    case "suspend":
      return PowerState.SUSPENDED;
    case "reboot":
    case "delete":
      return undefined;
    default: {
      const never: never = action;
      throw new Error(`unknown action ${String(never)}`);
    }
  }
}

/** The observed state that means an action's result holds. */
export function targetStateOf(action: PowerAction): State | undefined {
  switch (desiredPowerStateOf(action)) {
    case PowerState.RUNNING:
      return State.RUNNING;
    case PowerState.STOPPED:
      return State.STOPPED;
    case PowerState.PAUSED:
      return State.PAUSED;
    case PowerState.SUSPENDED:
      return State.SUSPENDED;
    default:
      return action === "reboot" ? State.RUNNING : undefined;
  }
}

/**
 * Applies the table: returns "apply" or "noop", or throws FAILED_PRECONDITION naming the
 * current state and what would make the action possible.
 */
export function checkPowerAction(action: PowerAction, state: State, vmId: string, force = false): "apply" | "noop" {
  const d = decide(action, state);
  if (d === "apply" || d === "noop") return d;
  if (d === "force" && force) return "apply";
  const name = stateName(state);
  const hint = d === "force" ? "; stop it first or set force" : hintFor(action, state);
  throw new QuantixError("failed_precondition", `cannot ${action} VM '${vmId}': it is ${name}${hint}`);
}

function hintFor(action: PowerAction, state: State): string {
  if (action === "start" && state === State.PAUSED) return "; use ResumeVM";
  if (state === State.UNKNOWN || state === State.STATE_UNSPECIFIED) return "; its node is not reporting";
  if (state === State.MIGRATING || state === State.STOPPING || state === State.STARTING) return "; wait until it settles";
  return "";
}
