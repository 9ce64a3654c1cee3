import * as http2 from "node:http2";
import type { ServerHttp2Stream } from "node:http2";
import { type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { decodeBinary } from "@quantix/core";
import { setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { undecodable } from "../errors.js";
import { GRPC_ACCEPT_ENCODING } from "../compression.js";
import { encodeMessage } from "./encode-cache.js";
import type { FastContext } from "./fast-context.js";

// The gRPC wire format on an HTTP/2 stream, as much of it as the fast path speaks:
// one uncompressed request message in, length-prefixed messages and status trailers out.

/** What a call the client abandoned ends with. */
export const CANCELED = new ConnectError("the client cancelled the call", Code.Canceled);
/** Framed bytes of frozen messages (shared watch updates), written as they are to every stream. */
const enveloped = new WeakMap<object, Uint8Array>();
// grpc-accept-encoding lists what the server decompresses: compressed requests go to the router, which does.
const RESPONSE_HEADERS = { ":status": "200", "content-type": "application/grpc+proto", "grpc-accept-encoding": GRPC_ACCEPT_ENCODING };
/** The trailers of a call that succeeded and set none of its own: made once. */
const OK_TRAILERS: Record<string, string> = headersRecord(setTrailerStatus(new Headers(), undefined));

/** What readMessage keeps of one read, on its stream (the listeners are module functions: a call makes no closures for them). */
interface Reading {
  /** Whether the promise is settled: a later close must not reject it (V8 reports each such reject to Node, a call into JS per call). */
  settled: boolean;
  readonly chunks: Buffer[];
  size: number;
  readonly readMaxBytes: number;
  readonly resolve: (body: Uint8Array) => void;
  readonly reject: (err: unknown) => void;
}
const READING = Symbol("grpc fast path: reading the request");
type ReadStream = ServerHttp2Stream & { [READING]?: Reading };

/** Reads the request body: exactly one uncompressed, length-prefixed message. */
export function readMessage(stream: ServerHttp2Stream, readMaxBytes: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    (stream as ReadStream)[READING] = { settled: false, chunks: [], size: 0, readMaxBytes, resolve, reject };
    stream.on("data", onData);
    stream.on("end", onEnd);
    stream.on("error", reject);
    stream.on("close", onClose);
  });
}

function onData(this: ReadStream, c: Buffer): void {
  const r = this[READING]!;
  r.size += c.length;
  if (r.size > r.readMaxBytes + 5) {
    this.off("data", onData);
    r.settled = true;
    r.reject(new ConnectError(`message larger than configured max ${r.readMaxBytes} bytes`, Code.ResourceExhausted));
    // Answer first (the caller's catch), then reset the stream so the client stops sending (RFC 9113 §8.1).
    setImmediate(() => this.closed || this.close(http2.constants.NGHTTP2_NO_ERROR));
    return;
  }
  r.chunks.push(c);
}

function onEnd(this: ReadStream): void {
  const r = this[READING]!;
  r.settled = true;
  const body = r.chunks.length === 1 ? r.chunks[0]! : Buffer.concat(r.chunks, r.size);
  const problem = framingProblem(body);
  if (problem) r.reject(problem);
  else r.resolve(body.subarray(5));
}

function onClose(this: ReadStream): void {
  const r = this[READING]!;
  if (!r.settled) r.reject(CANCELED);
}

/**
 * What is wrong with a request body that is not one uncompressed gRPC frame: no message is a
 * cardinality violation (UNIMPLEMENTED, as gRPC and connect-es answer it), as is more than
 * one; a cut or compressed frame is the client's malformed request (INVALID_ARGUMENT).
 */
function framingProblem(body: Buffer): ConnectError | undefined {
  if (body.length === 0) return new ConnectError("protocol error: missing request message for a unary or server-streaming method", Code.Unimplemented);
  if (body.length < 5) return new ConnectError(`protocol error: incomplete frame header (${body.length} of 5 bytes)`, Code.InvalidArgument);
  if (body[0] !== 0) return new ConnectError("protocol error: compressed message without grpc-encoding", Code.InvalidArgument);
  const length = body.readUInt32BE(1);
  if (body.length < 5 + length) return new ConnectError(`protocol error: incomplete frame (${body.length - 5} of ${length} bytes)`, Code.InvalidArgument);
  if (body.length > 5 + length) return new ConnectError("protocol error: received extra input message for a unary or server-streaming method", Code.Unimplemented);
  return undefined;
}

/** Decodes a request message; bytes that are not one are the client's error (INVALID_ARGUMENT naming the type). */
export function decodeMessage<T extends DescMessage>(schema: T, bytes: Uint8Array): MessageShape<T> {
  try {
    return decodeBinary(schema, bytes);
  } catch (err) {
    throw undecodable(schema, err instanceof Error ? err.message : String(err), err);
  }
}

/** A message framed for the wire (frozen ones once), refused when larger than `writeMaxBytes`. */
export function envelope(schema: DescMessage, msg: object, writeMaxBytes: number): Uint8Array {
  const cached = Object.isFrozen(msg) ? enveloped.get(msg) : undefined;
  if (cached) return cached;
  const bytes = encodeMessage(schema, msg);
  if (bytes.length > writeMaxBytes) throw new ConnectError(`message size ${bytes.length} is larger than configured writeMaxBytes ${writeMaxBytes}`, Code.ResourceExhausted);
  const out = frame(bytes);
  if (Object.isFrozen(msg)) enveloped.set(msg, out);
  return out;
}

/** An encoded message as a gRPC frame: the uncompressed flag, the length, the bytes. */
export function frame(bytes: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(bytes.length + 5);
  out[0] = 0;
  out.writeUInt32BE(bytes.length, 1);
  out.set(bytes, 5);
  return out;
}

/** Sends the response headers, with those the implementation or an interceptor set. */
export function respond(stream: ServerHttp2Stream, ctx: FastContext): void {
  if (stream.headersSent || stream.destroyed) return;
  if (!ctx.responseHeader.changed) {
    stream.respond(RESPONSE_HEADERS, { waitForTrailers: true });
    return;
  }
  const h: Record<string, string> = { ...RESPONSE_HEADERS };
  ctx.responseHeader.forEach((v, k) => (h[k] = v));
  stream.respond(h, { waitForTrailers: true });
}

/**
 * Ends the call with its status, encoded by connect's own setTrailerStatus (so
 * grpc-status-details-bin carries the same google.rpc.BadRequest): in trailers after a
 * response (`last`, the response's bytes, written with the end of the stream), or
 * trailers-only before one.
 */
export function finish(stream: ServerHttp2Stream, ctx: FastContext, error: ConnectError | undefined, last?: Uint8Array): void {
  if (stream.destroyed || stream.closed) return;
  const set = ctx.responseTrailer.changed;
  if (error === undefined && !set && stream.headersSent) {
    stream.on("wantTrailers", sendOkTrailers);
    stream.end(last);
    return;
  }
  const t = error === undefined && !set ? OK_TRAILERS : headersRecord(setTrailerStatus(new Headers(ctx.responseTrailer), error));
  if (!stream.headersSent) {
    stream.respond({ ...RESPONSE_HEADERS, ...t }, { endStream: true });
    return;
  }
  stream.once("wantTrailers", () => stream.sendTrailers(t));
  stream.end(last);
}

/** The trailers of a call that succeeded and set none (a module function: no closure per call). */
function sendOkTrailers(this: ServerHttp2Stream): void {
  this.sendTrailers(OK_TRAILERS);
}

function headersRecord(h: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  h.forEach((v, k) => (out[k] = v));
  return out;
}
