import * as http2 from "node:http2";
import type { ClientHttp2Stream, IncomingHttpHeaders } from "node:http2";
import { create, isMessage, toBinary, type DescMessage, type DescMethodUnary, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type Transport, type UnaryResponse } from "@connectrpc/connect";
import { requestHeader, validateResponse, validateTrailer } from "@connectrpc/connect/protocol-grpc";
import type { Http2SessionManager } from "@connectrpc/connect-node";
import { decodeBinary } from "@quantix/core";
import { frame } from "./fast-path/grpc-wire.js";
import { DEFAULT_LIMITS } from "./rpc-server.js";

// Unary gRPC calls written straight onto an HTTP/2 session (docs/adr/0013-lean-unary-client.md):
// the client side of what the fast path is to the server. connect-node's transport runs each
// unary call through async-iterable pipelines (serialise, join, split, parse envelopes), a
// sentinel and linked abort controllers; here a call is one request, one response message and
// its trailers. Status, headers and errors are read with connect's own gRPC helpers, so a call
// fails with the ConnectError connect-node would give.

/** Limits of the lean unary calls. */
export interface UnaryTransportOptions {
  /** The largest response message accepted (RESOURCE_EXHAUSTED beyond it); unless said, the most our servers write (DEFAULT_LIMITS.writeMaxBytes, 64 MiB). */
  readonly readMaxBytes?: number;
}

/**
 * `base` with its unary calls made directly on `sessions` (the same HTTP/2 connection, its
 * pings and TLS): streaming calls go through `base` unchanged. No interceptors, compression or
 * JSON: a transport for the control plane's own calls to its agents, which use none.
 */
export function withLeanUnary(base: Transport, sessions: Http2SessionManager, options: UnaryTransportOptions = {}): Transport {
  const readMaxBytes = options.readMaxBytes ?? DEFAULT_LIMITS.writeMaxBytes;
  return {
    unary: (method, signal, timeoutMs, header, input) => unaryCall(sessions, readMaxBytes, method, signal, timeoutMs, header, input),
    stream: (method, signal, timeoutMs, header, input, contextValues) => base.stream(method, signal, timeoutMs, header, input, contextValues),
  };
}

async function unaryCall<I extends DescMessage, O extends DescMessage>(
  sessions: Http2SessionManager,
  readMaxBytes: number,
  method: DescMethodUnary<I, O>,
  signal: AbortSignal | undefined,
  timeoutMs: number | undefined,
  header: ConstructorParameters<typeof Headers>[0] | undefined,
  input: MessageInitShape<I>,
): Promise<UnaryResponse<I, O>> {
  // As connect: no timeout, or one of zero or less, is no deadline.
  const deadlineMs = timeoutMs !== undefined && timeoutMs > 0 ? timeoutMs : undefined;
  if (signal?.aborted) throw abortError(signal);
  // The deadline counts from the call, connecting included (as connect's).
  const deadlineAt = deadlineMs === undefined ? undefined : performance.now() + deadlineMs;
  const message = isMessage(input, method.input) ? input : create(method.input, input as never);
  const body = frame(toBinary(method.input, message as MessageShape<I>));
  const headers = header === undefined ? plainHeaders(deadlineMs) : nodeHeaders(requestHeader(true, deadlineMs, header));
  const path = `/${method.parent.typeName}/${method.name}`;
  const reply = await new Promise<Reply>((resolve, reject) => {
    // The deadline and the caller's signal are watched from here: a session still connecting (a host that vanished) ends with them too.
    const call = new Call(sessions, readMaxBytes, signal, deadlineAt, resolve, reject);
    sessions.request("POST", path, headers, {}).then(
      (stream) => call.send(stream, body),
      (err: unknown) => call.failWith(fromNodeError(err)),
    );
  });
  // An OK answer, read as connect's checks below read it, without making the Headers they read.
  if (succeeded(reply)) return answered(method, parsed(method.output, unframe(reply.body)), reply);
  const responseHeader = webHeaders(reply.headers);
  const trailer = webHeaders(reply.trailers);
  // As connect-node: the HTTP status and content type first, then the message, then the status trailers.
  const { headerError } = validateResponse(reply.status, responseHeader);
  const bytes = reply.body.length > 0 ? unframe(reply.body) : undefined;
  validateTrailer(trailer, responseHeader);
  if (bytes === undefined) {
    if (headerError) throw headerError;
    throw new ConnectError("protocol error: missing output message for unary method", trailer.has("grpc-status") ? Code.Unimplemented : Code.Unknown);
  }
  if (headerError) throw new ConnectError("protocol error: received output message for unary method with error status", Code.Unknown);
  return { stream: false, service: method.parent, method, header: responseHeader, message: parsed(method.output, bytes), trailer };
}

