import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { describe, it, type TestContext } from "node:test";
import { fileURLToPath } from "node:url";

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { VMService, VmUpdateSchema, WatchVMsRequestSchema, type VmUpdate, type WatchVMsRequest } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { synced, until } from "@quantix/testing";

// The real binary in a child process: signals, exit codes and configuration errors.

const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const DEMO_NAMES = ["cache-server", "db-server-01", "dev-workstation", "web-server-01"];

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

interface Proc {
  child: ChildProcess;
  /** Resolves with the URL from the "control plane listening" log line. */
  url: Promise<string>;
  exited: Promise<Exit>;
  stderr(): string;
}

/** Starts `node --import tsx packages/server/src/main.ts` with only the given QUANTIX_* settings. */
function spawnServer(t: TestContext, quantixEnv: Record<string, string>): Proc {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("QUANTIX_") && k !== "NODE_TEST_CONTEXT") env[k] = v;
  const child = spawn(process.execPath, ["--import", "tsx", "packages/server/src/main.ts"], { cwd: ROOT, env: { ...env, ...quantixEnv }, stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (err += d));
  const exited = new Promise<Exit>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const url = new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      try {
        const rec = JSON.parse(line) as { msg?: string; url?: string };
        if (rec.msg === "control plane listening" && rec.url) resolve(rec.url);
      } catch {
        // Not a log line; only the JSON lines matter here.
      }
    });
    void exited.then((e) => reject(new Error(`the server exited (${e.code ?? e.signal}) before listening: ${err}`)));
  });
  url.catch(() => undefined);
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  });
  return { child, url, exited, stderr: () => err };
}

/** Rejects when `p` takes longer than `ms`. */
async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms)));
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A WatchVMs call with grpc-js, a real gRPC client. */
function grpcWatch(url: string) {
  const client = new grpc.Client(new URL(url).host, grpc.credentials.createInsecure());
  const events: VmUpdate[] = [];
  const call = client.makeServerStreamRequest(
    "/Quantixkvm.compute.v1.VMService/WatchVMs",
    (m: WatchVMsRequest) => Buffer.from(toBinary(WatchVMsRequestSchema, m)),
    (b: Buffer) => fromBinary(VmUpdateSchema, b),
    create(WatchVMsRequestSchema, {}),
  );
  call.on("data", (u: VmUpdate) => events.push(u));
  const ended = new Promise<grpc.StatusObject>((resolve) => call.on("status", resolve));
  const errors: Error[] = [];
  call.on("error", (e: Error) => errors.push(e));
  return { events, ended, errors, close: () => client.close() };
}


function assertSnapshot(events: VmUpdate[]): void {
  const i = events.findIndex((e) => e.type === EventType.SYNCED);
  const before = events.slice(0, i);
  assert.deepEqual(before.map((e) => e.type), before.map(() => EventType.ADDED));
  assert.deepEqual(before.map((e) => e.vm?.name).sort(), DEMO_NAMES);
}

describe("the control plane process", () => {
  it("on SIGTERM ends open watches cleanly and exits 0", async (t) => {
    const p = spawnServer(t, { QUANTIX_ADDR: "127.0.0.1:0" });
    const url = await within(p.url, 20_000, "listening");

    // Connect over HTTP/2: the for-await loop must complete without throwing.
    const connect = createClient(VMService, createConnectTransport({ baseUrl: url, httpVersion: "2" }));
    const connectEvents: VmUpdate[] = [];
    const connectDone = (async () => {
      for await (const u of connect.watchVMs({})) connectEvents.push(u);
    })();
    connectDone.catch(() => undefined);
    const g = grpcWatch(url);
    t.after(() => g.close());

    await until(() => (synced(connectEvents) && synced(g.events) ? true : undefined), "both watches to be synced");
    assertSnapshot(connectEvents);
    assertSnapshot(g.events);

    assert.ok(p.child.kill("SIGTERM"));
    await within(connectDone, 10_000, "the Connect watch to end");
    const status = await within(g.ended, 10_000, "the gRPC watch to end");
    assert.equal(status.code, grpc.status.OK, `gRPC status ${status.code}: ${status.details}`);
    assert.deepEqual(g.errors, []);
    const exit = await within(p.exited, 10_000, "exit after SIGTERM");
    assert.deepEqual(exit, { code: 0, signal: null }, p.stderr());
    assert.match(p.stderr(), /SIGTERM received/);
  });

  it("on SIGINT exits 0", async (t) => {
    const p = spawnServer(t, { QUANTIX_ADDR: "127.0.0.1:0" });
    const url = await within(p.url, 20_000, "listening");
    const res = await fetch(`${url}/_/health`);
    assert.equal(res.status, 200);
    await res.text();
    assert.ok(p.child.kill("SIGINT"));
    const exit = await within(p.exited, 10_000, "exit after SIGINT");
    assert.deepEqual(exit, { code: 0, signal: null }, p.stderr());
  });

  it("refuses an invalid QUANTIX_ADDR, naming it", async (t) => {
    const p = spawnServer(t, { QUANTIX_ADDR: "localhost:http" });
    const exit = await within(p.exited, 20_000, "exit on a bad QUANTIX_ADDR");
    assert.notEqual(exit.code, 0);
    assert.notEqual(exit.code, null);
    assert.match(p.stderr(), /QUANTIX_ADDR/);
  });

  it("refuses a store it does not have, naming QUANTIX_STORE", async (t) => {
    const p = spawnServer(t, { QUANTIX_ADDR: "127.0.0.1:0", QUANTIX_STORE: "postgres://x" });
    const exit = await within(p.exited, 20_000, "exit on an unavailable QUANTIX_STORE");
    assert.notEqual(exit.code, 0);
    assert.notEqual(exit.code, null);
    assert.match(p.stderr(), /QUANTIX_STORE/);
  });
});
