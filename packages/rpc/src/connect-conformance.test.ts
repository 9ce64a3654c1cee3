import assert from "node:assert/strict";
import type * as http from "node:http";
import type * as http2 from "node:http2";
import { after, before, describe, test } from "node:test";
import { brotliDecompressSync, gunzipSync, gzipSync } from "node:zlib";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { NodeSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { GetNodeRequestSchema, ListNodesResponseSchema, NodeService } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { QuantixError } from "@quantix/core";
import { route, servedByFastPath } from "./index.js";
import { GET_NODE, h1Call, h2Call, startWireServer, type RawReply, type WireServer } from "./testing/wire.js";

// The Connect fast path against connect-node's router (connectFastPath: false), which
// served every Connect call before it: the same requests, raw over HTTP/1.1 and h2c, to
// two servers that differ only in that option must get the same answers (status, the
// headers a client reads, body), and each call must be logged and counted alike. Real
// connect-es clients (HTTP/1.1 and HTTP/2, binary and JSON) check what a client sees.

const LIST_NODES = "/Quantixkvm.compute.v1.NodeService/ListNodes";
const labels = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`label-${i}`, `value ${i} `.repeat(4)]));
const frozen = Object.freeze(create(NodeSchema, { id: "frozen", hostname: "stored" }));
const frozenBig = Object.freeze(create(NodeSchema, { id: "frozen-big", labels }));

/** GetNode by id: each id is one behaviour a Connect call can end with. */
const service = route(NodeService, {
  async getNode(req, ctx) {
    ctx.responseHeader.set("x-fast", String(ctx.values.get(servedByFastPath)));
    switch (req.id) {
      case "meta":
        ctx.responseHeader.set("x-h", "head");
        ctx.responseTrailer.set("x-t", "tail");
        ctx.responseTrailer.append("x-t", "more");
        return create(NodeSchema, { id: req.id, hostname: "h" });
      case "big":
        return create(NodeSchema, { id: req.id, labels });
      case "huge":
        return create(NodeSchema, { id: req.id, hostname: "x".repeat(70 * 1024) });
      case "frozen":
        return frozen;
      case "frozen-big":
        return frozenBig;
      case "init":
        return { id: "init", hostname: "from an init object" };
      case "invalid":
        throw new QuantixError("invalid_argument", "the id is bad", [{ field: "id", reason: "FORMAT", description: "not a uuid" }]);
      case "missing":
        throw new QuantixError("not_found", 'node "missing" not found');
      case "crash":
        throw new Error("a bug with /etc/secret in it");
      case "err-meta":
        throw new ConnectError("with metadata", Code.FailedPrecondition, { "x-err": "1" });
      case "slow":
        await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve, { once: true }));
        throw ctx.signal.reason;
      default:
        return create(NodeSchema, { id: req.id, hostname: "h" });
    }
  },
  listNodes: () => create(ListNodesResponseSchema, { nodes: [frozen, create(NodeSchema, { id: "n-2" })] }),
});

const limits = { readMaxBytes: 1024, writeMaxBytes: 64 * 1024 };
let fast: WireServer;
let router: WireServer;
before(async () => {
  [fast, router] = await Promise.all([startWireServer({ routes: [service], limits }), startWireServer({ routes: [service], limits, connectFastPath: false })]);
});
after(() => Promise.all([fast.server.close(1000), router.server.close(1000)]));

type Headers = Record<string, string>;
interface Case {
  readonly name: string;
  readonly path?: string;
  readonly headers: Headers;
  readonly body: Uint8Array | string;
  /** What the fast path's answer must show besides being the router's (its status). */
  readonly status: number;
}

