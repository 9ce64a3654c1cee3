import assert from "node:assert/strict";
import { test } from "node:test";
import { ClusterState } from "./cluster.js";
import { schedule } from "./schedule.js";
import { testNode, testVm } from "./test-fixtures.js";

test("a VM being migrated counts on its node and on its migration target", () => {
  const nodes = [testNode("a", { memMib: 4096 }), testNode("b", { memMib: 4096 })];
  const moving = { ...testVm("m", { memMib: 3072 }), status: { nodeId: "a", migrationTargetNodeId: "b" } };
  const cluster = ClusterState.of(nodes, [moving]);
  assert.equal(cluster.loadOf("a").memoryMib, 3072);
  assert.equal(cluster.loadOf("b").memoryMib, 3072, "the target's capacity is reserved");
  const next = schedule(testVm("n", { memMib: 2048 }), cluster, { strategy: "spread" });
  assert.equal(next.ok, false, "neither node has 2048 MiB left while the migration runs");
  const settled = ClusterState.of(nodes, [{ ...moving, status: { nodeId: "b", migrationTargetNodeId: "" } }]);
  assert.equal(settled.loadOf("a").memoryMib, 0);
  assert.equal(settled.loadOf("b").memoryMib, 3072);
});
