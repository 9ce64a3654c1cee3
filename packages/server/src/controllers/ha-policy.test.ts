import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { PowerState, VirtualMachineSchema, VmStatus_State as State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { setCondition } from "./conditions.js";
import { decideHa, GAVE_UP, HA_CONDITION } from "./ha-policy.js";

const NOW = 10_000_000;

function vm(o: { state: State; crashedAtMs?: number; restarts?: number[]; generation?: bigint; gaveUpAt?: bigint; max?: number; delaySec?: number }) {
  let conditions = o.crashedAtMs === undefined ? [] : setCondition([], { type: "Crashed", status: true, reason: "ProcessExited", message: "", generation: 1n }, o.crashedAtMs);
  if (o.gaveUpAt !== undefined) conditions = setCondition(conditions, { type: HA_CONDITION, status: false, reason: GAVE_UP, message: "", generation: o.gaveUpAt }, NOW);
  return create(VirtualMachineSchema, {
    id: "v1",
    name: "v1",
    generation: o.generation ?? 1n,
    spec: { desiredPowerState: PowerState.RUNNING, haPolicy: { enabled: true, maxRestarts: o.max ?? 0, restartDelaySec: o.delaySec ?? 0 } },
    status: { state: o.state, nodeId: "n1", conditions, haRestarts: (o.restarts ?? []).map((ms) => timestampFromMs(ms)) },
  });
}

test("a NOT_READY node is never abandoned; an OFFLINE one is", () => {
  assert.deepEqual(decideHa(vm({ state: State.UNKNOWN }), Phase.NOT_READY, NOW), { kind: "none" });
  assert.deepEqual(decideHa(vm({ state: State.UNKNOWN }), Phase.OFFLINE, NOW), { kind: "restart-elsewhere", count: 1, max: 3, lostNode: "n1" });
});

test("a crash waits for restart_delay_sec, then restarts in place", () => {
  const crashed = vm({ state: State.CRASHED, crashedAtMs: NOW - 1000, delaySec: 5 });
  assert.deepEqual(decideHa(crashed, Phase.READY, NOW), { kind: "wait", atMs: NOW + 4000 });
  assert.deepEqual(decideHa(crashed, Phase.READY, NOW + 4000), { kind: "restart-in-place", count: 1, max: 3 });
  // CRASHED without the Crashed condition: HA has already restarted it and awaits the observation.
  assert.deepEqual(decideHa(vm({ state: State.CRASHED }), Phase.READY, NOW), { kind: "none" });
});

test("max_restarts within the hour, then give up until a newer generation", () => {
  const full = vm({ state: State.CRASHED, crashedAtMs: NOW, max: 2, restarts: [NOW - 60_000, NOW - 30_000] });
  assert.equal(decideHa(full, Phase.READY, NOW).kind, "give-up");
  // Restarts older than an hour no longer count.
  assert.equal(decideHa(vm({ state: State.CRASHED, crashedAtMs: NOW, max: 2, restarts: [NOW - 4_000_000, NOW - 30_000] }), Phase.READY, NOW).kind, "restart-in-place");
  assert.equal(decideHa(vm({ state: State.CRASHED, crashedAtMs: NOW, max: 2, restarts: [1, 2], gaveUpAt: 1n }), Phase.READY, NOW).kind, "none");
  assert.deepEqual(decideHa(vm({ state: State.CRASHED, crashedAtMs: NOW, max: 2, restarts: [NOW - 10, NOW - 5], gaveUpAt: 1n, generation: 2n }), Phase.READY, NOW), { kind: "restart-in-place", count: 1, max: 2 });
});
