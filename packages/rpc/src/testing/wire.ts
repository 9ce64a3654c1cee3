import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { gzipSync } from "node:zlib";
import { create, toBinary } from "@bufbuild/protobuf";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { NodeSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { GetNodeRequestSchema, NodeService, NodeUpdateSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import type { Logger, LogLevel } from "../log/logger.js";
import { RpcMetrics } from "../metrics/rpc-metrics.js";
import { route } from "../routes.js";
import { startRpcServer, type RpcServer, type RpcServerOptions } from "../rpc-server.js";

// Raw clients for the wire tests: they send exactly the bytes a test names and report
// exactly what came back, where a library client would hide a protocol violation.

/** The procedures of the test service. */
export const GET_NODE = "/Quantixkvm.compute.v1.NodeService/GetNode";
export const WATCH_NODES = "/Quantixkvm.compute.v1.NodeService/WatchNodes";

/**
 * NodeService for wire tests: GetNode echoes the id; WatchNodes sends one update, then
 * ends when the call's signal aborts (as the store's watches do on a deadline).
 */
export const testNodes = route(NodeService, {
  getNode: (req) => create(NodeSchema, { id: req.id }),
  async *watchNodes(_req, ctx) {
    yield create(NodeUpdateSchema, { type: EventType.SYNCED });
    await new Promise((resolve) => (ctx.signal.aborted ? resolve(undefined) : ctx.signal.addEventListener("abort", resolve, { once: true })));
  },
});

/** A log line a test server wrote. */
export interface Line {
  readonly level: LogLevel;
  readonly msg: string;
  readonly fields: Record<string, unknown>;
}

/** A server of `testNodes` whose log lines and metrics a test reads. */
export interface WireServer {
  readonly server: RpcServer;
  readonly lines: Line[];
  readonly metrics: RpcMetrics;
}

export async function startWireServer(o: Partial<RpcServerOptions> = {}): Promise<WireServer> {
  const lines: Line[] = [];
  const log: Logger = { log: (level, msg, fields) => lines.push({ level, msg, fields: fields ?? {} }) };
  const metrics = new RpcMetrics();
  const server = await startRpcServer({ host: "127.0.0.1", port: 0, routes: [testNodes], log, metrics, ...o });
  return { server, lines, metrics };
}

/** A GetNodeRequest, encoded. */
export const getNodeBytes = (id: string) => toBinary(GetNodeRequestSchema, create(GetNodeRequestSchema, { id }));

/** Frames messages as gRPC and gRPC-Web do: a flag byte, a 4-byte length, the bytes. */
export function frame(message: Uint8Array, flag = 0): Buffer {
  const out = Buffer.alloc(5 + message.length);
  out[0] = flag;
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
}

/** A gzip-compressed gRPC frame. */
export const gzipFrame = (message: Uint8Array) => frame(gzipSync(message), 1);

/** What a raw call received. */
export interface RawReply {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly trailers: Record<string, string>;
  readonly body: Buffer;
  /** grpc-status and grpc-message from trailers, else headers (trailers-only). */
  readonly grpcStatus: string | undefined;
  readonly grpcMessage: string | undefined;
}

function reply(status: number, headers: Record<string, unknown>, trailers: Record<string, unknown>, body: Buffer): RawReply {
  const flat = (h: Record<string, unknown>) => Object.fromEntries(Object.entries(h).map(([k, v]) => [k, String(v)]));
  const [h, t] = [flat(headers), flat(trailers)];
  const grpcMessage = t["grpc-message"] ?? h["grpc-message"];
  return { status, headers: h, trailers: t, body, grpcStatus: t["grpc-status"] ?? h["grpc-status"], grpcMessage: grpcMessage === undefined ? undefined : decodeURIComponent(grpcMessage) };
}

/** One HTTP/2 request on its own connection, with a raw node:http2 client. */
export function h2Call(url: string, path: string, headers: http2.OutgoingHttpHeaders, body: Uint8Array | undefined, timeoutMs = 5000): Promise<RawReply> {
  const session = http2.connect(url);
  session.on("error", () => undefined);
  return new Promise<RawReply>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    const req = session.request({ ":method": "POST", ":path": path, ...headers });
    let head: Record<string, unknown> = {};
    let trailers: Record<string, unknown> = {};
    const chunks: Buffer[] = [];
    req.on("response", (h) => (head = h));
    req.on("trailers", (t) => (trailers = t));
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(reply(Number(head[":status"]), head, trailers, Buffer.concat(chunks))));
    req.on("error", reject);
    req.on("close", () => clearTimeout(timer));
    req.end(body);
  }).finally(() => session.close());
}

/** One HTTP/1.1 request, with node:http, on `agent` (keep-alive) when given. */
export function h1Call(url: string, path: string, headers: http.OutgoingHttpHeaders, body: Uint8Array | string, agent?: http.Agent, timeoutMs = 5000): Promise<RawReply> {
  return new Promise<RawReply>((resolve, reject) => {
    const req = http.request(url + path, { method: "POST", headers: { "content-length": Buffer.byteLength(body), ...headers }, agent: agent ?? false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve(reply(res.statusCode ?? 0, res.headers, res.trailers, Buffer.concat(chunks))));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", reject);
    req.end(body);
  });
}

/** The frames of a gRPC-Web or Connect streaming body: flags and payload. */
export function frames(body: Buffer): { flags: number; data: Buffer }[] {
  const out = [];
  for (let i = 0; i + 5 <= body.length; ) {
    const n = body.readUInt32BE(i + 1);
    out.push({ flags: body[i]!, data: body.subarray(i + 5, i + 5 + n) });
    i += 5 + n;
  }
  return out;
}

/** grpc-status and grpc-message of a gRPC-Web body's trailer frame. */
export function grpcWebStatus(body: Buffer): { status: string | undefined; message: string | undefined } {
  const t = frames(body).find((f) => (f.flags & 0x80) !== 0);
  const fields = Object.fromEntries((t?.data.toString() ?? "").split("\r\n").filter(Boolean).map((l) => [l.slice(0, l.indexOf(":")).trim().toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
  return { status: fields["grpc-status"], message: fields["grpc-message"] === undefined ? undefined : decodeURIComponent(fields["grpc-message"]) };
}

/** The end-stream message of a Connect streaming body (flag 0x02), parsed. */
export function connectEndStream(body: Buffer): { error?: { code: string; message?: string } } {
  const end = frames(body).find((f) => (f.flags & 0x02) !== 0);
  return end ? (JSON.parse(end.data.toString()) as { error?: { code: string; message?: string } }) : {};
}

/** Opens a TCP connection to a listener, resolved once connected. */
export function connectTcp(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(port, "127.0.0.1", () => resolve(s));
    s.once("error", reject);
  });
}
