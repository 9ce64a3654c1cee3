import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { gzipSync } from "node:zlib";
import { parsePrometheus } from "@quantix/testing";
import { connectEndStream, frame, GET_NODE, grpcWebStatus, gzipFrame, h1Call, h2Call, startWireServer, WATCH_NODES, type RawReply, type WireServer } from "./testing/wire.js";

// A request body the server cannot decode is the client's error on every protocol:
// INVALID_ARGUMENT saying what could not be decoded, never INTERNAL; logged without a
// stack below error level, and counted under its code, never as `internal`.

/** Field 1, length-delimited, promising 16 bytes and holding 1: not a GetNodeRequest, nor a WatchNodesRequest. */
const NOT_THE_MESSAGE = Uint8Array.from([0x0a, 0x10, 0x41]);
/** A frame header promising 100 bytes, followed by 3. */
const TRUNCATED_FRAME = Buffer.concat([Buffer.from([0, 0, 0, 0, 100]), Buffer.from("abc")]);

/** One malformed request and how to read the code and message it got. */
interface Case {
  readonly name: string;
  readonly send: (url: string) => Promise<RawReply>;
  readonly outcome: (r: RawReply) => { code: string | undefined; message: string | undefined };
}

const grpcCode = (r: RawReply) => ({ code: r.grpcStatus, message: r.grpcMessage });
const webCode = (r: RawReply) => {
  const { status, message } = grpcWebStatus(r.body);
  return { code: status, message };
};
const GRPC = { "content-type": "application/grpc", te: "trailers" };
const WEB = { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" };
const CONNECT_STREAM = { "content-type": "application/connect+proto", "connect-protocol-version": "1" };
/** Connect's error codes by name, as gRPC numbers (what the cases compare). */
const CONNECT_CODES: Record<string, string> = { invalid_argument: "3", internal: "13", unimplemented: "12" };
const connectUnary = (r: RawReply) => {
  const e = JSON.parse(r.body.toString() || "{}") as { code?: string; message?: string };
  return { code: e.code === undefined ? undefined : CONNECT_CODES[e.code], message: e.message };
};
const connectStream = (r: RawReply) => {
  const e = connectEndStream(r.body).error;
  return { code: e ? CONNECT_CODES[e.code] : undefined, message: e?.message };
};

const cases: Case[] = [
  { name: "Connect JSON, invalid JSON", send: (u) => h1Call(u, GET_NODE, { "content-type": "application/json" }, '{"id": '), outcome: connectUnary },
  { name: "Connect JSON, a number for a string", send: (u) => h1Call(u, GET_NODE, { "content-type": "application/json" }, '{"id": 5}'), outcome: connectUnary },
  { name: "Connect binary, unary", send: (u) => h1Call(u, GET_NODE, { "content-type": "application/proto" }, NOT_THE_MESSAGE), outcome: connectUnary },
  { name: "Connect binary over h2c, unary", send: (u) => h2Call(u, GET_NODE, { "content-type": "application/proto" }, NOT_THE_MESSAGE), outcome: connectUnary },
  { name: "Connect streaming, not the message", send: (u) => h1Call(u, WATCH_NODES, CONNECT_STREAM, frame(NOT_THE_MESSAGE)), outcome: connectStream },
  { name: "Connect streaming, truncated frame", send: (u) => h1Call(u, WATCH_NODES, CONNECT_STREAM, TRUNCATED_FRAME), outcome: connectStream },
  { name: "gRPC fast path, unary, not the message", send: (u) => h2Call(u, GET_NODE, GRPC, frame(NOT_THE_MESSAGE)), outcome: grpcCode },
  { name: "gRPC fast path, unary, truncated frame", send: (u) => h2Call(u, GET_NODE, GRPC, TRUNCATED_FRAME), outcome: grpcCode },
  { name: "gRPC fast path, unary, cut frame header", send: (u) => h2Call(u, GET_NODE, GRPC, Buffer.from([0, 0])), outcome: grpcCode },
  { name: "gRPC fast path, compressed flag without grpc-encoding", send: (u) => h2Call(u, GET_NODE, GRPC, gzipFrame(Uint8Array.from([]))), outcome: grpcCode },
  { name: "gRPC fast path, server stream, not the message", send: (u) => h2Call(u, WATCH_NODES, GRPC, frame(NOT_THE_MESSAGE)), outcome: grpcCode },
  { name: "gRPC via the router (gzip), unary, not the message", send: (u) => h2Call(u, GET_NODE, { ...GRPC, "grpc-encoding": "gzip" }, gzipFrame(NOT_THE_MESSAGE)), outcome: grpcCode },
  { name: "gRPC via the router (gzip), unary, not gzip", send: (u) => h2Call(u, GET_NODE, { ...GRPC, "grpc-encoding": "gzip" }, frame(Buffer.from("not gzip at all"), 1)), outcome: grpcCode },
  { name: "gRPC via the router (gzip), unary, cut gzip", send: (u) => h2Call(u, GET_NODE, { ...GRPC, "grpc-encoding": "gzip" }, frame(gzipSync(Buffer.alloc(64, 1)).subarray(0, 20), 1)), outcome: grpcCode },
  { name: "gRPC via the router (gzip), server stream, not the message", send: (u) => h2Call(u, WATCH_NODES, { ...GRPC, "grpc-encoding": "gzip" }, gzipFrame(NOT_THE_MESSAGE)), outcome: grpcCode },
  { name: "gRPC over HTTP/1.1 (the router), unary, not the message", send: (u) => h1Call(u, GET_NODE, GRPC, frame(NOT_THE_MESSAGE)), outcome: grpcCode },
  { name: "gRPC-Web, unary, not the message", send: (u) => h1Call(u, GET_NODE, WEB, frame(NOT_THE_MESSAGE)), outcome: webCode },
  { name: "gRPC-Web, unary, compressed flag without grpc-encoding", send: (u) => h1Call(u, GET_NODE, WEB, gzipFrame(NOT_THE_MESSAGE)), outcome: webCode },
  { name: "gRPC-Web, unary, truncated frame", send: (u) => h1Call(u, GET_NODE, WEB, TRUNCATED_FRAME), outcome: webCode },
  { name: "gRPC-Web, server stream, not the message", send: (u) => h1Call(u, WATCH_NODES, WEB, frame(NOT_THE_MESSAGE)), outcome: webCode },
];

let w: WireServer;
before(async () => {
  w = await startWireServer();
});
after(() => w.server.close(1000));

for (const c of cases) {
  test(`${c.name}: INVALID_ARGUMENT saying what could not be decoded`, async () => {
    const { code, message } = c.outcome(await c.send(w.server.url));
    assert.equal(code, "3", `code ${code}: ${message}`);
    assert.ok(message && message.length > 0 && !/internal error/.test(message), message);
  });
}

test("bytes that are not the message name the message they are not", async () => {
  const { message } = grpcCode(await h2Call(w.server.url, GET_NODE, GRPC, frame(NOT_THE_MESSAGE)));
  assert.match(message ?? "", /Quantixkvm\.compute\.v1\.GetNodeRequest/);
  const web = webCode(await h1Call(w.server.url, GET_NODE, WEB, frame(NOT_THE_MESSAGE)));
  assert.match(web.message ?? "", /Quantixkvm\.compute\.v1\.GetNodeRequest/);
});

test("none of it is logged at error level or counted as internal, and each is counted under its code", async () => {
  const errors = w.lines.filter((l) => l.level === "error");
  assert.deepEqual(errors, [], "no error-level line");
  assert.ok(!w.lines.some((l) => JSON.stringify(l.fields).includes("    at ")), "no stack trace");
  const e = parsePrometheus(await w.metrics.registry.metrics());
  const calls = e.samples.filter((s) => s.name === "quantix_rpc_calls_total");
  assert.deepEqual(calls.filter((s) => s.labels["code"] === "internal"), []);
  const invalid = calls.filter((s) => s.labels["code"] === "invalid_argument").reduce((n, s) => n + s.value, 0);
  assert.ok(invalid >= cases.length, `${invalid} counted as invalid_argument of ${cases.length + 2} malformed requests`);
});
