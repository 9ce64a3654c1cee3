import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { WatchNodesRequestSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { parsePrometheus, sampleValue } from "@quantix/testing";
import { connectEndStream, frame, grpcWebStatus, gzipFrame, h1Call, h2Call, startWireServer, WATCH_NODES, type WireServer } from "./testing/wire.js";

// A deadline that ends a server stream ends it with DEADLINE_EXCEEDED on every path, and
// the log and metrics say so. The clients here set the deadline only in the request's
// header and keep no timer of their own, so what they report is what the server sent.

const request = toBinary(WatchNodesRequestSchema, create(WatchNodesRequestSchema));
let w: WireServer;
before(async () => {
  w = await startWireServer();
});
after(() => w.server.close(1000));

const deadlineLines = () => w.lines.filter((l) => l.msg === "rpc" && l.fields["procedure"] === "Quantixkvm.compute.v1.NodeService/WatchNodes" && l.fields["code"] === "deadline_exceeded").length;

test("gRPC, uncompressed (the fast path)", async () => {
  const r = await h2Call(w.server.url, WATCH_NODES, { "content-type": "application/grpc", te: "trailers", "grpc-timeout": "200m" }, frame(request));
  assert.equal(r.grpcStatus, "4", `grpc-status ${r.grpcStatus} ${r.grpcMessage}`);
});

test("gRPC with a gzip-compressed request (the Connect router)", async () => {
  const r = await h2Call(w.server.url, WATCH_NODES, { "content-type": "application/grpc", te: "trailers", "grpc-timeout": "200m", "grpc-encoding": "gzip" }, gzipFrame(request));
  assert.equal(r.grpcStatus, "4", `grpc-status ${r.grpcStatus} ${r.grpcMessage}`);
});

test("gRPC-Web over HTTP/1.1", async () => {
  const r = await h1Call(w.server.url, WATCH_NODES, { "content-type": "application/grpc-web+proto", "x-grpc-web": "1", "grpc-timeout": "200m" }, frame(request));
  assert.equal(grpcWebStatus(r.body).status, "4", r.body.toString());
});

test("Connect streaming over HTTP/1.1", async () => {
  const r = await h1Call(w.server.url, WATCH_NODES, { "content-type": "application/connect+proto", "connect-protocol-version": "1", "connect-timeout-ms": "200" }, frame(request));
  assert.equal(connectEndStream(r.body).error?.code, "deadline_exceeded", r.body.toString());
});

test("each of them is logged and counted as deadline_exceeded", async () => {
  assert.equal(deadlineLines(), 4);
  const e = parsePrometheus(await w.metrics.registry.metrics());
  assert.equal(sampleValue(e, "quantix_rpc_calls_total", { procedure: "Quantixkvm.compute.v1.NodeService/WatchNodes", code: "deadline_exceeded" }), 4);
  assert.equal(sampleValue(e, "quantix_rpc_calls_total", { procedure: "Quantixkvm.compute.v1.NodeService/WatchNodes", code: "ok" }), undefined);
});
