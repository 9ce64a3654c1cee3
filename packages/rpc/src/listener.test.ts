import assert from "node:assert/strict";
import * as http from "node:http";
import * as http2 from "node:http2";
import { after, before, describe, test } from "node:test";
import { until } from "@quantix/testing";
import { connectEndStream, frame, GET_NODE, getNodeBytes, h1Call, h2Call, H2, RawH2, startWireServer, WATCH_NODES, type WireServer } from "./testing/wire.js";

// The listener's defences against clients that break HTTP/2 or hold connections, seen
// from the wire with hand-driven connections.

describe("an HTTP/2 request header list over the limit", () => {
  let w: WireServer;
  before(async () => {
    w = await startWireServer();
  });
  after(() => w.server.close(1000));

  test("the limit is advertised in SETTINGS (SETTINGS_MAX_HEADER_LIST_SIZE)", async () => {
    const h = await RawH2.open(w.server.port);
    try {
      const settings = await until(() => h.settings(), "the server's SETTINGS");
      assert.equal(settings.get(0x6), 64 * 1024);
    } finally {
      h.close();
    }
  });

  test("one header field over 64 KiB: the server's GOAWAY is followed by closing the connection, promptly", async () => {
    const h = await RawH2.open(w.server.port);
    try {
      await until(() => h.settings(), "the server's SETTINGS");
      const t0 = Date.now();
      h.sendHeaders(1, GET_NODE, { "content-type": "application/grpc", te: "trailers", "x-big": "a".repeat(100 * 1024) });
      await until(() => (h.closed ? true : undefined), "the server to close the connection", 8000);
      assert.ok(h.frames.some((f) => f.type === H2.GOAWAY), "a GOAWAY came first");
      assert.ok(Date.now() - t0 < 8000, "well before a client deadline of tens of seconds");
    } finally {
      h.close();
    }
  });

  test("several fields over 64 KiB in all: the stream is reset at once; the server keeps serving", async () => {
    const h = await RawH2.open(w.server.port);
    try {
      h.sendHeaders(1, GET_NODE, { "content-type": "application/grpc", te: "trailers", "x-a": "a".repeat(40 * 1024), "x-b": "b".repeat(40 * 1024) });
      await until(() => h.frames.find((f) => f.type === H2.RST_STREAM && f.stream === 1), "the stream's reset", 5000);
    } finally {
      h.close();
    }
    const ok = await h2Call(w.server.url, GET_NODE, { "content-type": "application/grpc", te: "trailers" }, frame(getNodeBytes("after")));
    assert.equal(ok.grpcStatus, "0");
  });
});

describe("a request refused as too large", () => {
  let w: WireServer;
  before(async () => {
    w = await startWireServer({ limits: { readMaxBytes: 1024 } });
  });
  after(() => w.server.close(1000));

  const big = frame(getNodeBytes("x".repeat(1024 * 1024)));
  const h1Protocols = {
    "gRPC-Web": { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" },
    "gRPC over HTTP/1.1": { "content-type": "application/grpc", te: "trailers" },
    "Connect streaming": { "content-type": "application/connect+proto", "connect-protocol-version": "1" },
  };
  for (const [name, headers] of Object.entries(h1Protocols)) {
    test(`${name} over an HTTP/1.1 keep-alive connection: the next request on it is answered at once`, async () => {
      const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
      try {
        const path = name === "Connect streaming" ? WATCH_NODES : GET_NODE;
        const refused = await h1Call(w.server.url, path, headers, big, agent);
        assert.equal(refused.status, 200);
        const t0 = Date.now();
        const next = await h1Call(w.server.url, "/Quantixkvm.compute.v1.NodeService/GetNode", { "content-type": "application/json" }, '{"id":"next"}', agent, 3000);
        assert.equal(next.status, 200, next.body.toString());
        assert.ok(Date.now() - t0 < 3000);
      } finally {
        agent.destroy();
      }
    });
  }

  test("Connect streaming over h2c: the error frame comes and the stream is closed, though the client has more to send", async () => {
    const session = http2.connect(w.server.url);
    session.on("error", () => undefined);
    try {
      const req = session.request({ ":method": "POST", ":path": WATCH_NODES, "content-type": "application/connect+proto", "connect-protocol-version": "1" });
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("error", () => undefined);
      req.end(big);
      await until(() => (req.closed ? true : undefined), "the stream to close", 3000);
      assert.equal(connectEndStream(Buffer.concat(chunks)).error?.code, "resource_exhausted", Buffer.concat(chunks).toString());
    } finally {
      session.destroy();
    }
  });
});
