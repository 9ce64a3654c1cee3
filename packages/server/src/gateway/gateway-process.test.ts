import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BSON, Binary } from "bson";
import { randomBytes } from "node:crypto";
import { MemoryGateway } from "@quantix/api/gen/virtualdom/v1/gateway_pb.js";
import { until } from "@quantix/testing";

const BIN = new URL("../../../../bin/quantix.mjs", import.meta.url).pathname;
const id = (s: string) => new TextEncoder().encode(s);

/** Starts `quantix gateway` and resolves with its URL, read from its "listening" log line. */
async function startGateway(env: Record<string, string>): Promise<{ child: ChildProcess; url: string; output: () => string }> {
  const child = spawn(process.execPath, [BIN, "gateway"], { env: { ...process.env, QUANTIX_GATEWAY_ADDR: "127.0.0.1:0", QUANTIX_LOG_LEVEL: "info", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out += d.toString()));
  const url = await until(
    () => {
      if (child.exitCode !== null) throw new Error(`quantix gateway exited with ${child.exitCode}: ${out}`);
      const line = out.split("\n").find((l) => l.includes("MemoryGateway listening"));
      return line ? (JSON.parse(line) as { url: string }).url : undefined;
    },
    "the gateway listening",
    60_000,
    50,
  );
  return { child, url, output: () => out };
}

const exited = (child: ChildProcess) => new Promise<number | null>((resolve) => (child.exitCode !== null ? resolve(child.exitCode) : child.once("exit", (code) => resolve(code))));

describe("quantix gateway: the MemoryGateway as its own process", () => {
  const dir = mkdtempSync(join(tmpdir(), "quantix-gateway-proc-"));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it("serves on its own port, keeps acknowledged writes through a SIGKILL, and stops cleanly on SIGTERM", async () => {
    const env = { QUANTIX_GATEWAY_DATA_DIR: join(dir, "data") };
    const first = await startGateway(env);
    const gw = createClient(MemoryGateway, createGrpcTransport({ baseUrl: first.url }));
    const big = randomBytes(2 * 1024 * 1024);
    const w = await gw.writeDiff({ nodeId: id("proc/doc"), diffBson: BSON.serialize({ $set: { title: "kept", blob: new Binary(big) } }), vectorClock: { entries: { a: 1n } }, writerId: "a" });
    assert.equal(w.success, true);
    // Killed without warning, right after the acknowledgement.
    first.child.kill("SIGKILL");
    await exited(first.child);
    const second = await startGateway(env);
    const again = createClient(MemoryGateway, createGrpcTransport({ baseUrl: second.url }));
    const snap = await again.readSnapshot({ nodeId: id("proc/doc") });
    assert.equal(snap.version, w.newVersion);
    const doc = BSON.deserialize(snap.snapshotBson, { promoteBuffers: true }) as { title: string; blob: Buffer };
    assert.equal(doc.title, "kept");
    assert.ok(doc.blob.equals(big), "the 2 MiB blob (kept as a file beside the database) survived");
    // The retry of the acknowledged write is recognised after the restart.
    const retry = await again.writeDiff({ nodeId: id("proc/doc"), diffBson: BSON.serialize({ $set: { title: "kept" } }), vectorClock: { entries: { a: 1n } }, writerId: "a" });
    assert.equal(retry.newVersion, w.newVersion);
    second.child.kill("SIGTERM");
    assert.equal(await exited(second.child), 0, second.output());
  });

  it("says what is wrong with its settings", async () => {
    const child = spawn(process.execPath, [BIN, "gateway"], { env: { ...process.env, QUANTIX_GATEWAY_ADDR: "nowhere" }, stdio: ["ignore", "pipe", "pipe"] });
    let err = "";
    child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
    assert.equal(await exited(child), 2);
    assert.match(err, /QUANTIX_GATEWAY_ADDR="nowhere" must be host:port/);
  });
});
