import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { VmStatus_State as State, VmStatus_StateSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";

import { QuantixError } from "./errors.js";
import { checkPowerAction, decide, targetStateOf, type Decision, type PowerAction } from "./power-actions.js";

// A Record over the union makes the compiler fail here when an action is added.
const ACTION_SET: Record<PowerAction, true> = { start: true, stop: true, pause: true, resume: true, reboot: true, suspend: true, delete: true };
const ACTIONS = Object.keys(ACTION_SET) as PowerAction[];
const STATES: State[] = VmStatus_StateSchema.values.map((v) => v.number);
const DECISIONS: readonly Decision[] = ["apply", "noop", "force", "forbidden"];

/** Asserts FAILED_PRECONDITION whose message names the VM's state. */
function refuses(run: () => unknown, stateName: string): void {
  assert.throws(run, (e: unknown) => {
    assert.ok(e instanceof QuantixError, `expected a QuantixError, got ${String(e)}`);
    assert.equal(e.code, "failed_precondition");
    assert.match(e.message, new RegExp(`\\b${stateName}\\b`));
    return true;
  });
}

describe("power action table", () => {
  it("is total: every action in every state has a decision", () => {
    assert.equal(STATES.length, 13);
    for (const action of ACTIONS) {
      for (const state of STATES) {
        assert.ok(DECISIONS.includes(decide(action, state)), `${action} in ${State[state]}`);
      }
    }
  });

  it("checkPowerAction agrees with the table and names the state when it refuses", () => {
    for (const action of ACTIONS) {
      for (const state of STATES) {
        const d = decide(action, state);
        if (d === "apply" || d === "noop") assert.equal(checkPowerAction(action, state, "vm-1"), d);
        else refuses(() => checkPowerAction(action, state, "vm-1"), State[state]!);
        if (d === "force") assert.equal(checkPowerAction(action, state, "vm-1", true), "apply");
        if (d === "forbidden") refuses(() => checkPowerAction(action, state, "vm-1", true), State[state]!);
      }
    }
  });

  it("asking for a state that already holds is a noop, so retries are safe", () => {
    assert.equal(checkPowerAction("start", State.RUNNING, "vm-1"), "noop");
    assert.equal(checkPowerAction("stop", State.STOPPED, "vm-1"), "noop");
    for (const action of ["start", "stop", "pause", "resume", "suspend"] as const) {
      const target = targetStateOf(action);
      assert.ok(target !== undefined);
      assert.equal(decide(action, target), "noop", action);
    }
  });

  it("actions that change state apply from the usual states", () => {
    assert.equal(decide("start", State.STOPPED), "apply");
    assert.equal(decide("stop", State.RUNNING), "apply");
    assert.equal(decide("pause", State.RUNNING), "apply");
    assert.equal(decide("resume", State.PAUSED), "apply");
    assert.equal(decide("reboot", State.RUNNING), "apply");
    assert.equal(decide("delete", State.STOPPED), "apply");
  });

  it("pause of a STOPPED VM is FAILED_PRECONDITION naming STOPPED", () => {
    assert.equal(decide("pause", State.STOPPED), "forbidden");
    refuses(() => checkPowerAction("pause", State.STOPPED, "vm-1"), "STOPPED");
    refuses(() => checkPowerAction("pause", State.STOPPED, "vm-1", true), "STOPPED");
  });

  it("deleting a RUNNING VM needs force", () => {
    assert.equal(decide("delete", State.RUNNING), "force");
    refuses(() => checkPowerAction("delete", State.RUNNING, "vm-1"), "RUNNING");
    assert.equal(checkPowerAction("delete", State.RUNNING, "vm-1", true), "apply");
  });
});
