import assert from "node:assert/strict";
import { test } from "node:test";
import { parsePrometheus } from "./prometheus-parse.js";

test("the parser rejects what is not the text format", () => {
  assert.throws(() => parsePrometheus("x{a=b} 1\n"), /bad label set/);
  assert.throws(() => parsePrometheus("x 1 2 3\n"), /not a sample line/);
  assert.throws(() => parsePrometheus("x one\n"), /bad sample value/);
});
