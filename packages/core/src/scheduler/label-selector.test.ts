import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { LabelOperator as Op, LabelSelectorSchema } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { TaintSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { TaintEffect, TolerationOperator, TolerationSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { selectorMatches } from "./label-selector.js";
import { evictingTaints } from "./taints.js";

describe("selectorMatches", () => {
  const labels = { app: "web", tier: "front" };
  const cases: { name: string; sel: Parameters<typeof create<typeof LabelSelectorSchema>>[1]; want: boolean }[] = [
    { name: "empty matches all", sel: {}, want: true },
    { name: "match_labels equal", sel: { matchLabels: { app: "web" } }, want: true },
    { name: "match_labels differ", sel: { matchLabels: { app: "db" } }, want: false },
    { name: "IN", sel: { matchExpressions: [{ key: "tier", operator: Op.IN, values: ["front", "back"] }] }, want: true },
    { name: "IN missing key", sel: { matchExpressions: [{ key: "zone", operator: Op.IN, values: ["a"] }] }, want: false },
    { name: "NOT_IN absent key", sel: { matchExpressions: [{ key: "zone", operator: Op.NOT_IN, values: ["a"] }] }, want: true },
    { name: "NOT_IN hit", sel: { matchExpressions: [{ key: "app", operator: Op.NOT_IN, values: ["web"] }] }, want: false },
    { name: "EXISTS", sel: { matchExpressions: [{ key: "app", operator: Op.EXISTS }] }, want: true },
    { name: "DOES_NOT_EXIST", sel: { matchExpressions: [{ key: "app", operator: Op.DOES_NOT_EXIST }] }, want: false },
    { name: "unspecified operator matches nothing", sel: { matchExpressions: [{ key: "app" }] }, want: false },
  ];
  for (const c of cases) it(c.name, () => assert.equal(selectorMatches(create(LabelSelectorSchema, c.sel), labels), c.want));
});

describe("evictingTaints", () => {
  it("lists the NoExecute taints a VM does not tolerate", () => {
    const taints = [
      create(TaintSchema, { key: "a", effect: TaintEffect.NO_EXECUTE }),
      create(TaintSchema, { key: "b", effect: TaintEffect.NO_EXECUTE }),
      create(TaintSchema, { key: "c", effect: TaintEffect.NO_SCHEDULE }),
    ];
    const tol = [create(TolerationSchema, { key: "a", operator: TolerationOperator.EXISTS })];
    assert.deepEqual(evictingTaints(taints, tol).map((t) => t.key), ["b"]);
  });
});
