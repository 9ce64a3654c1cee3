import assert from "node:assert/strict";
import * as http from "node:http";
import * as http2 from "node:http2";
import { after, before, describe, test } from "node:test";
import { brotliDecompressSync, gunzipSync, gzipSync } from "node:zlib";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { NodeSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { GetNodeRequestSchema, ListNodesResponseSchema, NodeService, NodeUpdateSchema, WatchNodesRequestSchema, type NodeUpdate } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { PushIterable, QuantixError } from "@quantix/core";
import { until } from "@quantix/testing";
import { route, servedByFastPath } from "./index.js";
import { frame, GET_NODE, h1Call, h2Call, startWireServer, WATCH_NODES, type RawReply, type WireServer } from "./testing/wire.js";

// The Connect fast path against connect-node's router (connectFastPath: false), which
// served every Connect call before it: the same requests, raw over HTTP/1.1 and h2c, to
// two servers that differ only in that option must get the same answers (status, the
// headers a client reads, body), and each call must be logged and counted alike. Real
// connect-es clients (HTTP/1.1 and HTTP/2, binary and JSON) check what a client sees.

const LIST_NODES = "/Quantixkvm.compute.v1.NodeService/ListNodes";
const labels = Object.fromEntries(Array.from({ length: 200 }, (_, i) => [`label-${i}`, `value ${i} `.repeat(4)]));
const frozen = Object.freeze(create(NodeSchema, { id: "frozen", hostname: "stored" }));
const frozenBig = Object.freeze(create(NodeSchema, { id: "frozen-big", labels }));
const update = (id: string, rv: number, node?: typeof frozen) => create(NodeUpdateSchema, { type: EventType.MODIFIED, node: node ?? create(NodeSchema, { id }), resourceVersion: BigInt(rv) });
/** A shared (frozen) update, as a watch fan-out hands one to every watcher. */
const sharedUpdate = Object.freeze(update("shared", 7, frozen));
/** How many messages the "many" stream has produced so far. */
const produced = { count: 0 };
/** Push-fed watches (the store's) that are open now, by the label "watch": one is released when its stream stops it. */
const openWatches = new Map<string, number>();

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
  // WatchNodes by the label "case": each is one way a Connect stream can go.
  watchNodes(req, ctx) {
    ctx.responseHeader.set("x-fast", String(ctx.values.get(servedByFastPath)));
    const kind = req.labels["case"] ?? "";
    if (kind === "push" || kind === "push-open") {
      // As the store's watches: a snapshot pushed in one batch, then changes, from a PushIterable.
      const key = req.labels["watch"] ?? "";
      return new PushIterable<NodeUpdate>((sink) => {
        openWatches.set(key, (openWatches.get(key) ?? 0) + 1);
        sink.push([update("a", 1), sharedUpdate, update("b", 2)]);
        const timer = setTimeout(() => {
          sink.push([update("c", 3)]);
          if (kind === "push") sink.end();
        }, 1);
        return () => {
          clearTimeout(timer);
          openWatches.set(key, (openWatches.get(key) ?? 0) - 1);
        };
      });
    }
    return (async function* () {
      switch (kind) {
        case "meta":
          ctx.responseHeader.set("x-h", "head");
          ctx.responseTrailer.set("x-t", "tail");
          ctx.responseTrailer.append("x-t", "more");
          yield update("meta", 1);
          // Set after the headers went out: only the router's untilFirst-timing would differ here.
          ctx.responseTrailer.set("x-late", "1");
          return;
        case "error-first":
          ctx.responseHeader.set("x-h", "before the error");
          throw new QuantixError("not_found", 'node "gone" not found');
        case "error-after":
          yield update("a", 1);
          yield sharedUpdate;
          throw new QuantixError("invalid_argument", "the labels are bad", [{ field: "labels", reason: "FORMAT", description: "no" }]);
        case "crash":
          yield update("a", 1);
          throw new Error("a bug with /etc/secret in it");
        case "err-meta":
          throw new ConnectError("with metadata", Code.FailedPrecondition, { "x-err": "1" });
        case "big":
          yield update("big", 1, create(NodeSchema, { id: "big", labels }));
          yield update("small", 2);
          yield update("frozen-big", 3, frozenBig);
          return;
        case "huge":
          yield update("a", 1);
          yield update("huge", 2, create(NodeSchema, { id: "huge", hostname: "x".repeat(70 * 1024) }));
          return;
        case "slow":
          yield update("a", 1);
          await new Promise((resolve) => (ctx.signal.aborted ? resolve(undefined) : ctx.signal.addEventListener("abort", resolve, { once: true })));
          throw ctx.signal.reason;
        case "empty":
          return;
        case "many":
          // A pulled stream of 2,000 32 KiB messages (64 MiB), counting how far the producer got.
          for (let i = 0; i < 2000; i++) {
            produced.count = i + 1;
            yield update(`m-${i}`, i + 1, create(NodeSchema, { id: `m-${i}`, hostname: "x".repeat(32 * 1024) }));
          }
          return;
        default:
          yield update("a", 1);
          yield sharedUpdate;
          yield create(NodeUpdateSchema, { type: EventType.SYNCED });
      }
    })();
  },
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
  /**
   * A binary stream whose messages hold a stored (frozen) message inside one that is not:
   * the fast path appends the stored message's cached bytes (encode-cache.ts), the same
   * message with its fields in another order, so its bytes are compared decoded.
   */
  readonly reordered?: true;
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

const watchBin = (kind: string, extra: Record<string, string> = {}) => toBinary(WatchNodesRequestSchema, create(WatchNodesRequestSchema, { labels: { case: kind, ...extra } }));
const watchJson = (kind: string) => Buffer.from(JSON.stringify({ labels: { case: kind } }));
const cproto = { "content-type": "application/connect+proto" };
const cjson = { "content-type": "application/connect+json" };
const streamCases: Case[] = [
  { name: "binary", headers: cproto, body: frame(watchBin("")), status: 200 },
  { name: "JSON", headers: cjson, body: frame(watchJson("")), status: 200 },
  { name: "Connect-Protocol-Version 1, upper-case content type", headers: { "content-type": "Application/Connect+Proto", "connect-protocol-version": "1" }, body: frame(watchBin("")), status: 200 },
  { name: "a push-fed watch (snapshot batch, then a change)", headers: cproto, body: frame(watchBin("push")), status: 200 },
  { name: "a push-fed watch, JSON", headers: cjson, body: frame(watchJson("push")), status: 200 },
  { name: "headers, trailers in the end-stream metadata", headers: cjson, body: frame(watchJson("meta")), status: 200 },
  { name: "no message", headers: cproto, body: frame(watchBin("empty")), status: 200 },
  { name: "an error before the first message", headers: cproto, body: frame(watchBin("error-first")), status: 200 },
  { name: "an error after some messages, with a detail", headers: cjson, body: frame(watchJson("error-after")), status: 200 },
  { name: "an internal error after a message", headers: cproto, body: frame(watchBin("crash")), status: 200 },
  { name: "an error with metadata", headers: cjson, body: frame(watchJson("err-meta")), status: 200 },
  { name: "a deadline (connect-timeout-ms) after a message", headers: { ...cproto, "connect-timeout-ms": "50" }, body: frame(watchBin("slow")), status: 200 },
  { name: "gzip accepted: large messages compressed, small ones not", headers: { ...cproto, "connect-accept-encoding": "gzip" }, body: frame(watchBin("big")), status: 200, reordered: true },
  { name: "br then gzip accepted (JSON)", headers: { ...cjson, "connect-accept-encoding": "br, gzip" }, body: frame(watchJson("big")), status: 200 },
  { name: "gzip accepted, small messages", headers: { ...cproto, "connect-accept-encoding": "gzip" }, body: frame(watchBin("")), status: 200 },
  { name: "an unknown encoding accepted", headers: { ...cproto, "connect-accept-encoding": "zstd" }, body: frame(watchBin("big")), status: 200, reordered: true },
  { name: "a gzip-compressed request message", headers: { ...cproto, "connect-content-encoding": "gzip" }, body: frame(gzipSync(watchBin("")), 1), status: 200 },
  { name: "an uncompressed message with connect-content-encoding gzip", headers: { ...cproto, "connect-content-encoding": "gzip" }, body: frame(watchBin("")), status: 200 },
  { name: "a compressed message without connect-content-encoding", headers: cproto, body: frame(gzipSync(watchBin("")), 1), status: 200 },
  { name: "an unknown request encoding", headers: { ...cproto, "connect-content-encoding": "zstd" }, body: frame(watchBin("")), status: 200 },
  { name: "no request message", headers: cproto, body: "", status: 200 },
  { name: "two request messages", headers: cproto, body: Buffer.concat([frame(watchBin("")), frame(watchBin(""))]), status: 200 },
  { name: "a cut envelope", headers: cproto, body: frame(watchBin("")).subarray(0, 7), status: 200 },
  { name: "undecodable binary", headers: cproto, body: frame(Buffer.from([0xff, 0xff, 0xff])), status: 200 },
  { name: "an unknown JSON field", headers: cjson, body: frame(Buffer.from('{"nope":1}')), status: 200 },
  { name: "a request larger than readMaxBytes", headers: cproto, body: frame(watchBin("", { pad: "x".repeat(2000) })), status: 200 },
  { name: "a response larger than writeMaxBytes, after a message", headers: cproto, body: frame(watchBin("huge")), status: 200 },
  { name: "a malformed connect-timeout-ms (the router)", headers: { ...cproto, "connect-timeout-ms": "soon" }, body: frame(watchBin("")), status: 200 },
  { name: "a unary content type (the router)", headers: proto, body: watchBin(""), status: 415 },
];

/** A stream's envelopes as a client reads them: flags without the compressed bit, data decompressed (base64; re-encoded when `reordered`). */
function envelopes(r: RawReply, reordered = false): string[] {
  const out: string[] = [];
  const e = r.headers["connect-content-encoding"];
  for (let i = 0; i + 5 <= r.body.length; ) {
    const flags = r.body[i]!;
    const len = r.body.readUInt32BE(i + 1);
    let data = r.body.subarray(i + 5, i + 5 + len);
    if (flags & 1) data = e === "gzip" ? gunzipSync(data) : e === "br" ? brotliDecompressSync(data) : Buffer.from(`compressed with ${e}`);
    if (reordered && !(flags & 2)) data = Buffer.from(toBinary(NodeUpdateSchema, fromBinary(NodeUpdateSchema, data)));
    out.push(`${flags & ~1} ${flags & 2 ? data.toString() : data.toString("base64")}`);
    i += 5 + len;
  }
  return out;
}

for (const [version, call] of [["HTTP/1.1", h1], ["h2c", h2]] as const) {
  describe(`Connect server streaming over ${version}: the fast path answers as connect-node's router`, () => {
    for (const c of streamCases) {
      test(c.name, async () => {
        const [a, b] = await Promise.all([call(fast.server.url, { ...c, path: WATCH_NODES }), call(router.server.url, { ...c, path: WATCH_NODES })]);
        assert.equal(a.status, c.status, `${a.status} ${a.body.toString()}`);
        assert.equal(a.status, b.status);
        assert.deepEqual(relevant(a), relevant(b));
        assert.deepEqual(envelopes(a, c.reordered), envelopes(b, c.reordered));
        // Byte for byte where nothing was compressed (the same bytes, decompressed, compare above).
        if (a.headers["connect-content-encoding"] === undefined && !c.reordered) assert.equal(a.body.toString("base64"), b.body.toString("base64"));
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
  assert.ok(summary(fast).length >= cases.length + streamCases.length, summary(fast).join("\n"));
  // One deliberate difference: a stream message larger than writeMaxBytes ends the call with
  // RESOURCE_EXHAUSTED on both paths (the end-stream envelope above), but the router stops
  // the implementation's stream without telling it why, so its log line and count say
  // CANCELED; the fast path's say what the client got (as on the gRPC fast path).
  const tooLarge = streamCases.filter((c) => c.name.startsWith("a response larger than writeMaxBytes")).length * 2;
  const routerLines = summary(router);
  const canceled = routerLines.filter((l) => l === `${WATCH} canceled`).length;
  assert.equal(canceled, tooLarge, routerLines.join("\n"));
  assert.deepEqual(summary(fast), routerLines.map((l) => (l === `${WATCH} canceled` ? `${WATCH} resource_exhausted` : l)).sort());
  const fastCounts = await fast.metrics.registry.getSingleMetricAsString("quantix_rpc_calls_total").then(counts);
  const routerCounts = await router.metrics.registry.getSingleMetricAsString("quantix_rpc_calls_total").then(counts);
  const watchCount = (lines: string[], code: string) => Number(lines.find((l) => l.includes(`"${WATCH}"`) && l.includes(`code="${code}"`))?.split(" ").pop() ?? 0);
  assert.equal(watchCount(fastCounts, "resource_exhausted"), watchCount(routerCounts, "resource_exhausted") + watchCount(routerCounts, "canceled"));
  const others = (lines: string[]) => lines.filter((l) => !(l.includes(`"${WATCH}"`) && /code="(canceled|resource_exhausted)"/.test(l)));
  assert.deepEqual(others(fastCounts), others(routerCounts));
});

const WATCH = "Quantixkvm.compute.v1.NodeService/WatchNodes";

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

for (const [name, o] of Object.entries(clients)) {
  describe(`a connect-es client (${name}) on a fast-path Connect stream`, () => {
    const client = (url = fast.server.url) => createClient(NodeService, createConnectTransport({ baseUrl: url, ...o }));

    test("a push-fed watch: its snapshot, a change, the end; headers and trailers", async () => {
      let header: Headers = {};
      const got: string[] = [];
      for await (const u of client().watchNodes({ labels: { case: "push", watch: `all ${name}` } }, { onHeader: (h) => (header = Object.fromEntries(h)) })) got.push(`${u.node?.id} ${u.resourceVersion}`);
      assert.deepEqual(got, ["a 1", "frozen 7", "b 2", "c 3"]);
      assert.equal(header["x-fast"], "true");
      let trailer: Headers = {};
      for await (const _ of client().watchNodes({ labels: { case: "meta" } }, { onTrailer: (t) => (trailer = Object.fromEntries(t)) }));
      assert.equal(trailer["x-t"], "tail, more");
      assert.equal(trailer["x-late"], "1");
    });

    test("large messages (compressed: the client accepts gzip and br)", async () => {
      const ids: string[] = [];
      for await (const u of client().watchNodes({ labels: { case: "big" } })) {
        ids.push(u.node?.id ?? "");
        if (u.node?.id !== "small") assert.deepEqual(u.node?.labels, labels);
      }
      assert.deepEqual(ids, ["big", "small", "frozen-big"]);
    });

    test("an error after some messages, with its detail", async () => {
      const got: string[] = [];
      const err = await (async () => {
        for await (const u of client().watchNodes({ labels: { case: "error-after" } })) got.push(u.node?.id ?? "");
      })().then(() => assert.fail("the stream ended"), (e: unknown) => ConnectError.from(e));
      assert.deepEqual(got, ["a", "frozen"]);
      assert.equal(err.code, Code.InvalidArgument);
      assert.deepEqual(err.findDetails(BadRequestSchema)[0]?.fieldViolations.map((v) => [v.field, v.description]), [["labels", "no"]]);
    });

    test("an error before the first message", async () => {
      const err = await (async () => {
        for await (const _ of client().watchNodes({ labels: { case: "error-first" } }));
      })().then(() => assert.fail("the stream ended"), (e: unknown) => ConnectError.from(e));
      assert.equal(err.code, Code.NotFound);
    });

    test("a deadline the server enforces, after a message", async () => {
      let n = 0;
      const err = await (async () => {
        for await (const _ of client().watchNodes({ labels: { case: "slow" } }, { timeoutMs: 150 })) n++;
      })().then(() => assert.fail("the stream ended"), (e: unknown) => ConnectError.from(e));
      assert.equal(n, 1);
      assert.equal(err.code, Code.DeadlineExceeded);
    });

    // A watch that ignores the call's signal, so only the fast path's stopping it can
    // release it. (The router does not: it stops a stream only between messages, so a
    // watch with nothing to say is released there only by its own ctx.signal handling,
    // as the store's watch hub has: store/watch-hub.ts.)
    test("a client that goes away ends the call and releases its watch", async () => {
      const key = `cancel ${name}`;
      const abort = new AbortController();
      const got: string[] = [];
      const err = await (async () => {
        for await (const u of client().watchNodes({ labels: { case: "push-open", watch: key } }, { signal: abort.signal })) {
          got.push(u.node?.id ?? "");
          if (got.length === 4) abort.abort();
        }
      })().then(() => assert.fail("the stream ended"), (e: unknown) => ConnectError.from(e));
      assert.equal(err.code, Code.Canceled);
      assert.deepEqual(got, ["a", "frozen", "b", "c"]);
      await until(() => (openWatches.get(key) === 0 ? true : undefined), `the watch "${key}" released`, 5000);
      await until(() => (fast.lines.some((l) => l.fields["procedure"] === WATCH && l.fields["code"] === "canceled" && l.fields["messages"] === 4) ? true : undefined), "the cancelled call logged", 5000);
    });
  });
}

// A pulled stream waits for a client that does not read (the pump awaits "drain"): the
// producer stops far short of its 2,000 messages (64 MiB), then, read, every message comes.
for (const version of ["HTTP/1.1", "h2c"] as const) {
  test(`backpressure on a pulled stream (${version}): the producer waits for a client that does not read`, async () => {
    produced.count = 0;
    const body = frame(watchBin("many"));
    let received = Buffer.alloc(0);
    let resume: (() => void) | undefined;
    const done = new Promise<void>((resolve, reject) => {
      if (version === "h2c") {
        const session = http2.connect(fast.server.url);
        session.on("error", reject);
        const req = session.request({ ":method": "POST", ":path": WATCH_NODES, ...cproto });
        req.on("error", reject);
        req.end(body);
        const chunks: Buffer[] = [];
        resume = () => req.on("data", (c: Buffer) => chunks.push(c));
        req.on("end", () => {
          received = Buffer.concat(chunks);
          session.close();
          resolve();
        });
      } else {
        const req = http.request(fast.server.url + WATCH_NODES, { method: "POST", headers: { ...cproto, "content-length": body.length }, agent: false }, (res) => {
          const chunks: Buffer[] = [];
          resume = () => res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () => {
            received = Buffer.concat(chunks);
            resolve();
          });
          res.on("error", reject);
        });
        req.on("error", reject);
        req.end(body);
      }
    });
    await until(() => (produced.count >= 2 && resume !== undefined ? true : undefined), "the stream to start", 5000);
    assert.ok(produced.count < 500, `the producer ran ${produced.count} messages ahead of a client that read none`);
    resume!();
    await done;
    const envs = envelopes({ status: 200, headers: {}, trailers: {}, body: received, grpcStatus: undefined, grpcMessage: undefined });
    assert.equal(envs.length, 2001);
    assert.equal(envs.at(-1), "2 {}");
  });
}
