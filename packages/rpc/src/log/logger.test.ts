import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { batchedStdout } from "./batched-stdout.js";
import { createJsonLogger } from "./logger.js";

function capture(level: Parameters<typeof createJsonLogger>[0]) {
  const lines: Record<string, unknown>[] = [];
  const log = createJsonLogger(level, { write: (s: string) => void lines.push(...s.trimEnd().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>)) });
  return { log, lines };
}

test("one JSON line per call: a string level, msg, an ISO time and the fields at top level", () => {
  const { log, lines } = capture("info");
  log.log("info", "rpc", { procedure: "a.B/C", code: "ok", duration_ms: 0.12, revision: 12345678901234567890n, nested: { a: 1 } });
  log.log("warn", "careful");
  assert.equal(lines.length, 2);
  const [first, second] = lines as [Record<string, unknown>, Record<string, unknown>];
  assert.deepEqual(Object.keys(first).sort(), ["code", "duration_ms", "level", "msg", "nested", "procedure", "revision", "time"]);
  assert.equal(first["level"], "info");
  assert.equal(first["msg"], "rpc");
  assert.equal(first["procedure"], "a.B/C");
  assert.equal(first["revision"], "12345678901234567890", "a bigint is written exactly, as a string");
  assert.deepEqual(first["nested"], { a: 1 });
  assert.match(String(first["time"]), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.deepEqual([second["level"], second["msg"]], ["warn", "careful"]);
});

test("lines below the level are dropped; silent drops all", () => {
  const warn = capture("warn");
  for (const l of ["debug", "info", "warn", "error"] as const) warn.log.log(l, l);
  assert.deepEqual(warn.lines.map((l) => l["level"]), ["warn", "error"]);
  const silent = capture("silent");
  silent.log.log("error", "nothing");
  assert.equal(silent.lines.length, 0);
});

test("to stdout, lines logged just before process.exit all arrive, whole", () => {
  const logger = fileURLToPath(new URL("./logger.ts", import.meta.url));
  const script = `import { createJsonLogger } from ${JSON.stringify(logger)};
const log = createJsonLogger("info");
for (let i = 0; i < 5000; i++) log.log("info", "line", { i, pad: "x".repeat(100) });
process.exit(0);`;
  const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { encoding: "utf8", maxBuffer: 64 << 20 });
  assert.equal(r.status, 0, r.stderr);
  const got = r.stdout.trimEnd().split("\n").map((l) => (JSON.parse(l) as { i: number }).i);
  assert.deepEqual(got, Array.from({ length: 5000 }, (_, i) => i));
});

const turn = () => new Promise<void>((r) => setImmediate(r));

test("to the batched destination: lines are formatted and written one turn after the turn they were logged in, in order, with the time they were logged", async () => {
  const writes: string[] = [];
  const log = createJsonLogger("info", batchedStdout((text) => writes.push(text)));
  const before = Date.now();
  log.log("info", "first", { n: 1 });
  log.log("debug", "dropped");
  log.log("warn", "second", { n: 2 });
  // A gRPC call's trailers leave in the turn after its response's data: its log line must not come between them.
  await turn();
  assert.equal(writes.length, 0, "nothing is formatted or written in the turn that logged");
  const busyUntil = Date.now() + 20;
  while (Date.now() < busyUntil);
  await turn();
  assert.equal(writes.length, 1, "one write for the batch");
  const lines = writes[0]!.trimEnd().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.deepEqual(lines.map((l) => [l["msg"], l["n"], l["level"]]), [["first", 1, "info"], ["second", 2, "warn"]]);
  for (const l of lines) assert.ok(Date.parse(String(l["time"])) < before + 15, `the time a line was logged, not formatted: ${String(l["time"])} vs ${new Date(before).toISOString()}`);
});

test("to the batched destination: 1,024 lines are written at once, without waiting for the turn", () => {
  const writes: string[] = [];
  const log = createJsonLogger("info", batchedStdout((text) => writes.push(text)));
  for (let i = 0; i < 1024; i++) log.log("info", "line", { i });
  assert.equal(writes.length, 1);
  assert.deepEqual(writes[0]!.trimEnd().split("\n").map((l) => (JSON.parse(l) as { i: number }).i), Array.from({ length: 1024 }, (_, i) => i));
});
