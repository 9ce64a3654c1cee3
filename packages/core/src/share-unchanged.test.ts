import assert from "node:assert/strict";
import { test } from "node:test";
import { clone, create, equals } from "@bufbuild/protobuf";
import { BytesValueSchema, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { NodeSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { ConditionSchema } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { copyMessage } from "./copy-message.js";
import { deepFreeze } from "./freeze.js";
import { fixtureNode } from "./message-fixtures.js";
import { shareUnchanged } from "./share-unchanged.js";

const node = fixtureNode;

test("a heartbeat's new version keeps its value and holds the old version's unchanged parts", () => {
  const prev = deepFreeze(node());
  const next = copyMessage(prev);
  next.status!.lastHeartbeat = timestampFromMs(1_700_000_010_000);
  next.status!.usage!.cpuUsagePercent = 40;
  const expected = clone(NodeSchema, next);

  assert.equal(shareUnchanged(next, prev), false);
  assert.ok(equals(NodeSchema, next, expected), "the value is unchanged by sharing");
  assert.deepEqual(next, expected);
  // Unchanged parts are the old version's objects; changed ones stay the new version's own.
  assert.equal(next.spec, prev.spec);
  assert.equal(next.labels, prev.labels);
  assert.equal(next.status!.vmIds, prev.status!.vmIds);
  assert.equal(next.status!.conditions, prev.status!.conditions);
  assert.notEqual(next.status, prev.status);
  assert.notEqual(next.status!.usage, prev.status!.usage);
  assert.notEqual(next.status!.lastHeartbeat, prev.status!.lastHeartbeat);
  assert.equal(prev.status!.usage!.cpuUsagePercent, 12.5, "the old version is not changed");
});

test("lists share their unchanged elements; an equal version is reported equal", () => {
  const prev = deepFreeze(node());
  const next = copyMessage(prev);
  next.status!.conditions.push(create(ConditionSchema, { type: "Heartbeat", status: 1 }));
  next.status!.vmIds.push("d");
  assert.equal(shareUnchanged(next, prev), false);
  assert.notEqual(next.status!.conditions, prev.status!.conditions);
  assert.equal(next.status!.conditions[0], prev.status!.conditions[0]);
  assert.deepEqual(next.status!.vmIds, ["a", "b", "c", "d"]);

  const same = copyMessage(prev);
  assert.equal(shareUnchanged(same, prev), true);
  assert.equal(same.status, prev.status);
});

test("values that look alike but differ are not shared: -0 and 0, a removed key, other bytes, another type", () => {
  const prev = deepFreeze(node());
  const negZero = copyMessage(prev);
  negZero.status!.usage!.cpuUsagePercent = -0;
  const frozenNegZero = deepFreeze(copyMessage(negZero));
  const zero = copyMessage(negZero);
  zero.status!.usage!.cpuUsagePercent = 0;
  assert.equal(shareUnchanged(zero, frozenNegZero), false);
  assert.ok(Object.is(zero.status!.usage!.cpuUsagePercent, 0));
  assert.notEqual(zero.status!.usage, frozenNegZero.status!.usage);

  const fewer = copyMessage(prev);
  delete (fewer.labels as Record<string, string>)["zone"];
  assert.equal(shareUnchanged(fewer, prev), false);
  assert.deepEqual(fewer.labels, { rack: "r1" });

  const b1 = deepFreeze({ box: create(BytesValueSchema, { value: new Uint8Array([1, 2, 3]) }) });
  const b2 = { box: create(BytesValueSchema, { value: new Uint8Array([1, 2, 4]) }) };
  assert.equal(shareUnchanged(b2, b1), false);
  assert.deepEqual([...b2.box.value], [1, 2, 4]);
  const b3 = { box: create(BytesValueSchema, { value: new Uint8Array([1, 2, 3]) }) };
  assert.equal(shareUnchanged(b3, b1), true);
  assert.equal(b3.box, b1.box);

  const asNode = { x: create(NodeSchema, { id: "n" }) };
  const asBytes = deepFreeze({ x: { $typeName: "quantix.Other", id: "n" } });
  assert.equal(shareUnchanged(asNode, asBytes), false);
  assert.equal(asNode.x.$typeName, NodeSchema.typeName);
});

test("parts of the old version that are not frozen are compared, never taken", () => {
  const prev = node(); // not frozen: someone may still change it
  const next = copyMessage(prev);
  assert.equal(shareUnchanged(next, prev), true);
  assert.notEqual(next.spec, prev.spec);
  assert.notEqual(next.status!.vmIds, prev.status!.vmIds);
});
