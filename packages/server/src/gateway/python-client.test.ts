import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { createSimulatedHost } from "@quantix/agent";
import { silentLogger } from "@quantix/rpc";
import { ensureDebianPackages } from "@quantix/testing";
import { serialize } from "bson";
import { startControlPlane, type ControlPlane } from "../app.js";
import { loadConfig } from "../config.js";
import { GatewayClient, WriterClock } from "./client.js";

// A client nobody here wrote: Debian's python3-grpcio with message classes built from the
// contract's descriptor set, pymongo's bson for the documents (python-client.py).

const ROOT = fileURLToPath(new URL("../../../..", import.meta.url));
const SCRIPT = fileURLToPath(new URL("./python-client.py", import.meta.url));
// Debian's python3-* packages are for Debian's interpreter, whatever `python3` is first on PATH.
const PYTHON = "/usr/bin/python3";

interface Line {
  readonly event: string;
  readonly [k: string]: unknown;
}

describe("a Python grpcio client", () => {
  let cp: ControlPlane;
  let dir: string;
  let descriptors: string;
  before(async () => {
    await ensureDebianPackages(["python3", "python3-grpcio", "python3-protobuf", "python3-bson"]);
    dir = mkdtempSync(join(tmpdir(), "quantix-gw-python-"));
    descriptors = join(dir, "gateway.binpb");
    const buf = spawnSync("npx", ["buf", "build", "--path", "proto/virtualdom/v1/gateway.proto", "--as-file-descriptor-set", "-o", descriptors], { cwd: ROOT, encoding: "utf8" });
    assert.equal(buf.status, 0, `buf build: ${buf.stderr}`);
    const config = loadConfig({}, { host: "127.0.0.1", port: 0, store: { kind: "memory" }, logLevel: "silent", demo: false, shutdownGraceMs: 500 });
    cp = await startControlPlane(config, { log: silentLogger, simulatedHosts: createSimulatedHost, adminPassword: "python-test-admin-password", announce: () => undefined });
  });
  after(async () => {
    await cp?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("writes racing diffs (MERGED, CONFLICT), reads the snapshot, and follows the TypeScript side's changes", async () => {
    const client = new GatewayClient({ baseUrl: cp.url });
    const ts = new WriterClock("ts-writer");
    const node = "python-doc";
    const nodeId = new TextEncoder().encode(node);
    try {
      // Python follows the changes after the node's first version (from_version 0 would mean "new changes only").
      const created = await client.write(ts, nodeId, serialize({ $set: { title: "from ts" } }));
      const first = await client.write(ts, nodeId, serialize({ $set: { ts: 1 } }));
      const py = spawn(PYTHON, [SCRIPT, `127.0.0.1:${cp.port}`, descriptors, node, String(created.newVersion)], { stdio: ["ignore", "pipe", "pipe"] });
      let stderr = "";
      py.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<number | null>((resolve) => py.on("exit", (code) => resolve(code)));
      const timer = setTimeout(() => py.kill("SIGKILL"), 60_000);
      const lines: Line[] = [];
      let live: Promise<unknown> | undefined;
      for await (const text of createInterface({ input: py.stdout })) {
        const line = JSON.parse(text) as Line;
        lines.push(line);
        // Python is following the node now: the TypeScript side writes once more.
        if (line.event === "synced") live = client.write(ts, nodeId, serialize({ $set: { ts: 2 } }));
      }
      const code = await exited;
      clearTimeout(timer);
      await live;
      assert.equal(code, 0, `python exited ${code}: ${stderr}\n${lines.map((l) => JSON.stringify(l)).join("\n")}`);

      const writes = lines.filter((l) => l.event === "write");
      assert.deepEqual(writes.map((w) => [w["round"], w["outcome"]]), [[1, "APPLIED"], [1, "CONFLICT"], [2, "MERGED"], [2, "MERGED"]]);
      assert.deepEqual(writes[1]!["conflicts"], [["title", writes[0]!["version"]]], "the conflict names the path and the other version");
      const snapshot = lines.find((l) => l.event === "snapshot")!;
      assert.deepEqual(snapshot["doc"], { title: `from ${String(writes[1]!["writer"])}`, ts: 1, a: 1, b: 1, x: 2, y: 2 });
      assert.deepEqual(snapshot["clock"], { "ts-writer": 2, "py-a": 2, "py-b": 2 });

      const changes = lines.filter((l) => l.event === "change");
      assert.deepEqual(
        changes.map((c) => [c["writer"], c["version"], c["live"]]),
        [["ts-writer", Number(first.newVersion), false], ...writes.map((w) => [w["writer"], w["version"], false]), ["ts-writer", Number(first.newVersion) + 5, true]],
        "the TypeScript side's change, Python's four in version order, SYNCED, then the live one",
      );
      assert.deepEqual(changes[0]!["diff"], { $set: { ts: 1 } });
      assert.deepEqual(changes.at(-1)!["diff"], { $set: { ts: 2 } });
      assert.equal(lines.at(-1)!.event, "done");
    } finally {
      client.close();
    }
  });
});