const bin = (id: string) => toBinary(GetNodeRequestSchema, create(GetNodeRequestSchema, { id }));
const proto = { "content-type": "application/proto" };
const json = { "content-type": "application/json" };
const cases: Case[] = [
  { name: "binary", headers: proto, body: bin("n-1"), status: 200 },
  { name: "JSON", headers: json, body: '{"id":"n-1"}', status: 200 },
  { name: "JSON with a charset, upper case", headers: { "content-type": "Application/JSON; charset=utf-8" }, body: '{"id":"n-1"}', status: 200 },
  { name: "Connect-Protocol-Version 1", headers: { ...proto, "connect-protocol-version": "1" }, body: bin("n-1"), status: 200 },
  { name: "headers and trailers (trailer- prefixed)", headers: json, body: '{"id":"meta"}', status: 200 },
  { name: "an init object as the response", headers: json, body: '{"id":"init"}', status: 200 },
  { name: "a frozen (stored) message, binary", headers: proto, body: bin("frozen"), status: 200 },
  { name: "a frozen (stored) message, JSON", headers: json, body: '{"id":"frozen"}', status: 200 },
  { name: "a frozen message inside a response (ListNodes)", path: LIST_NODES, headers: json, body: "{}", status: 200 },
  { name: "an empty binary request", headers: proto, body: "", status: 200 },
  { name: "an unknown JSON field", headers: json, body: '{"id":"n-1","nope":1}', status: 400 },
  { name: "malformed JSON", headers: json, body: "{", status: 400 },
  { name: "an empty JSON body", headers: json, body: "", status: 400 },
  { name: "undecodable binary", headers: proto, body: Buffer.from([0xff, 0xff, 0xff]), status: 400 },
  { name: "INVALID_ARGUMENT with a BadRequest detail", headers: json, body: '{"id":"invalid"}', status: 400 },
  { name: "NOT_FOUND", headers: proto, body: bin("missing"), status: 404 },
  { name: "an internal error", headers: json, body: '{"id":"crash"}', status: 500 },
  { name: "an error with metadata", headers: json, body: '{"id":"err-meta"}', status: 400 },
  { name: "a deadline (connect-timeout-ms)", headers: { ...json, "connect-timeout-ms": "50" }, body: '{"id":"slow"}', status: 504 },
  { name: "a malformed connect-timeout-ms (the router)", headers: { ...json, "connect-timeout-ms": "soon" }, body: '{"id":"n-1"}', status: 400 },
  { name: "gzip accepted, a large response", headers: { ...json, "accept-encoding": "gzip" }, body: '{"id":"big"}', status: 200 },
  { name: "br then gzip accepted", headers: { ...proto, "accept-encoding": "br, gzip" }, body: bin("big"), status: 200 },
  // Twice each: the second answer is the compressed body the fast path cached for the stored message.
  { name: "gzip accepted, a large frozen response (JSON)", headers: { ...json, "accept-encoding": "gzip" }, body: '{"id":"frozen-big"}', status: 200 },
  { name: "gzip accepted, a large frozen response (JSON), again", headers: { ...json, "accept-encoding": "gzip" }, body: '{"id":"frozen-big"}', status: 200 },
  { name: "br accepted, a large frozen response (binary)", headers: { ...proto, "accept-encoding": "br" }, body: bin("frozen-big"), status: 200 },
  { name: "br accepted, a large frozen response (binary), again", headers: { ...proto, "accept-encoding": "br" }, body: bin("frozen-big"), status: 200 },
  { name: "an unknown encoding accepted", headers: { ...json, "accept-encoding": "zstd" }, body: '{"id":"big"}', status: 200 },
  { name: "gzip accepted, a small response", headers: { ...json, "accept-encoding": "gzip" }, body: '{"id":"n-1"}', status: 200 },
  { name: "a request larger than readMaxBytes", headers: json, body: JSON.stringify({ id: "x".repeat(2000) }), status: 429 },
  { name: "a response larger than writeMaxBytes", headers: proto, body: bin("huge"), status: 429 },
  { name: "a gzip-compressed request (the router)", headers: { ...json, "content-encoding": "gzip" }, body: gzipSync('{"id":"n-1"}'), status: 200 },
  { name: "an unknown request encoding (the router)", headers: { ...json, "content-encoding": "zstd" }, body: '{"id":"n-1"}', status: 501 },
  { name: "a content type Connect does not know (the router)", headers: { "content-type": "text/plain" }, body: "x", status: 415 },
  { name: "no content type (the router)", headers: {}, body: "x", status: 415 },
  { name: "an unknown method (the router's fallback)", path: "/Quantixkvm.compute.v1.NodeService/Nope", headers: json, body: "{}", status: 404 },
];

/** The headers a Connect client reads: all but the connection's own (date, keep-alive) and which path served the call. */
function relevant(r: RawReply): Headers {
  const out: Headers = {};
  for (const [k, v] of Object.entries(r.headers)) if (!["date", "connection", "keep-alive", "x-fast", ":status"].includes(k)) out[k] = v;
  return out;
}

/** The body as a client reads it (a compressed one decompressed, so both sides' bytes compare). */
function decoded(r: RawReply): string {
  const e = r.headers["content-encoding"];
  return (e === "gzip" ? gunzipSync(r.body) : e === "br" ? brotliDecompressSync(r.body) : r.body).toString("base64");
}

const h1 = (url: string, c: Case) => h1Call(url, c.path ?? GET_NODE, c.headers as http.OutgoingHttpHeaders, c.body);
// Over h2c without a content-length (as a streaming client sends): limits apply while reading.
const h2 = (url: string, c: Case) => h2Call(url, c.path ?? GET_NODE, c.headers as http2.OutgoingHttpHeaders, typeof c.body === "string" ? Buffer.from(c.body) : c.body);

