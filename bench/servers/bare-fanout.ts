import * as http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { VirtualMachineSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { UpdateVMRequestSchema, VmUpdateSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { envelope } from "../lib/grpc-frame.js";

// The fan-out floor for Node: a bare node:http2 server that speaks just enough of
// WatchVMs and UpdateVM for the fan-out harness. WatchVMs streams get SYNCED and stay
// open; UpdateVM is answered, then one pre-encoded MODIFIED update (a VM with the new
// description) is written to every open stream: no store, no filter, no per-watcher work.
// `bare-fanout.ts [vm]`: `vm` (base64 of a VirtualMachine, our server's demo VM, see
// bench/lib/fanout.ts demoVm) makes each update that VM with the new description, so that
// bare writes as many bytes per watcher as ours; without it, a VM of four fields.
const base = process.argv[2] ? fromBinary(VirtualMachineSchema, Buffer.from(process.argv[2], "base64")) : undefined;

const watchers = new Set<http2.ServerHttp2Stream>();
const synced = envelope(toBinary(VmUpdateSchema, create(VmUpdateSchema, { type: EventType.SYNCED, resourceVersion: 1n })));
let revision = 1n;

const server = http2.createServer({ settings: { maxConcurrentStreams: 10_000 } });
server.on("stream", (stream, headers) => {
  stream.on("error", () => undefined);
  const chunks: Buffer[] = [];
  stream.on("data", (c: Buffer) => chunks.push(c));
  stream.on("end", () => {
    if (headers[":path"] === "/Quantixkvm.compute.v1.VMService/WatchVMs") {
      stream.respond({ ":status": 200, "content-type": "application/grpc" });
      stream.write(synced);
      watchers.add(stream);
      stream.once("close", () => watchers.delete(stream));
      return;
    }
    const req = fromBinary(UpdateVMRequestSchema, Buffer.concat(chunks).subarray(5));
    revision++;
    const vm = base ? create(VirtualMachineSchema, { ...base, description: req.description, resourceVersion: revision }) : create(VirtualMachineSchema, { id: req.id, name: "web-server-01", description: req.description, resourceVersion: revision });
    stream.respond({ ":status": 200, "content-type": "application/grpc" }, { waitForTrailers: true });
    stream.once("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
    stream.end(envelope(toBinary(VirtualMachineSchema, vm)));
    const update = envelope(toBinary(VmUpdateSchema, create(VmUpdateSchema, { type: EventType.MODIFIED, vm, resourceVersion: revision })));
    setImmediate(() => {
      for (const w of watchers) w.write(update);
    });
  });
});
server.listen(0, "127.0.0.1", () => process.stdout.write(`${JSON.stringify({ port: (server.address() as { port: number }).port })}\n`));