/** The answer's message; bytes that are not one fail as connect-node's parse does (INTERNAL). */
function parsed<O extends DescMessage>(schema: O, bytes: Uint8Array): MessageShape<O> {
  try {
    return decodeBinary(schema, bytes);
  } catch (err) {
    throw new ConnectError(`parse binary: ${err instanceof Error ? err.message : String(err)}`, Code.Internal);
  }
}

/**
 * The request headers of a call with no headers of the caller's: connect's requestHeader
 * (content type, user agent, TE) made once, and its grpc-timeout.
 */
function plainHeaders(deadlineMs: number | undefined): http2.OutgoingHttpHeaders {
  const base = (PLAIN_HEADERS ??= nodeHeaders(requestHeader(true, undefined, undefined)));
  return deadlineMs === undefined ? { ...base } : { ...base, "grpc-timeout": `${deadlineMs}m` };
}

let PLAIN_HEADERS: http2.OutgoingHttpHeaders | undefined;

/**
 * Whether a reply is an OK answer that connect's checks (validateResponse, validateTrailer)
 * would pass as it is: HTTP 200, a gRPC protobuf content type, no status in the headers
 * and grpc-status 0 in the trailers, with a body. Anything else goes through them.
 */
function succeeded(reply: Reply): boolean {
  const type = reply.headers["content-type"];
  return (
    reply.status === 200 &&
    (type === "application/grpc" || type === "application/grpc+proto") &&
    reply.headers["grpc-status"] === undefined &&
    reply.trailers["grpc-status"] === "0" &&
    reply.body.length > 0
  );
}

/** A unary response whose headers and trailers become Headers only when read (connect's client reads them only for onHeader and onTrailer). */
function answered<I extends DescMessage, O extends DescMessage>(method: DescMethodUnary<I, O>, message: MessageShape<O>, reply: Reply): UnaryResponse<I, O> {
  let header: Headers | undefined;
  let trailer: Headers | undefined;
  return {
    stream: false,
    service: method.parent,
    method,
    message,
    get header() {
      return (header ??= webHeaders(reply.headers));
    },
    get trailer() {
      return (trailer ??= webHeaders(reply.trailers));
    },
  };
}

/** The one message of a unary response body: refused when cut, compressed (none was asked for) or followed by another. */
function unframe(all: Buffer): Uint8Array {
  if (all.length < 5) throw new ConnectError("protocol error: incomplete envelope", Code.Internal);
  if ((all[0]! & 0b01) !== 0) throw new ConnectError("protocol error: received a compressed message, and none was asked for", Code.Internal);
  const length = all.readUInt32BE(1);
  if (all.length < 5 + length) throw new ConnectError("protocol error: incomplete envelope", Code.Internal);
  if (all.length > 5 + length) throw new ConnectError("protocol error: received extra output message for unary method", Code.Unimplemented);
  return all.subarray(5);
}

/** What came back on a call's stream. */
interface Reply {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly trailers: IncomingHttpHeaders;
  /** The response body as it came (read within readMaxBytes). */
  readonly body: Buffer;
}

/** One call: the request written on its stream, the answer read, the deadline and the caller's signal watched. */
class Call {
  private stream: ClientHttp2Stream | undefined;
  private headers: IncomingHttpHeaders | undefined;
  private trailers: IncomingHttpHeaders = {};
  private readonly chunks: Buffer[] = [];
  private size = 0;
  private settled = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly sessions: Http2SessionManager,
    private readonly readMaxBytes: number,
    private readonly signal: AbortSignal | undefined,
    deadlineAt: number | undefined,
    private readonly resolve: (r: Reply) => void,
    private readonly reject: (e: unknown) => void,
  ) {
    if (deadlineAt !== undefined) this.timer = setTimeout(() => this.fail(new ConnectError("the operation timed out", Code.DeadlineExceeded)), Math.max(0, deadlineAt - performance.now()));
    signal?.addEventListener("abort", this.onAbort);
  }

  /** Writes the request on `stream`; a call already ended (deadline, abort) resets it at once. */
  send(stream: ClientHttp2Stream, body: Uint8Array): void {
    this.stream = stream;
    stream.on("error", (e: unknown) => this.error(e));
    if (this.settled) {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      return;
    }
    stream.on("response", (h: IncomingHttpHeaders) => (this.headers = h));
    stream.on("trailers", (t: IncomingHttpHeaders) => (this.trailers = t));
    stream.on("data", (c: Buffer) => this.data(c));
    stream.on("end", () => this.end());
    stream.on("close", () => this.closed());
    stream.end(body);
  }

  /** Ends the call with `err` (the session could not be had). */
  failWith(err: ConnectError): void {
    this.fail(err);
  }

  private readonly onAbort = (): void => this.fail(abortError(this.signal!));

  private data(c: Buffer): void {
    this.sessions.notifyResponseByteRead(this.stream!);
    this.size += c.length;
    if (this.size > this.readMaxBytes + 5) {
      this.fail(new ConnectError(`message size ${this.size - 5} is larger than configured readMaxBytes ${this.readMaxBytes}`, Code.ResourceExhausted));
      return;
    }
    this.chunks.push(c);
  }

  private end(): void {
    if (this.settled) return;
    const body = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.size);
    this.finish();
    this.resolve({ status: Number(this.headers?.[":status"] ?? 0), headers: this.headers ?? {}, trailers: this.trailers, body });
  }

  private error(e: unknown): void {
    // A write after the request ended is connect-node's too: not the call's failure.
    if ((e as { code?: string }).code === "ERR_STREAM_WRITE_AFTER_END" && this.stream?.writableEnded) return;
    // A reset by the peer comes as an error before the close: its code says more (REFUSED_STREAM is UNAVAILABLE, safe to retry).
    const reset = (e as { code?: string }).code === "ERR_HTTP2_STREAM_ERROR" ? fromResetCode(this.stream?.rstCode) : undefined;
    this.fail(reset ?? fromNodeError(e));
  }

  private closed(): void {
    if (this.settled) return;
    // Reset by the peer: its code says why; closed without one: what arrived is read as the answer.
    const reset = fromResetCode(this.stream?.rstCode);
    if (reset) this.fail(reset);
    else this.end();
  }

  /** Ends the call with `err`, resetting its stream (CANCEL) if it is still open. */
  private fail(err: ConnectError): void {
    if (this.settled) return;
    this.finish();
    if (this.stream && !this.stream.closed) this.stream.close(http2.constants.NGHTTP2_CANCEL);
    this.reject(err);
  }

  private finish(): void {
    this.settled = true;
    clearTimeout(this.timer);
    this.signal?.removeEventListener("abort", this.onAbort);
  }
}

