import assert from "node:assert/strict";
import * as http2 from "node:http2";
import * as net from "node:net";
import { after, before, describe, test } from "node:test";
import { until } from "@quantix/testing";
import { frame, GET_NODE, getNodeBytes, RawH2, startWireServer, type RawReply, type WireServer } from "./testing/wire.js";

// Idle and slow connections are closed, and one client address cannot hold every
// connection: a few hundred idle h2c connections (client preface and SETTINGS only) from
// one address lock no one else out. Small limits here; the defaults are minutes and 1024.

/** A gRPC GetNode from another loopback address (Linux routes all of 127/8 to lo). */
function callFrom(localAddress: string, port: number): Promise<RawReply["grpcStatus"]> {
  const session = http2.connect(`http://127.0.0.1:${port}`, { createConnection: () => net.connect({ host: "127.0.0.1", port, localAddress }) });
  session.on("error", () => undefined);
  return new Promise<RawReply["grpcStatus"]>((resolve, reject) => {
    const req = session.request({ ":method": "POST", ":path": GET_NODE, "content-type": "application/grpc", te: "trailers" });
    let status: string | undefined;
    req.on("response", (h) => (status = h["grpc-status"] as string | undefined));
    req.on("trailers", (t) => (status = t["grpc-status"] as string | undefined));
    req.on("data", () => undefined);
    req.on("end", () => resolve(status));
    req.on("error", reject);
    req.setTimeout(3000, () => req.destroy(new Error("no answer within 3 s")));
    req.end(frame(getNodeBytes("n")));
  }).finally(() => session.close());
}

/** Opens `n` idle h2c connections: each sends the preface and SETTINGS, then nothing. */
async function idleConnections(port: number, n: number): Promise<RawH2[]> {
  const out: RawH2[] = [];
  for (let i = 0; i < n; i += 50) out.push(...(await Promise.all(Array.from({ length: Math.min(50, n - i) }, () => RawH2.open(port)))));
  return out;
}

describe("a per-source connection limit", () => {
  let w: WireServer;
  let held: RawH2[] = [];
  before(async () => {
    w = await startWireServer({ limits: { maxConnectionsPerSource: 100, idleTimeoutMs: 60_000, headersTimeoutMs: 60_000 } });
  });
  after(async () => {
    for (const h of held) h.close();
    await w.server.close(1000);
  });

  test("300 idle connections from one address: 100 are kept, the rest closed at once, and other clients are served", async () => {
    held = await idleConnections(w.server.port, 300);
    await until(() => (held.filter((h) => h.closed).length === 200 ? true : undefined), "200 connections refused", 5000);
    assert.equal(await callFrom("127.0.0.2", w.server.port), "0");
  });

  test("a connection from the same address is refused until one of its connections closes", async () => {
    assert.notEqual(await callFrom("127.0.0.1", w.server.port).catch(() => "refused"), "0");
    for (const h of held.filter((x) => !x.closed).slice(0, 1)) h.close();
    await until(async () => ((await callFrom("127.0.0.1", w.server.port).catch(() => undefined)) === "0" ? true : undefined), "a slot to free up", 5000);
  });
});

describe("idle and slow connections", () => {
  let w: WireServer;
  before(async () => {
    w = await startWireServer({ limits: { idleTimeoutMs: 400, headersTimeoutMs: 400 } });
  });
  after(() => w.server.close(1000));

  test("200 h2c connections that never send a request are closed", async () => {
    const idle = await idleConnections(w.server.port, 200);
    try {
      await until(() => (idle.every((h) => h.closed) ? true : undefined), "every idle connection closed", 5000);
    } finally {
      for (const h of idle) h.close();
    }
  });

  test("an h2c connection idle after its requests gets a GOAWAY and is closed", async () => {
    const h = await RawH2.open(w.server.port);
    try {
      h.sendHeaders(1, "/_/nothing", {}, true);
      await until(() => (h.closed ? true : undefined), "the idle connection closed", 5000);
    } finally {
      h.close();
    }
  });

  test("an h2c connection that keeps calling more often than the idle timeout stays open, and is closed once it stops", async () => {
    const session = http2.connect(`http://127.0.0.1:${w.server.port}`);
    session.on("error", () => undefined);
    let closed = false;
    session.on("close", () => (closed = true));
    const call = () =>
      new Promise<void>((resolve, reject) => {
        const req = session.request({ ":method": "POST", ":path": GET_NODE, "content-type": "application/grpc", te: "trailers" });
        req.on("data", () => undefined);
        req.on("end", resolve);
        req.on("error", reject);
        req.end(frame(getNodeBytes("n")));
      });
    try {
      // 1.5 s of a call every 150 ms: several idle timeouts (400 ms) and sweeps long.
      for (const end = Date.now() + 1500; Date.now() < end; ) {
        await call();
        await new Promise((r) => setTimeout(r, 150));
      }
      assert.equal(closed, false, "a busy connection is not idle");
      await until(() => (closed ? true : undefined), "the connection closed once idle", 5000);
    } finally {
      session.destroy();
    }
  });

  test("an HTTP/1.1 connection that sends part of its headers and stops is closed", async () => {
    const s = net.connect(w.server.port, "127.0.0.1");
    let closed = false;
    s.on("close", () => (closed = true));
    s.on("error", () => undefined);
    s.resume();
    s.write("POST /Quantixkvm.compute.v1.NodeService/GetNode HTTP/1.1\r\nHost: x\r\n");
    try {
      await until(() => (closed ? true : undefined), "the slow connection closed", 5000);
    } finally {
      s.destroy();
    }
  });

  test("a connection that says nothing is closed", async () => {
    const s = net.connect(w.server.port, "127.0.0.1");
    let closed = false;
    s.on("close", () => (closed = true));
    s.on("error", () => undefined);
    s.resume();
    try {
      await until(() => (closed ? true : undefined), "the silent connection closed", 5000);
    } finally {
      s.destroy();
    }
  });
});
