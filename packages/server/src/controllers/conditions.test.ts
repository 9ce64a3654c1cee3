import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { ConditionStatus } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { setCondition } from "./conditions.js";

const beat = { type: "Heartbeat", status: true, reason: "AgentReporting", message: "the agent is reporting", generation: 0n };
const ready = { type: "Ready", status: true, reason: "HypervisorUp", message: "qemu answers", generation: 0n };

describe("setCondition", () => {
  it("keeps the list sorted by type, and a condition's transition time while its status holds", () => {
    const list = setCondition(setCondition([], ready, 1_000), beat, 2_000);
    assert.deepEqual(list.map((c) => c.type), ["Heartbeat", "Ready"]);
    const moved = setCondition(list, { ...ready, message: "qemu 9.2 answers" }, 3_000);
    assert.notEqual(moved, list);
    assert.equal(moved.find((c) => c.type === "Ready")!.message, "qemu 9.2 answers");
    assert.equal(timestampMs(moved.find((c) => c.type === "Ready")!.lastTransitionTime!), 1_000, "the status did not change");
    const down = setCondition(moved, { ...ready, status: false, reason: "HypervisorDown" }, 4_000);
    assert.equal(down.find((c) => c.type === "Ready")!.status, ConditionStatus.FALSE);
    assert.equal(timestampMs(down.find((c) => c.type === "Ready")!.lastTransitionTime!), 4_000);
    assert.equal(list.length, 2, "the list given is not changed");
  });

  it("a condition already so (every heartbeat's): the same list back, nothing made", () => {
    const list = setCondition(setCondition([], ready, 1_000), beat, 2_000);
    assert.equal(setCondition(list, beat, 12_000), list);
    assert.equal(setCondition(list, ready, 12_000), list);
    assert.notEqual(setCondition(list, { ...beat, generation: 1n }, 12_000), list, "another generation");
    assert.notEqual(setCondition(list, { ...beat, reason: "Other" }, 12_000), list, "another reason");
    // An unsorted list (not setCondition's) is sorted as before.
    const unsorted = [...list].reverse();
    assert.deepEqual(setCondition(unsorted, beat, 12_000).map((c) => c.type), ["Heartbeat", "Ready"]);
  });
});
