import * as http2 from "node:http2";
import { randomBytes } from "node:crypto";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { ChangeEventSchema, ChangeType, SubscribeRequestSchema, WriteDiffRequestSchema, type ChangeEvent } from "@quantix/api/gen/virtualdom/v1/gateway_pb.js";
import { EnvelopeReader, envelope } from "./grpc-frame.js";
import { exchange, grpcHeaders, grpcStatus } from "./h2-client.js";
import { nowMs } from "./stats.js";

// The MemoryGateway's requests and streams as raw node:http2 traffic: both servers of the
// gateway bench get the very same client, so the client's cost is equal on both sides.

export const WRITE_DIFF = "/virtualdom.v1.MemoryGateway/WriteDiff";
export const SUBSCRIBE = "/virtualdom.v1.MemoryGateway/SubscribeChanges";
/** The SYNCED marker carries no node or diff: its payload is a few bytes; a DIFF event is far larger. */
export const SMALL = 32;

const enc = new TextEncoder();
const cstring = (s: string) => Buffer.from(`${s}\0`, "utf8");
const int32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(v, 0);
  return b;
};
/** A BSON document from its encoded elements. */
const doc = (elements: Buffer[]) => {
  const body = Buffer.concat(elements);
  return Buffer.concat([int32(body.length + 5), body, Buffer.from([0])]);
};

/** The BSON diff {"$set": {name: int32}} or {"$set": {name: binary}}, encoded by hand (a few bytes of format). */
export function setDiff(name: string, value: number | Buffer): Buffer {
  const field = typeof value === "number" ? Buffer.concat([Buffer.from([0x10]), cstring(name), int32(value)]) : Buffer.concat([Buffer.from([0x05]), cstring(name), int32(value.length), Buffer.from([0]), value]);
  return doc([Buffer.concat([Buffer.from([0x03]), cstring("$set"), doc([field])])]);
}

/** An enveloped WriteDiff request: writer `writer`'s k-th write to `node`. */
export function writeBody(node: string, writer: string, k: number, diff: Buffer): Buffer {
  return envelope(toBinary(WriteDiffRequestSchema, create(WriteDiffRequestSchema, { nodeId: enc.encode(node), diffBson: diff, vectorClock: { entries: { [writer]: BigInt(k) } }, writerId: writer })));
}

/** A 10 MiB diff of random (incompressible) bytes. */
export const largeDiff = (mib: number) => setDiff("blob", randomBytes(mib * 1024 * 1024));

/** An enveloped SubscribeRequest for some nodes (or a prefix), optionally after a version. */
export function subscribeBody(o: { nodes?: string[]; prefix?: string; fromVersion?: bigint }): Buffer {
  return envelope(toBinary(SubscribeRequestSchema, create(SubscribeRequestSchema, { nodeIds: (o.nodes ?? []).map((n) => enc.encode(n)), nodeIdPrefix: enc.encode(o.prefix ?? ""), fromVersion: o.fromVersion ?? 0n })));
}

export const isSynced = (payload: Buffer | undefined): boolean => payload !== undefined && fromBinary(ChangeEventSchema, payload).type === ChangeType.SYNCED;

/** One unary WriteDiff; throws unless its gRPC status is OK. Returns the response envelope. */
export async function writeOnce(session: http2.ClientHttp2Session, body: Buffer): Promise<Buffer> {
  const x = await exchange(session, grpcHeaders(WRITE_DIFF), body);
  if (grpcStatus(x) !== "0") throw new Error(`WriteDiff failed: grpc-status ${grpcStatus(x)} ${decodeURIComponent(String(x.trailers["grpc-message"] ?? x.headers["grpc-message"] ?? ""))}`);
  return x.body;
}

/** An open SubscribeChanges stream: every event is decoded when `decode` says so, and timestamped on arrival. */
export interface Subscription {
  /** Resolves at the first SYNCED, with its arrival time. */
  readonly synced: Promise<number>;
  close(): void;
}

export function subscribe(session: http2.ClientHttp2Session, body: Buffer, onEvent: (ev: ChangeEvent | undefined, t: number, length: number, raw: Buffer | undefined) => void, decode: (length: number) => boolean = () => true, headers: http2.OutgoingHttpHeaders = {}): Subscription {
  const req = session.request({ ...grpcHeaders(SUBSCRIBE), ...headers });
  let t = 0;
  let resolveSynced!: (t: number) => void;
  let rejectSynced!: (e: Error) => void;
  const synced = new Promise<number>((resolve, reject) => ((resolveSynced = resolve), (rejectSynced = reject)));
  let seen = false;
  const reader = new EnvelopeReader((length, payload) => {
    const ev = payload ? fromBinary(ChangeEventSchema, payload) : undefined;
    if (!seen && (ev?.type === ChangeType.SYNCED || (!ev && length < SMALL && isSynced(payload)))) {
      seen = true;
      resolveSynced(t);
    }
    onEvent(ev, t, length, payload);
  }, decode);
  req.on("data", (c: Buffer) => {
    t = nowMs();
    reader.push(c);
  });
  req.on("error", (e) => rejectSynced(e));
  req.on("trailers", (tr) => rejectSynced(new Error(`SubscribeChanges ended: grpc-status ${String(tr["grpc-status"])} ${String(tr["grpc-message"] ?? "")}`)));
  req.on("response", (h) => h["grpc-status"] !== undefined && h["grpc-status"] !== "0" && rejectSynced(new Error(`SubscribeChanges refused: grpc-status ${String(h["grpc-status"])} ${decodeURIComponent(String(h["grpc-message"] ?? ""))}`)));
  synced.catch(() => undefined);
  req.end(body);
  return { synced, close: () => req.close(http2.constants.NGHTTP2_CANCEL) };
}
