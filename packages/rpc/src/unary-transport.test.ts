import assert from "node:assert/strict";
import * as http2 from "node:http2";
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { NodeSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { NodeService, NodeUpdateSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { QuantixError } from "@quantix/core";
import { route } from "./routes.js";
import { startRpcServer, type RpcServer } from "./rpc-server.js";
import { silentLogger } from "./log/logger.js";
import { frame } from "./testing/wire.js";
import { withLeanUnary } from "./unary-transport.js";

// The lean unary calls against connect-node's own transport, on one HTTP/2 session: every
// answer and every failure must come out the same (code, message, details), whatever the
// server sends, since the control plane reads agents' errors by their codes.

const service = route(NodeService, {
  async getNode(req, ctx) {
    if (req.id === "slow") await new Promise((resolve) => setTimeout(resolve, 5000, undefined).unref());
    if (req.id === "missing") throw new QuantixError("not_found", "node 'missing' not found", [{ field: "id", description: "no node has this id", reason: "NOT_FOUND" }]);
    if (req.id === "big") return create(NodeSchema, { id: req.id, hostname: "h".repeat(200_000) });
    if (ctx.requestHeader.get("x-test") === "echo") return create(NodeSchema, { id: req.id, hostname: "echoed" });
    if (req.id === "headers") {
      const h = ctx.requestHeader;
      // The deadline as the server read it, to the second (it counts down in flight).
      const timeout = h.get("grpc-timeout");
      return create(NodeSchema, { id: req.id, hostname: JSON.stringify([h.get("content-type"), h.get("user-agent"), h.get("te"), timeout === null ? null : Math.round(Number.parseInt(timeout, 10) / 1000)]) });
    }
    return create(NodeSchema, { id: req.id, hostname: `host-of-${req.id}` });
  },
  async *watchNodes() {
    yield create(NodeUpdateSchema, { type: EventType.SYNCED });
  },
});

let server: RpcServer;
let sessions: Http2SessionManager;
let lean: Client<typeof NodeService>;
let plain: Client<typeof NodeService>;

before(async () => {
  server = await startRpcServer({ host: "127.0.0.1", port: 0, routes: [service], log: silentLogger });
  sessions = new Http2SessionManager(server.url, { pingIntervalMs: 5000, pingTimeoutMs: 3000, idleConnectionTimeoutMs: 60_000 });
  const base = createGrpcTransport({ baseUrl: server.url, sessionManager: sessions });
  lean = createClient(NodeService, withLeanUnary(base, sessions));
  plain = createClient(NodeService, base);
});
after(async () => {
  sessions.abort();
  await server.close(1000);
});

const show = (x: unknown) => JSON.stringify(x, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));

/** What a call ended with: its answer's fields, or its error's code, message and details. */
async function outcome<T>(call: Promise<T>): Promise<unknown> {
  try {
    return { ok: await call };
  } catch (err) {
    assert.ok(err instanceof ConnectError, `not a ConnectError: ${String(err)}`);
    return { code: Code[err.code], message: err.rawMessage, details: err.details.length };
  }
}

describe("against our server, the same outcome as connect-node's transport", () => {
  test("an answer", async () => {
    const [a, b] = [await outcome(lean.getNode({ id: "n1" })), await outcome(plain.getNode({ id: "n1" }))];
    assert.deepEqual(a, b);
    assert.equal((a as { ok: { hostname: string } }).ok.hostname, "host-of-n1");
  });

  test("the request headers of a call without its own, and the answer's headers and trailers, as connect-node's", async () => {
    const seen = async (client: Client<typeof NodeService>, timeoutMs?: number) => {
      const got: { header?: [string, string][]; trailer?: [string, string][] } = {};
      const entries = (h: Headers) => [...h.entries()].filter(([k]) => k !== "date").sort();
      const r = await client.getNode({ id: "headers" }, { ...(timeoutMs ? { timeoutMs } : {}), onHeader: (h) => (got.header = entries(h)), onTrailer: (t) => (got.trailer = entries(t)) });
      return { request: r.hostname, ...got };
    };
    for (const timeoutMs of [undefined, 60_000]) {
      const [a, b] = [await seen(lean, timeoutMs), await seen(plain, timeoutMs)];
      assert.deepEqual(a, b);
      assert.ok(a.header?.some(([k]) => k === "content-type"), "the answer's headers are given");
      assert.deepEqual(a.trailer?.find(([k]) => k === "grpc-status"), ["grpc-status", "0"]);
    }
  });

  test("request headers reach the server", async () => {
    const r = await lean.getNode({ id: "n1" }, { headers: { "x-test": "echo" } });
    assert.equal(r.hostname, "echoed");
  });

  test("an error with its code, message and details", async () => {
    const [a, b] = [await outcome(lean.getNode({ id: "missing" })), await outcome(plain.getNode({ id: "missing" }))];
    assert.deepEqual(a, b);
    assert.deepEqual(a, { code: "NotFound", message: "node 'missing' not found", details: 1 });
  });

  test("a deadline", async () => {
    const [a, b] = [await outcome(lean.getNode({ id: "slow" }, { timeoutMs: 100 })), await outcome(plain.getNode({ id: "slow" }, { timeoutMs: 100 }))];
    assert.equal((a as { code: string }).code, "DeadlineExceeded");
    assert.deepEqual(a, b);
  });

  test("the caller's abort, before and during the call", async () => {
    const early = new AbortController();
    early.abort();
    assert.deepEqual(await outcome(lean.getNode({ id: "n1" }, { signal: early.signal })), await outcome(plain.getNode({ id: "n1" }, { signal: early.signal })));
    const during = () => {
      const c = new AbortController();
      setTimeout(() => c.abort(), 50);
      return c.signal;
    };
    const [a, b] = [await outcome(lean.getNode({ id: "slow" }, { signal: during() })), await outcome(plain.getNode({ id: "slow" }, { signal: during() }))];
    assert.equal((a as { code: string }).code, "Canceled");
    assert.deepEqual(a, b);
  });

  test("a response larger than readMaxBytes is refused, and the session still serves the next call", async () => {
    const small = createClient(NodeService, withLeanUnary(createGrpcTransport({ baseUrl: server.url, sessionManager: sessions }), sessions, { readMaxBytes: 100_000 }));
    const a = await outcome(small.getNode({ id: "big" }));
    assert.equal((a as { code: string }).code, "ResourceExhausted", JSON.stringify(a));
    assert.equal((await lean.getNode({ id: "big" })).hostname.length, 200_000);
    assert.equal((await small.getNode({ id: "n2" })).id, "n2");
  });

  test("streaming calls go through the base transport", async () => {
    const updates = [];
    for await (const u of lean.watchNodes({})) {
      updates.push(u);
      break;
    }
    assert.equal(updates[0]?.type, EventType.SYNCED);
  });

  test("many calls at once on the session", async () => {
    const ids = Array.from({ length: 200 }, (_, i) => `n${i}`);
    const got = await Promise.all(ids.map((id) => lean.getNode({ id })));
    assert.deepEqual(
      got.map((n) => n.hostname),
      ids.map((id) => `host-of-${id}`),
    );
  });
});

describe("against a server that misbehaves, the codes connect-node gives", () => {
  type Behaviour = (stream: http2.ServerHttp2Stream) => void;
  let raw: http2.Http2Server;
  let url = "";
  let behave: Behaviour = () => undefined;
  let rawSessions: Http2SessionManager;
  let rawLean: Transport;
  let rawPlain: Transport;
  const node = Buffer.from(toBinary(NodeSchema, create(NodeSchema, { id: "x" })));

  before(async () => {
    raw = http2.createServer();
    raw.on("stream", (stream) => {
      stream.on("data", () => undefined);
      stream.on("error", () => undefined); // the server's own resets (close with a code) end its side with an error
      stream.on("end", () => behave(stream));
    });
    await new Promise<void>((resolve) => raw.listen(0, "127.0.0.1", resolve));
    url = `http://127.0.0.1:${(raw.address() as AddressInfo).port}`;
    rawSessions = new Http2SessionManager(url, { pingIntervalMs: 5000, pingTimeoutMs: 3000, idleConnectionTimeoutMs: 60_000 });
    const base = createGrpcTransport({ baseUrl: url, sessionManager: rawSessions });
    rawLean = withLeanUnary(base, rawSessions);
    rawPlain = base;
  });
  after(async () => {
    rawSessions.abort();
    await new Promise((resolve) => raw.close(resolve));
  });

  const both = async (b: Behaviour) => {
    behave = b;
    const [a, p] = [await outcome(createClient(NodeService, rawLean).getNode({ id: "x" })), await outcome(createClient(NodeService, rawPlain).getNode({ id: "x" }))];
    return { a, p };
  };
  const ok = (s: http2.ServerHttp2Stream, body: Buffer, trailers: http2.OutgoingHttpHeaders = { "grpc-status": "0" }) => {
    s.respond({ ":status": 200, "content-type": "application/grpc+proto" }, { waitForTrailers: true });
    s.on("wantTrailers", () => s.sendTrailers(trailers));
    s.end(body);
  };

  const cases: [string, Behaviour, string][] = [
    ["an answer", (s) => ok(s, frame(node)), "ok"],
    ["HTTP 503", (s) => (s.respond({ ":status": 503 }), s.end()), "Unavailable"],
    ["HTTP 404", (s) => (s.respond({ ":status": 404 }), s.end()), "Unimplemented"],
    ["a content type that is not gRPC", (s) => (s.respond({ ":status": 200, "content-type": "text/html" }), s.end("<html>")), "Unknown"],
    ["a trailers-only error", (s) => (s.respond({ ":status": 200, "content-type": "application/grpc+proto", "grpc-status": "5", "grpc-message": "no%20such%20node" }, { endStream: true })), "NotFound"],
    ["a message without a status", (s) => (s.respond({ ":status": 200, "content-type": "application/grpc+proto" }), s.end(frame(node))), "Internal"],
    ["two messages", (s) => ok(s, Buffer.concat([frame(node), frame(node)])), "Unimplemented"],
    ["no message with status 0", (s) => ok(s, Buffer.alloc(0)), "Unimplemented"],
    ["an error status after a message", (s) => ok(s, frame(node), { "grpc-status": "13", "grpc-message": "broke" }), "Internal"],
    ["the stream refused (RST_STREAM REFUSED_STREAM), which is safe to retry", (s) => s.close(http2.constants.NGHTTP2_REFUSED_STREAM), "Unavailable"],
    ["the stream reset with an internal error", (s) => s.close(http2.constants.NGHTTP2_INTERNAL_ERROR), "Internal"],
  ];
  for (const [name, b, want] of cases) {
    test(`${name}: ${want}`, async () => {
      const { a, p } = await both(b);
      if (want === "ok") assert.ok("ok" in (a as object), show(a));
      else assert.equal((a as { code: string }).code, want, show(a));
      // connect-node reads the error event a reset brings before the close that names its code.
      if (name.includes("REFUSED_STREAM")) assert.equal((p as { code?: string }).code, "Internal", `connect-node: ${show(p)}`);
      else assert.equal((a as { code?: string }).code, (p as { code?: string }).code, `connect-node: ${show(p)}`);
    });
  }

  test("a compressed message, which was not asked for: Internal", async () => {
    const { a } = await both((s) => ok(s, frame(node, 1)));
    assert.equal((a as { code: string }).code, "Internal", JSON.stringify(a));
  });

  test("a cut frame: Internal", async () => {
    const { a } = await both((s) => ok(s, frame(node).subarray(0, 7)));
    assert.equal((a as { code: string }).code, "Internal", JSON.stringify(a));
  });

  test("a deadline while the session is still being made (a TLS handshake that never ends): DeadlineExceeded", async () => {
    const silent = net.createServer(() => undefined);
    const sockets: net.Socket[] = [];
    silent.on("connection", (c) => sockets.push(c));
    await new Promise<void>((resolve) => silent.listen(0, "127.0.0.1", resolve));
    const at = `https://127.0.0.1:${(silent.address() as AddressInfo).port}`;
    const stuck = new Http2SessionManager(at, { pingIntervalMs: 5000, pingTimeoutMs: 3000, idleConnectionTimeoutMs: 60_000 });
    const base = createGrpcTransport({ baseUrl: at, sessionManager: stuck });
    try {
      const t0 = performance.now();
      const a = await outcome(createClient(NodeService, withLeanUnary(base, stuck)).getNode({ id: "x" }, { timeoutMs: 200 }));
      const took = performance.now() - t0;
      assert.equal((a as { code: string }).code, "DeadlineExceeded", show(a));
      assert.ok(took < 5000, `answered after ${took.toFixed(0)} ms`);
      assert.deepEqual(a, await outcome(createClient(NodeService, base).getNode({ id: "x" }, { timeoutMs: 200 })));
    } finally {
      stuck.abort();
      for (const c of sockets) c.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });

  test("no server at the address: Unavailable", async () => {
    const dead = new Http2SessionManager("http://127.0.0.1:1", { pingIntervalMs: 5000, pingTimeoutMs: 3000, idleConnectionTimeoutMs: 60_000 });
    const base = createGrpcTransport({ baseUrl: "http://127.0.0.1:1", sessionManager: dead });
    const [a, p] = [await outcome(createClient(NodeService, withLeanUnary(base, dead)).getNode({ id: "x" })), await outcome(createClient(NodeService, base).getNode({ id: "x" }))];
    assert.equal((a as { code: string }).code, "Unavailable", JSON.stringify(a));
    assert.deepEqual(a, p);
    dead.abort();
  });
});