for (const [version, call] of [["HTTP/1.1", h1], ["h2c", h2]] as const) {
  describe(`Connect unary over ${version}: the fast path answers as connect-node's router`, () => {
    for (const c of cases) {
      test(c.name, async () => {
        const [a, b] = await Promise.all([call(fast.server.url, c), call(router.server.url, c)]);
        assert.equal(a.status, c.status, `${a.status} ${a.body.toString()}`);
        assert.equal(a.status, b.status);
        assert.deepEqual(relevant(a), relevant(b));
        assert.equal(decoded(a), decoded(b));
        if (a.headers["x-fast"] !== undefined) assert.equal(a.headers["x-fast"], String(!c.name.includes("the router")));
      });
    }
  });
}

test("the fast path's answers are the router's in the log and the metrics too: one line and one count per call, with the same code", async () => {
  const summary = (w: WireServer) =>
    w.lines
      .filter((l) => l.msg === "rpc" || l.msg.startsWith("rpc "))
      .map((l) => `${String(l.fields["procedure"])} ${String(l.fields["code"])}`)
      .sort();
  assert.ok(summary(fast).length >= cases.length, summary(fast).join("\n"));
  assert.deepEqual(summary(fast), summary(router));
  assert.deepEqual(await fast.metrics.registry.getSingleMetricAsString("quantix_rpc_calls_total").then(counts), await router.metrics.registry.getSingleMetricAsString("quantix_rpc_calls_total").then(counts));
});

/** The sample lines of a counter, values included, without the HELP and TYPE lines. */
function counts(text: string): string[] {
  return text
    .split("\n")
    .filter((l) => l && !l.startsWith("#"))
    .sort();
}

test("an HTTP/1.1 connection is kept after a call the fast path answers, and closed after a request it did not read to its end", async () => {
  const { Agent } = await import("node:http");
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    const ok = await h1Call(fast.server.url, GET_NODE, json, '{"id":"n-1"}', agent);
    assert.equal(ok.headers["connection"], "keep-alive");
    const big = await h1Call(fast.server.url, GET_NODE, json, JSON.stringify({ id: "x".repeat(2000) }), agent);
    assert.equal(big.status, 429);
    assert.equal(big.headers["connection"], "close");
    const again = await h1Call(fast.server.url, GET_NODE, json, '{"id":"n-2"}', agent);
    assert.equal(again.status, 200);
  } finally {
    agent.destroy();
  }
});

const clients = {
  "HTTP/1.1, JSON": { httpVersion: "1.1", useBinaryFormat: false },
  "HTTP/1.1, binary": { httpVersion: "1.1", useBinaryFormat: true },
  "HTTP/2, JSON": { httpVersion: "2", useBinaryFormat: false },
  "HTTP/2, binary": { httpVersion: "2", useBinaryFormat: true },
} as const;

for (const [name, o] of Object.entries(clients)) {
  describe(`a connect-es client (${name}) on the fast path`, () => {
    const client = () => createClient(NodeService, createConnectTransport({ baseUrl: fast.server.url, ...o }));

    test("a call, its headers and trailers", async () => {
      let header: Headers = {};
      let trailer: Headers = {};
      const n = await client().getNode({ id: "meta" }, { onHeader: (h) => (header = Object.fromEntries(h)), onTrailer: (t) => (trailer = Object.fromEntries(t)) });
      assert.deepEqual([n.id, n.hostname], ["meta", "h"]);
      assert.equal(header["x-fast"], "true");
      assert.equal(header["x-h"], "head");
      assert.equal(trailer["x-t"], "tail, more");
    });

    test("a large response, compressed (the client accepts gzip and br)", async () => {
      const n = await client().getNode({ id: "big" });
      assert.deepEqual(n.labels, labels);
    });

    test("an error with its detail", async () => {
      const err = await client()
        .getNode({ id: "invalid" })
        .then(() => assert.fail("the call succeeded"), (e: unknown) => ConnectError.from(e));
      assert.equal(err.code, Code.InvalidArgument);
      assert.equal(err.rawMessage, "the id is bad");
      assert.deepEqual(err.findDetails(BadRequestSchema)[0]?.fieldViolations.map((v) => [v.field, v.description]), [["id", "not a uuid"]]);
    });

    test("a deadline the server enforces", async () => {
      const err = await client()
        .getNode({ id: "slow" }, { timeoutMs: 100 })
        .then(() => assert.fail("the call succeeded"), (e: unknown) => ConnectError.from(e));
      assert.equal(err.code, Code.DeadlineExceeded);
    });
  });
}
