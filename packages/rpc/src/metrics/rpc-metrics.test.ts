import assert from "node:assert/strict";
import { test } from "node:test";
import { Code } from "@connectrpc/connect";
import { parsePrometheus, sampleValue } from "@quantix/testing";
import { Counter, Gauge, Registry } from "prom-client";
import { RpcMetrics } from "./rpc-metrics.js";

test("label values with quotes, backslashes and newlines survive a round trip; HELP and TYPE come once per family", async () => {
  const nasty = 'a"b\\c\nd';
  const registers = [new Registry()];
  const x = new Counter({ name: "x_total", help: "Counts x.\nSecond line.", labelNames: ["id", "code"], registers });
  x.inc({ id: nasty, code: "ok" }, 3);
  x.inc({ id: "plain", code: "ok" }, 7);
  new Gauge({ name: "y", help: "A gauge.", registers }).set(Infinity);
  const text = await registers[0]!.metrics();
  assert.equal(text.split("\n").filter((l) => l.startsWith("# TYPE x_total")).length, 1);
  assert.ok(!text.includes("\nd"), "a raw newline in a label value would break the line");
  const e = parsePrometheus(text);
  assert.equal(sampleValue(e, "x_total", { id: nasty }), 3);
  assert.equal(sampleValue(e, "x_total", { id: "plain" }), 7);
  assert.equal(sampleValue(e, "y"), Infinity);
  assert.equal(e.types.get("x_total"), "counter");
  assert.equal(e.help.get("x_total"), "Counts x.\\nSecond line.");
});

test("calls by procedure and code, a cumulative latency histogram, and open streams", async () => {
  const m = new RpcMetrics();
  const P = "pkg.Svc/Get";
  m.observe(P, 0, 0.3);
  m.observe(P, 0, 3);
  m.observe(P, Code.NotFound, 30);
  m.streamOpened("pkg.Svc/WatchThings");
  m.streamOpened("pkg.Svc/WatchThings");
  m.streamOpened("pkg.Svc/Follow");
  m.streamClosed("pkg.Svc/WatchThings");
  const e = parsePrometheus(await m.registry.metrics());
  assert.equal(sampleValue(e, "quantix_rpc_calls_total", { procedure: P, code: "ok" }), 2);
  assert.equal(sampleValue(e, "quantix_rpc_calls_total", { procedure: P, code: "not_found" }), 1);
  assert.equal(e.types.get("quantix_rpc_duration_seconds"), "histogram");
  assert.equal(sampleValue(e, "quantix_rpc_duration_seconds_bucket", { procedure: P, le: "0.0005" }), 1);
  assert.equal(sampleValue(e, "quantix_rpc_duration_seconds_bucket", { procedure: P, le: "0.005" }), 2);
  assert.equal(sampleValue(e, "quantix_rpc_duration_seconds_bucket", { procedure: P, le: "+Inf" }), 3);
  assert.equal(sampleValue(e, "quantix_rpc_duration_seconds_count", { procedure: P }), 3);
  assert.equal(sampleValue(e, "quantix_rpc_streams_open", { procedure: "pkg.Svc/WatchThings" }), 1);
  assert.equal(sampleValue(e, "quantix_rpc_streams_open", { procedure: "pkg.Svc/Follow" }), 1);
  assert.equal(m.openWatches(), 1, "only Watch* streams are watches");
});
