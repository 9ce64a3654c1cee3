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

/** An HTTP/2 frame as read off the wire. */
export interface H2Frame {
  readonly type: number;
  readonly flags: number;
  readonly stream: number;
  readonly payload: Buffer;
}

/** HTTP/2 frame types the tests look for. */
export const H2 = { HEADERS: 0x1, RST_STREAM: 0x3, SETTINGS: 0x4, PING: 0x6, GOAWAY: 0x7, CONTINUATION: 0x9 } as const;

/**
 * A hand-driven HTTP/2 connection (prior knowledge): it sends the frames a test builds,
 * collects what the server sends, and, unlike node:http2's client, never closes on its
 * own (after a GOAWAY, say), as some clients do not.
 */
export class RawH2 {
  readonly frames: H2Frame[] = [];
  closed = false;
  private buffered = Buffer.alloc(0);
  private constructor(readonly socket: net.Socket) {
    socket.on("data", (c: Buffer) => this.read(c));
    socket.on("close", () => (this.closed = true));
    socket.on("error", () => undefined);
  }

  /** Connects, sends the client preface and an empty SETTINGS frame. */
  static async open(port: number): Promise<RawH2> {
    const h = new RawH2(await connectTcp(port));
    h.socket.write(Buffer.concat([Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), h2Frame(H2.SETTINGS, 0, 0, Buffer.alloc(0))]));
    return h;
  }

  /** Sends a request's headers on `stream`: pseudo-headers for POST `path`, then `extra`, split into CONTINUATION frames as needed. */
  sendHeaders(stream: number, path: string, extra: Record<string, string>, endStream = true): void {
    const parts = [Buffer.from([0x83, 0x86]), literal(":path", path), ...Object.entries(extra).map(([k, v]) => literal(k, v))];
    const block = Buffer.concat(parts);
    const frames: Buffer[] = [];
    for (let i = 0; i < block.length || i === 0; i += 16_384) {
      const last = i + 16_384 >= block.length;
      const flags = (last ? 0x4 : 0) | (i === 0 && endStream ? 0x1 : 0);
      frames.push(h2Frame(i === 0 ? H2.HEADERS : H2.CONTINUATION, flags, stream, block.subarray(i, i + 16_384)));
    }
    this.socket.write(Buffer.concat(frames));
  }

  /** The server's SETTINGS values by identifier (the first SETTINGS frame that is not an ACK). */
  settings(): Map<number, number> | undefined {
    const f = this.frames.find((x) => x.type === H2.SETTINGS && (x.flags & 0x1) === 0);
    if (!f) return undefined;
    const out = new Map<number, number>();
    for (let i = 0; i + 6 <= f.payload.length; i += 6) out.set(f.payload.readUInt16BE(i), f.payload.readUInt32BE(i + 2));
    return out;
  }

  close(): void {
    this.socket.destroy();
  }

  private read(chunk: Buffer): void {
    this.buffered = Buffer.concat([this.buffered, chunk]);
    while (this.buffered.length >= 9) {
      const length = this.buffered.readUIntBE(0, 3);
      if (this.buffered.length < 9 + length) return;
      const type = this.buffered[3]!;
      const flags = this.buffered[4]!;
      this.frames.push({ type, flags, stream: this.buffered.readUInt32BE(5) & 0x7fffffff, payload: this.buffered.subarray(9, 9 + length) });
      // SETTINGS and PING frames are acknowledged, as a client must.
      if (type === H2.SETTINGS && (flags & 0x1) === 0) this.socket.write(h2Frame(H2.SETTINGS, 0x1, 0, Buffer.alloc(0)));
      if (type === H2.PING && (flags & 0x1) === 0) this.socket.write(h2Frame(H2.PING, 0x1, 0, this.buffered.subarray(9, 9 + length)));
      this.buffered = this.buffered.subarray(9 + length);
    }
  }
}

function h2Frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

/** An HPACK literal header field without indexing, with a literal name (RFC 7541 §6.2.2). */
function literal(name: string, value: string): Buffer {
  return Buffer.concat([Buffer.from([0x00]), hpackInt(name.length), Buffer.from(name), hpackInt(value.length), Buffer.from(value)]);
}

/** An HPACK integer with a 7-bit prefix and the Huffman bit clear (RFC 7541 §5.1). */
function hpackInt(n: number): Buffer {
  if (n < 127) return Buffer.from([n]);
  const out = [127];
  for (n -= 127; n >= 128; n >>= 7) out.push((n & 0x7f) | 0x80);
  out.push(n);
  return Buffer.from(out);
}
