import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { GetNodeRequestSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { NodeSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { parsePrometheus } from "@quantix/testing";
import { frame, GET_NODE, getNodeBytes, gzipFrame, h1Call, h2Call, startWireServer, WATCH_NODES, type WireServer } from "./testing/wire.js";

// What the gRPC specification asks of a server, checked with a raw node:http2 client
// (which shows every header) and with @grpc/grpc-js.

const GRPC = { "content-type": "application/grpc", te: "trailers" };
let w: WireServer;
before(async () => {
  w = await startWireServer();
});
after(() => w.server.close(1000));

test("a call with no request message is UNIMPLEMENTED (a cardinality violation), unary and server-streaming", async () => {
  for (const path of [GET_NODE, WATCH_NODES]) {
    const r = await h2Call(w.server.url, path, GRPC, undefined);
    assert.equal(r.status, 200);
    assert.equal(r.grpcStatus, "12", `${path}: ${r.grpcStatus} ${r.grpcMessage}`);
    assert.match(r.grpcMessage ?? "", /missing request message/);
  }
});

test("two request messages to a unary method are UNIMPLEMENTED too", async () => {
  const one = frame(getNodeBytes("a"));
  const r = await h2Call(w.server.url, GET_NODE, GRPC, Buffer.concat([one, one]));
  assert.equal(r.grpcStatus, "12", r.grpcMessage);
});

test("an unknown method is :status 200 with grpc-status 12 and a message, not HTTP 404", async () => {
  for (const path of ["/Quantixkvm.compute.v1.NodeService/NoSuchMethod", "/no.such.v1.Service/Get"]) {
    const r = await h2Call(w.server.url, path, GRPC, frame(getNodeBytes("a")));
    assert.equal(r.status, 200, path);
    assert.equal(r.grpcStatus, "12", path);
    assert.match(r.grpcMessage ?? "", /unknown method/);
    assert.equal(r.headers["content-type"], "application/grpc+proto");
  }
  const web = await h1Call(w.server.url, "/no.such.v1.Service/Get", { "content-type": "application/grpc-web+proto" }, frame(getNodeBytes("a")));
  assert.deepEqual([web.status, web.headers["grpc-status"]], [200, "12"]);
  // Not gRPC: the fallback still answers.
  const json = await h1Call(w.server.url, "/no.such.v1.Service/Get", { "content-type": "application/json" }, "{}");
  assert.equal(json.status, 404);
});

test("@grpc/grpc-js calling an unknown method gets UNIMPLEMENTED with the server's message", async () => {
  const client = new grpc.Client(`127.0.0.1:${w.server.port}`, grpc.credentials.createInsecure());
  try {
    const err = await new Promise<grpc.ServiceError>((resolve, reject) =>
      client.makeUnaryRequest(
        "/Quantixkvm.compute.v1.NodeService/NoSuchMethod",
        (m: Uint8Array) => Buffer.from(m),
        (b: Buffer) => fromBinary(NodeSchema, b),
        toBinary(GetNodeRequestSchema, fromBinary(GetNodeRequestSchema, getNodeBytes("x"))),
        (e) => (e ? resolve(e) : reject(new Error("the call succeeded"))),
      ),
    );
    assert.equal(err.code, grpc.status.UNIMPLEMENTED, err.details);
    assert.match(err.details, /unknown method/);
  } finally {
    client.close();
  }
});

test("unknown method names do not grow the metrics: they count under one procedure label", async () => {
  for (let i = 0; i < 50; i++) await h2Call(w.server.url, `/x.Svc/M${i}`, GRPC, frame(getNodeBytes("a")));
  const e = parsePrometheus(await w.metrics.registry.metrics());
  const procedures = new Set(e.samples.filter((s) => s.name === "quantix_rpc_calls_total").map((s) => s.labels["procedure"]));
  assert.ok(![...procedures].some((p) => p?.startsWith("/x.Svc") || p?.startsWith("x.Svc")), [...procedures].join(" "));
  const unknown = e.samples.find((s) => s.name === "quantix_rpc_calls_total" && s.labels["procedure"] === "unknown" && s.labels["code"] === "unimplemented");
  assert.ok(unknown && unknown.value >= 50, JSON.stringify(unknown));
});

test("responses list the encodings the server accepts (grpc-accept-encoding), compressed request or not", async () => {
  const gzip = await h2Call(w.server.url, GET_NODE, { ...GRPC, "grpc-encoding": "gzip" }, gzipFrame(getNodeBytes("gz")));
  assert.equal(gzip.grpcStatus, "0", gzip.grpcMessage);
  assert.match(gzip.headers["grpc-accept-encoding"] ?? "", /gzip/);
  const plain = await h2Call(w.server.url, GET_NODE, GRPC, frame(getNodeBytes("plain")));
  assert.equal(plain.grpcStatus, "0", plain.grpcMessage);
  assert.match(plain.headers["grpc-accept-encoding"] ?? "", /gzip/, "the fast path accepts what the router decompresses");
  const refused = await h2Call(w.server.url, GET_NODE, GRPC, undefined);
  assert.match(refused.headers["grpc-accept-encoding"] ?? "", /gzip/, "a trailers-only answer too");
  // An encoding the server does not have: UNIMPLEMENTED, naming the ones it accepts (gRPC compression spec).
  const br = await h2Call(w.server.url, GET_NODE, { ...GRPC, "grpc-encoding": "snappy" }, gzipFrame(getNodeBytes("x")));
  assert.equal(br.grpcStatus, "12", br.grpcMessage);
  assert.match(br.headers["grpc-accept-encoding"] ?? "", /gzip/);
});