function nodeHeaders(h: Headers): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = {};
  h.forEach((value, key) => (out[key] = value));
  return out;
}

function webHeaders(h: IncomingHttpHeaders): Headers {
  const out = new Headers();
  for (const [key, value] of Object.entries(h)) {
    if (key.startsWith(":") || value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) out.append(key, v);
    else out.set(key, String(value));
  }
  return out;
}

/** The caller's abort as connect gives it: its ConnectError reason, or CANCELED. */
function abortError(signal: AbortSignal): ConnectError {
  return ConnectError.from(signal.reason ?? Object.assign(new Error("This operation was aborted"), { name: "AbortError" }), Code.Canceled);
}

/** A Node error as connect-node names it (node-error.ts): refused or unresolvable connections are UNAVAILABLE. */
function fromNodeError(e: unknown): ConnectError {
  if (e instanceof ConnectError) return e;
  const codes = new Set<string>();
  for (let x: unknown = e, depth = 0; x instanceof Error && depth < 8; x = (x as { cause?: unknown }).cause, depth++) {
    const c = (x as { code?: unknown }).code;
    if (typeof c === "string") codes.add(c);
  }
  const has = (...cs: string[]) => cs.some((c) => codes.has(c));
  const code = has("ERR_STREAM_WRITE_AFTER_END", "ERR_STREAM_DESTROYED", "ERR_HTTP2_INVALID_STREAM", "ECONNRESET")
    ? Code.Aborted
    : has("ETIMEDOUT", "ENOTFOUND", "EAI_AGAIN", "ECONNREFUSED")
      ? Code.Unavailable
      : Code.Internal;
  const ce = ConnectError.from(e, code);
  if (ce !== e) ce.cause = e;
  return ce;
}

/** An RST_STREAM code as connect-node reads it; undefined for none (NO_ERROR) or one it leaves to the stream's end. */
function fromResetCode(rst: number | undefined): ConnectError | undefined {
  const c = http2.constants;
  const named = (code: Code) => new ConnectError(`http/2 stream closed with error code 0x${(rst ?? 0).toString(16)}`, code);
  switch (rst) {
    case c.NGHTTP2_PROTOCOL_ERROR:
    case c.NGHTTP2_INTERNAL_ERROR:
    case c.NGHTTP2_FLOW_CONTROL_ERROR:
    case c.NGHTTP2_SETTINGS_TIMEOUT:
    case c.NGHTTP2_FRAME_SIZE_ERROR:
    case c.NGHTTP2_COMPRESSION_ERROR:
    case c.NGHTTP2_CONNECT_ERROR:
      return named(Code.Internal);
    case c.NGHTTP2_REFUSED_STREAM:
      return named(Code.Unavailable);
    case c.NGHTTP2_CANCEL:
      return named(Code.Canceled);
    case c.NGHTTP2_ENHANCE_YOUR_CALM:
      return named(Code.ResourceExhausted);
    case c.NGHTTP2_INADEQUATE_SECURITY:
    case c.NGHTTP2_HTTP_1_1_REQUIRED:
      return named(Code.PermissionDenied);
    default:
      return undefined;
  }
}
