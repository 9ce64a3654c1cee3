import assert from "node:assert/strict";
import { describe, it, type TestContext } from "node:test";

import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import * as grpc from "@grpc/grpc-js";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { VMService, VmUpdateSchema, WatchVMsRequestSchema, type VmUpdate, type WatchVMsRequest } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { spawnControlPlane, synced, until, within, type ControlPlaneProcess } from "@quantix/testing";

// The real binary in a child process: signals, exit codes and configuration errors.

const DEMO_NAMES = ["cache-server", "db-server-01", "dev-workstation", "web-server-01"];

/** Starts the real binary; SIGKILLed after the test if still running. */
function spawnServer(t: TestContext, quantixEnv: Record<string, string>): ControlPlaneProcess {
  const p = spawnControlPlane(quantixEnv);
  t.after(() => p.kill());
  return p;
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
    const p = spawnServer(t, { QUANTIX_ADDR: "127.0.0.1:0", QUANTIX_STORE: "memory" });
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
    const p = spawnServer(t, { QUANTIX_ADDR: "127.0.0.1:0", QUANTIX_STORE: "memory" });
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

  it("refuses a store it does not know, naming QUANTIX_STORE", async (t) => {
    const p = spawnServer(t, { QUANTIX_ADDR: "127.0.0.1:0", QUANTIX_STORE: "mysql://x" });
    const exit = await within(p.exited, 20_000, "exit on an unavailable QUANTIX_STORE");
    assert.notEqual(exit.code, 0);
    assert.notEqual(exit.code, null);
    assert.match(p.stderr(), /QUANTIX_STORE/);
  });
});
