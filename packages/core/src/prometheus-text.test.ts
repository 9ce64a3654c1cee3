import assert from "node:assert/strict";
import { test } from "node:test";
import { parsePrometheus, sampleValue } from "@quantix/testing/prometheus-parse.js";
import { PrometheusText } from "./prometheus-text.js";

test("label values with quotes, backslashes and newlines survive a round trip; HELP and TYPE come once per family", () => {
  const nasty = 'a"b\\c\nd';
  const text = new PrometheusText()
    .family("x_total", "counter", "Counts x.\nSecond line.")
    .sample("x_total", { id: nasty, code: "ok" }, 3)
    .sample("x_total", { id: "plain", code: "ok" }, 7n)
    .family("y", "gauge", "A gauge.")
    .sample("y", {}, Infinity)
    .toString();
  assert.equal(text.split("\n").filter((l) => l.startsWith("# TYPE x_total")).length, 1);
  assert.ok(!text.includes("\nd"), "a raw newline in a label value would break the line");
  const e = parsePrometheus(text);
  assert.equal(sampleValue(e, "x_total", { id: nasty }), 3);
  assert.equal(sampleValue(e, "x_total", { id: "plain" }), 7);
  assert.equal(sampleValue(e, "y"), Infinity);
  assert.equal(e.types.get("x_total"), "counter");
  assert.equal(e.help.get("x_total"), "Counts x.\\nSecond line.");
});

test("the parser rejects what is not the text format", () => {
  assert.throws(() => parsePrometheus("x{a=b} 1\n"), /bad label set/);
  assert.throws(() => parsePrometheus("x 1 2 3\n"), /not a sample line/);
  assert.throws(() => parsePrometheus("x one\n"), /bad sample value/);
});
