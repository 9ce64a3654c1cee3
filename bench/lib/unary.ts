import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { VirtualMachineSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { GetVMRequestSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { envelope, unenvelope } from "./grpc-frame.js";
import { connect, countBad, exchange, grpcHeaders, grpcStatus, sequentialLatency, type Exchange, type Latency } from "./h2-client.js";
import { saturateAll, type Saturation } from "./h2load.js";

export const DEMO_VM_ID = "11111111-1111-1111-1111-111111111111";
export const DEMO_VM_NAME = "web-server-01";
export const GET_VM = "/Quantixkvm.compute.v1.VMService/GetVM";

/** Request bodies written to files for h2load, and the same bytes for the Node clients. */
export interface GetVmBodies {
  readonly dir: string;
  readonly grpc: Buffer;
}

/**
 * Writes the GetVM request bodies (gRPC envelope, raw proto, Connect JSON) and the
 * responses our server gives for them, so the bare baselines can return the very same bytes.
 */
export async function captureGetVm(url: string, dir: string): Promise<GetVmBodies> {
  const raw = Buffer.from(toBinary(GetVMRequestSchema, create(GetVMRequestSchema, { id: DEMO_VM_ID })));
  const grpc = envelope(raw);
  const json = Buffer.from(JSON.stringify({ id: DEMO_VM_ID }));
  const session = await connect(url);
  const g = await exchange(session, grpcHeaders(GET_VM), grpc);
  const p = await exchange(session, { ":method": "POST", ":path": GET_VM, "content-type": "application/proto" }, raw);
  session.close();
  const j = await fetch(url + GET_VM, { method: "POST", headers: { "content-type": "application/json" }, body: json });
  if (!isDemoVm(g) || p.status !== 200 || j.status !== 200) throw new Error(`GetVM failed on our server: grpc ${grpcStatus(g)}, proto ${p.status}, json ${j.status}`);
  const files: Record<string, Buffer> = { "getvm-req.grpc": grpc, "getvm-req.proto": raw, "getvm-req.json": json, "getvm.grpc": g.body, "getvm.proto": p.body, "getvm.json": Buffer.from(await j.arrayBuffer()) };
  for (const [name, bytes] of Object.entries(files)) writeFileSync(join(dir, name), bytes);
  return { dir, grpc };
}

/** A gRPC GetVM answer is good when its status is 0 and its one message is web-server-01. */
export function isDemoVm(x: Exchange): boolean {
  if (x.status !== 200 || grpcStatus(x) !== "0") return false;
  const msgs = unenvelope(x.body);
  return msgs.length === 1 && fromBinary(VirtualMachineSchema, msgs[0]!).name === DEMO_VM_NAME;
}

/** What one gRPC server did under GetVM: correctness, saturation throughput, latency at concurrency 1. */
export interface GrpcUnary {
  readonly bad: number;
  readonly load: Saturation;
  readonly latency: Latency;
}

/** Per server: correctness check (200 calls), then h2load at saturation and sequential latency, servers taking turns. */
export async function measureGrpcUnary(urls: readonly string[], bodies: GetVmBodies): Promise<GrpcUnary[]> {
  const bad: number[] = [];
  for (const url of urls) bad.push(await countBad(url, grpcHeaders(GET_VM), bodies.grpc, isDemoVm));
  const headers = { "content-type": "application/grpc", te: "trailers" };
  const load = await saturateAll(urls.map((url) => ({ url: url + GET_VM, bodyFile: join(bodies.dir, "getvm-req.grpc"), headers, clients: 4, streams: 32 })));
  const latency = await sequentialLatency(urls, grpcHeaders(GET_VM), bodies.grpc);
  return urls.map((_, i) => ({ bad: bad[i]!, load: load[i]!, latency: latency[i]! }));
}

/** Connect binary over h2c at saturation, servers taking turns. */
export const connectBinaryLoad = (urls: readonly string[], dir: string): Promise<Saturation[]> =>
  saturateAll(urls.map((url) => ({ url: url + GET_VM, bodyFile: join(dir, "getvm-req.proto"), headers: { "content-type": "application/proto" }, clients: 4, streams: 32 })));

/** Connect JSON over HTTP/1.1 at saturation (32 keep-alive connections, no pipelining), servers taking turns. */
export const connectJsonLoad = (urls: readonly string[], dir: string): Promise<Saturation[]> =>
  saturateAll(urls.map((url) => ({ url: url + GET_VM, bodyFile: join(dir, "getvm-req.json"), headers: { "content-type": "application/json" }, clients: 32, streams: 1, h1: true })));
