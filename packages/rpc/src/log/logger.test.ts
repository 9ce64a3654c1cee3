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

test("to the batched destination: every line is the line pino writes, byte for byte, whether it needs escaping or not", async () => {
  const pinoLines: string[] = [];
  const direct = createJsonLogger("debug", { write: (s: string) => void pinoLines.push(s) });
  const writes: string[] = [];
  const batched = createJsonLogger("debug", batchedStdout((text) => writes.push(text)));
  const inherited = Object.create({ inherited: "x" }) as Record<string, unknown>;
  inherited["own"] = "y";
  const cases: [Parameters<typeof direct.log>[0], string, Record<string, unknown> | undefined][] = [
    ["info", "rpc", { procedure: "Quantixkvm.compute.v1.VMService/GetVM", code: "ok", duration_ms: 0.12, id: "11111111-1111-1111-1111-111111111111" }],
    ["error", "rpc", { procedure: "a.B/C", code: "internal", duration_ms: 3, error: "Error: boom\n    at x (/srv/a.ts:1:2)" }],
    ["debug", "rpc", { procedure: "a.B/C", code: "invalid_argument", duration_ms: 0, refused: 'a "quoted" \\ value' }],
    ["info", "rpc", { id: "é", name: "😀", other: "\ud800", del: "\u007f", tab: "a\tb" }],
    ["info", "rpc", { long: "x".repeat(300), longEscaped: `${"y".repeat(50)}"` }],
    ["info", "rpc", { path: "C:\\dir" }],
    ["info", "rpc", { 'a"b': 1 }],
    ["info", "rpc", { "c\\d": 2 }],
    ["warn", "careful", { n: Number.NaN, i: Number.POSITIVE_INFINITY, z: -0, big: 1e21, small: 5e-7, t: true, f: false, u: undefined, nul: null }],
    ["info", "bigint", { revision: 12345678901234567890n }],
    ["info", "nested", { nested: { a: 1 }, list: [1, "two"] }],
    ["error", "failed", { err: new Error("boom") }],
    ["info", 'say "hi"', { a: "b" }],
    ["info", "msg twice", { msg: "inner" }],
    ["info", "inherited", inherited],
    ["info", "no fields", undefined],
    ["info", "empty", {}],
  ];
  for (const [level, msg, fields] of cases) {
    direct.log(level, msg, fields);
    batched.log(level, msg, fields);
  }
  await turn();
  await turn();
  const noTime = (l: string) => l.replace(/,"time":"[^"]*"/, "");
  const want = pinoLines.join("").split("\n").map(noTime);
  const got = writes.join("").split("\n").map(noTime);
  // An error's stack names the line that made it: the same for both.
  assert.deepEqual(got, want);
});

test("to the batched destination: a line pino formats and a line formatted without it both carry the time they were logged", async () => {
  const writes: string[] = [];
  const log = createJsonLogger("info", batchedStdout((text) => writes.push(text)));
  const before = Date.now();
  log.log("info", "plain", { n: 1 });
  log.log("info", "nested", { nested: { a: 1 } });
  log.log("info", "plain again", { n: 2 });
  const busyUntil = Date.now() + 20;
  while (Date.now() < busyUntil);
  await turn();
  await turn();
  const lines = writes.join("").trimEnd().split("\n").map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.deepEqual(lines.map((l) => l["msg"]), ["plain", "nested", "plain again"]);
  for (const l of lines) assert.ok(Date.parse(String(l["time"])) < before + 15, `${String(l["msg"])}: the time it was logged, not formatted: ${String(l["time"])} vs ${new Date(before).toISOString()}`);
});
