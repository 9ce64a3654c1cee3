import { readFileSync } from "node:fs";
import * as http2 from "node:http2";
import { join } from "node:path";

// The floor for the MemoryGateway in Node: a bare node:http2 server answering with bytes our
// control plane produced once (argv[2] is the directory holding them; argv[3] the HTTP/2
// SETTINGS our server announced, as JSON, so both sides run with the same windows and
// limits). No routing beyond the path, no decoding, no store, no logging.
// - WriteDiff: the request is drained, the captured WriteDiffResponse is answered, then the
//   captured DIFF ChangeEvent is written to every open SubscribeChanges stream.
// - SubscribeChanges: the captured SYNCED event, then the stream stays open (the fan-out
//   above); with an x-count header, first that many DIFF events in a write loop.

const dir = process.argv[2]!;
const settings = JSON.parse(process.argv[3] ?? "{}") as http2.Settings;
const writeResponse = readFileSync(join(dir, "gateway-write-response.grpc"));
const diffEvent = readFileSync(join(dir, "gateway-diff-event.grpc"));
const syncedEvent = readFileSync(join(dir, "gateway-synced-event.grpc"));
const subscribers = new Set<http2.ServerHttp2Stream>();
const grpcHeaders = { ":status": 200, "content-type": "application/grpc" };

const server = http2.createServer({ settings });
server.on("stream", (stream, headers) => {
  stream.on("error", () => undefined);
  stream.resume();
  stream.on("end", () => {
    if (headers[":path"] === "/virtualdom.v1.MemoryGateway/SubscribeChanges") return void subscribe(stream, Number(headers["x-count"] ?? 0));
    stream.respond(grpcHeaders, { waitForTrailers: true });
    stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.end(writeResponse);
    setImmediate(() => {
      for (const s of subscribers) s.write(diffEvent);
    });
  });
});

async function subscribe(stream: http2.ServerHttp2Stream, count: number): Promise<void> {
  stream.respond(grpcHeaders, { waitForTrailers: true });
  stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
  for (let i = 0; i < count && !stream.destroyed; i++) {
    if (!stream.write(diffEvent)) await new Promise((r) => stream.once("drain", r).once("close", r));
  }
  if (stream.destroyed) return;
  stream.write(syncedEvent);
  subscribers.add(stream);
  stream.once("close", () => subscribers.delete(stream));
}

server.listen(0, "127.0.0.1", () => {
  process.stdout.write(`${JSON.stringify({ port: (server.address() as { port: number }).port })}\n`);
});
process.on("SIGTERM", () => process.exit(0));
