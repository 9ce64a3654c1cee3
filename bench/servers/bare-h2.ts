import { readFileSync } from "node:fs";
import * as http2 from "node:http2";
import { join } from "node:path";
import { create, toBinary } from "@bufbuild/protobuf";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { VmUpdateSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { envelope } from "../lib/grpc-frame.js";

// The floor for any h2c (or, with a certificate, TLS) server in Node: a bare 'stream' handler answering with bytes the
// control plane produced once (argv[2] is the directory holding them). No routing, no
// decoding, no logging. POST /bench.Bare/Stream is the server-streaming floor: a write
// loop of x-count same-size envelopes (x-size payload bytes each, the last one SYNCED).

const dir = process.argv[2]!;
const grpcBody = readFileSync(join(dir, "getvm.grpc"));
const protoBody = readFileSync(join(dir, "getvm.proto"));

// argv[3] and argv[4], when given, are a certificate and key: the same floor over TLS (h2 via ALPN).
const [certFile, keyFile] = [process.argv[3], process.argv[4]];
const settings = { maxConcurrentStreams: 10_000 };
const server = certFile && keyFile ? http2.createSecureServer({ cert: readFileSync(certFile), key: readFileSync(keyFile), settings }) : http2.createServer({ settings });
server.on("stream", (stream, headers) => {
  stream.on("error", () => undefined);
  stream.resume();
  stream.on("end", () => {
    if (headers[":path"] === "/bench.Bare/Stream") return void writeLoop(stream, Number(headers["x-count"]), Number(headers["x-size"]));
    if (String(headers["content-type"]).startsWith("application/grpc")) {
      stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
      stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(grpcBody);
    } else {
      stream.respond({ ":status": 200, "content-type": "application/proto" });
      stream.end(protoBody);
    }
  });
});

async function writeLoop(stream: http2.ServerHttp2Stream, count: number, size: number): Promise<void> {
  const msg = envelope(Buffer.alloc(size, 0x61));
  const synced = envelope(toBinary(VmUpdateSchema, create(VmUpdateSchema, { type: EventType.SYNCED, resourceVersion: BigInt(count) })));
  stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
  stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
  for (let i = 0; i < count - 1 && !stream.destroyed; i++) {
    if (!stream.write(msg)) await new Promise((r) => stream.once("drain", r).once("close", r));
  }
  if (!stream.destroyed) stream.end(synced);
}

server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`${JSON.stringify({ port: (server.address() as { port: number }).port })}\n`);
});
process.on("SIGTERM", () => process.exit(0));
