import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { NodeSchema, NodeStatus_Phase as Phase, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { TaintEffect } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { copyMessage, type ChangeEvent } from "@quantix/core";
import { setCondition } from "./conditions.js";
import { nodeChangeMatters } from "./scheduler-triggers.js";

// Which node changes start a scheduling pass: not a heartbeat, but anything the filters read.

function node(): Node {
  return create(NodeSchema, {
    id: "node-1",
    hostname: "n1",
    labels: { zone: "z1", rack: "r1" },
    spec: { schedulable: true, taints: [{ key: "gpu", value: "yes", effect: TaintEffect.NO_SCHEDULE }] },
    status: {
      phase: Phase.READY,
      allocatable: { cpuCores: 64, memoryMib: 262_144n },
      hypervisor: { type: "qemu", capabilities: ["console", "live-migration"] },
      usage: { cpuUsagePercent: 10, memoryUsedMib: 1024n },
      lastHeartbeat: timestampFromMs(1_000),
    },
  });
}

const modified = (change: (n: Node) => void): ChangeEvent<Node> => {
  const previous = node();
  const object = copyMessage(previous);
  change(object);
  return { type: "MODIFIED", object, previous, revision: 2n } as ChangeEvent<Node>;
};

describe("nodeChangeMatters", () => {
  it("a heartbeat (its time, usage, conditions, updated_at) starts no pass", () => {
    assert.equal(
      nodeChangeMatters(
        modified((n) => {
          n.status!.lastHeartbeat = timestampFromMs(11_000);
          n.status!.usage = { ...n.status!.usage!, cpuUsagePercent: 90, memoryUsedMib: 9_999n };
          n.status!.conditions = setCondition(n.status!.conditions, { type: "Heartbeat", status: true, reason: "AgentReporting", message: "the agent is reporting", generation: 0n }, 11_000);
          n.updatedAt = timestampFromMs(11_000);
        }),
      ),
      false,
    );
    assert.equal(nodeChangeMatters(modified(() => undefined)), false, "nothing changed");
    assert.equal(nodeChangeMatters(modified((n) => (n.labels = { rack: "r1", zone: "z1" }))), false, "the same labels in another order");
  });

  it("what the filters and scores read starts one", () => {
    const cases: [string, (n: Node) => void][] = [
      ["phase", (n) => (n.status!.phase = Phase.NOT_READY)],
      ["schedulable", (n) => (n.spec!.schedulable = false)],
      ["a label changed", (n) => (n.labels["zone"] = "z2")],
      ["a label added", (n) => (n.labels["gpu"] = "a100")],
      ["a label removed", (n) => delete n.labels["rack"]],
      ["a label replaced by another", (n) => (n.labels = { zone: "z1", row: "r1" })],
      ["a taint's effect", (n) => (n.spec!.taints[0]!.effect = TaintEffect.NO_EXECUTE)],
      ["a taint's value", (n) => (n.spec!.taints[0]!.value = "no")],
      ["a taint removed", (n) => (n.spec!.taints = [])],
      ["allocatable CPU", (n) => (n.status!.allocatable!.cpuCores = 32)],
      ["allocatable memory", (n) => (n.status!.allocatable!.memoryMib = 1n)],
      ["allocatable gone", (n) => (n.status!.allocatable = undefined)],
      ["a capability", (n) => (n.status!.hypervisor!.capabilities = ["console"])],
      ["the status gone", (n) => (n.status = undefined)],
    ];
    for (const [what, change] of cases) assert.equal(nodeChangeMatters(modified(change)), true, what);
  });

  it("a node added or removed starts one", () => {
    assert.equal(nodeChangeMatters({ type: "ADDED", object: node(), revision: 1n } as ChangeEvent<Node>), true);
    assert.equal(nodeChangeMatters({ type: "DELETED", object: node(), revision: 3n } as ChangeEvent<Node>), true);
  });
});
