import type * as http from "node:http";
import * as http2 from "node:http2";
import type { Readable } from "node:stream";
import { brotliCompressSync, gzipSync } from "node:zlib";
import type { DescMessage, JsonReadOptions, JsonWriteOptions } from "@bufbuild/protobuf";
import { Code, ConnectError, createServiceImplSpec, type Interceptor, type MethodImplSpec } from "@connectrpc/connect";
import { compressionBrotli, compressionGzip } from "@connectrpc/connect-node";
import {
  compressionNegotiate,
  createMethodSerializationLookup,
  pipe,
  transformDecompressEnvelope,
  transformParseEnvelope,
  transformSplitEnvelope,
  type Compression,
  type MethodSerializationLookup,
} from "@connectrpc/connect/protocol";
import { codeToHttpStatus, contentTypeUnaryRegExp, createEndStreamSerialization, endStreamFlag, errorToJsonBytes, parseContentType } from "@connectrpc/connect/protocol-connect";
import { planDecode } from "@quantix/core";
import { clientDecodeError } from "../errors.js";
import { applyInterceptors } from "../interceptors/apply-interceptors.js";
import type { Route } from "../routes.js";
import { encodeMessage } from "./encode-cache.js";
import { FastContext, liveContexts, type CallStream } from "./fast-context.js";
import { adoptResponse, fastRequest, invokeServerStreaming, invokeUnary } from "./fast-request.js";
import { CANCELED, envelope } from "./grpc-wire.js";
import { h2Socket } from "./grpc-fast-path.js";
import { pump, type Sink } from "./stream-pump.js";
import { gzipWherePays, gzipWherePaysSync } from "./response-compression.js";
import { TurnWrites } from "./turn-writes.js";

/** What a route's Connect calls are served with: the very options connect-es's router gets for it. */
export interface ConnectRouteOptions {
  readonly readMaxBytes: number;
  readonly writeMaxBytes: number;
  /** Response bodies of at least this many bytes are compressed, for clients that accept an encoding. */
  readonly compressMinBytes: number;
  /** The encodings the router negotiates, in its order of preference. */
  readonly acceptCompression: readonly Compression[];
}

/** Limits, interceptors and codec options of the Connect fast path: the very ones the Connect router gets. */
export interface ConnectFastPathOptions {
  readonly shutdownSignal: AbortSignal;
  /** Run around every call, in this order (the first outermost), as the Connect router runs them. */
  readonly interceptors: readonly Interceptor[];
  /** The router's JSON options (unknown fields refused, the same registry). */
  readonly jsonOptions: Partial<JsonReadOptions & JsonWriteOptions>;
  /** Told of a call refused before the interceptor chain (its request undecodable or too large). */
  readonly refused: (procedure: string, err: ConnectError, durationMs: number) => void;
  /** A route's options: its own limits and compression, or the server's. */
  readonly routeOptions: (route: Route) => ConnectRouteOptions;
}

type Unary = Extract<MethodImplSpec, { kind: "unary" }>;
type ServerStreaming = Extract<MethodImplSpec, { kind: "server_streaming" }>;

interface Method extends ConnectRouteOptions {
  readonly spec: Unary | ServerStreaming;
  readonly procedure: string;
  readonly serialization: MethodSerializationLookup<DescMessage, DescMessage>;
}

/** One exchange, on either HTTP version: its request body and how its one response goes out. */
interface Exchange {
  readonly body: Readable;
  readonly call: CallStream;
  readonly socketOf: (call: CallStream) => unknown;
  /** Sends the whole response; `unread` says the request body was not read to its end. */
  send(status: number, headers: Record<string, string>, body: Uint8Array, unread: boolean): void;
  /** Ends the exchange without an answer (as the router does when it cannot write one). */
  abort(): void;
  /** Called when a unary call starts: its answer may be written with others of the turn (HTTP/1.1, `TurnWrites`). */
  arm(): void;
  /** Where a streamed response's bytes go (after `head`), and whose "close" says the client went away. */
  readonly out: Sink;
  /** Sends a streamed response's status (200) and headers. */
  head(headers: Record<string, string>): void;
  /** Writes a streamed response's last bytes and ends it. */
  end(bytes: Uint8Array): void;
}

// Classes rather than object literals of closures: a call makes no functions (tsx's keepNames wraps each one).
class H2Exchange implements Exchange {
  readonly socketOf = h2Socket;
  constructor(private readonly stream: http2.ServerHttp2Stream) {}

  get body(): Readable {
    return this.stream;
  }

  get call(): CallStream {
    return this.stream;
  }

  send(status: number, headers: Record<string, string>, body: Uint8Array, unread: boolean): void {
    const stream = this.stream;
    if (stream.destroyed || stream.closed) return;
    headers[":status"] = String(status);
    stream.respond(headers);
    stream.end(body);
    // A response sent before the request was read ends the stream: the client, out of
    // flow-control window, would otherwise wait for its deadline (RFC 9113 §8.1).
    if (unread) stream.once("finish", () => setImmediate(() => stream.closed || stream.close(http2.constants.NGHTTP2_NO_ERROR)));
  }

  abort(): void {
    if (!this.stream.closed) this.stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
  }

  arm(): void {}

  get out(): Sink {
    return this.stream as unknown as Sink;
  }

  head(headers: Record<string, string>): void {
    headers[":status"] = "200";
    this.stream.respond(headers);
  }

  end(bytes: Uint8Array): void {
    const stream = this.stream;
    stream.end(bytes);
    // As `send`: an answer given before the request was read ends the stream (RFC 9113 §8.1).
    if (!stream.readableEnded) stream.once("finish", () => setImmediate(() => stream.closed || stream.close(http2.constants.NGHTTP2_NO_ERROR)));
  }
}

const h1Socket = (res: CallStream): unknown => (res as http.ServerResponse).socket;

class H1Exchange implements Exchange {
  readonly socketOf = h1Socket;
  constructor(
    readonly body: http.IncomingMessage,
    private readonly res: http.ServerResponse,
    private readonly writes: TurnWrites,
  ) {}

  get call(): CallStream {
    return this.res;
  }

  send(status: number, headers: Record<string, string>, body: Uint8Array, unread: boolean): void {
    const res = this.res;
    if (res.destroyed || res.headersSent) return;
    // The unread rest would stall the next request on this keep-alive connection (listener.ts, closeIfUnread).
    if (unread || !this.body.complete) res.shouldKeepAlive = false;
    this.writes.add(res, status, headers, body);
  }

  abort(): void {
    this.res.destroy();
  }

  arm(): void {
    this.writes.arm();
  }

  get out(): Sink {
    return this.res as unknown as Sink;
  }

  head(headers: Record<string, string>): void {
    // The unread rest of a request would stall the next request on this keep-alive connection (listener.ts, closeIfUnread).
    if (!this.body.complete) this.res.shouldKeepAlive = false;
    // Without a content-length, Node sends the body chunked.
    this.res.writeHead(200, headers);
  }

  end(bytes: Uint8Array): void {
    this.res.end(bytes);
  }
}

const CONTENT_TYPE_PROTO = "application/proto";
const CONTENT_TYPE_JSON = "application/json";
/** JSON bodies of frozen (stored) messages, made once: a VM read by every GetVM is written once. */
const jsonOf = new WeakMap<object, Uint8Array>();
/** Uncompressed JSON stream envelopes of frozen messages (a watch's shared updates), made once. */
const jsonEnvelopeOf = new WeakMap<object, Uint8Array>();
/**
 * Compressed bodies of frozen messages, binary and JSON, by the compression that made them:
 * compressing the same bytes the same way gives the same bytes, so a stored VM that every
 * GetVM returns is compressed once (per encoding and format), not per call.
 */
const compressedOf = [new WeakMap<object, Map<Compression, Uint8Array>>(), new WeakMap<object, Map<Compression, Uint8Array>>()] as const;

/**
 * Serves Connect unary calls (POST, `application/proto` and `application/json`, over
 * HTTP/1.1 and HTTP/2) without connect-node's per-call machinery: the same service
 * implementations, interceptors, limits, codecs, compression negotiation and error
 * bodies as the Connect router (connect-es's protocol-connect handler, whose behaviour
 * this follows step by step), answered straight on the Node request or stream. What it
 * does not serve goes to the router: streaming methods, GET requests, compressed request
 * bodies, malformed timeouts and content types, unknown paths.
 */
export class ConnectFastPath {
  private readonly methods = new Map<string, Method>();
  private readonly live: Set<FastContext>;
  private readonly endStream: ReturnType<typeof createEndStreamSerialization>;
  private readonly h1Writes = new TurnWrites();

  constructor(routes: readonly Route[], private readonly opts: ConnectFastPathOptions) {
    this.live = liveContexts(opts.shutdownSignal);
    this.endStream = createEndStreamSerialization(opts.jsonOptions);
    for (const r of routes) {
      const spec = createServiceImplSpec(r.service, r.impl);
      const o = opts.routeOptions(r);
      for (const m of Object.values(spec.methods)) {
        if (m.kind !== "unary" && m.kind !== "server_streaming") continue;
        const serialization = createMethodSerializationLookup(m.method, undefined, opts.jsonOptions, o);
        this.methods.set(`/${r.service.typeName}/${m.method.name}`, { ...o, spec: m, procedure: `${r.service.typeName}/${m.method.name}`, serialization });
      }
    }
  }

  /** Handles an HTTP/2 stream if it is a call this path serves; returns false otherwise. */
  handleH2(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): boolean {
    return this.take(headers[":method"], headers[":path"] ?? "", headers, stream, () => new H2Exchange(stream));
  }

  /** Handles an HTTP/1.1 request if it is a call this path serves; returns false otherwise. */
  handleH1(req: http.IncomingMessage, res: http.ServerResponse): boolean {
    return this.take(req.method, req.url ?? "", req.headers, req, () => new H1Exchange(req, res, this.h1Writes));
  }

  /**
   * Serves a call of either HTTP version when this path serves it (a POST to a method it
   * knows, with a content type and timeout it reads); false leaves it to connect-node.
   * A stream or request the client resets fails (`source`'s "error"); its call ends by
   * "close" (the context's signal, the body reader).
   */
  private take(method: string | undefined, path: string, headers: http.IncomingHttpHeaders, source: { on(event: "error", listener: () => void): unknown }, exchange: () => Exchange): boolean {
    if (method !== "POST") return false;
    const m = this.methods.get(path);
    if (!m) return false;
    if (m.spec.kind === "server_streaming") {
      const plan = streamPlan(m, headers);
      if (!plan) return false;
      source.on("error", ignore);
      this.serveStream(exchange(), m, m.spec, headers, path, plan).catch(ignore);
      return true;
    }
    const binary = servedType(headers);
    if (binary === undefined) return false;
    const timeoutMs = servedTimeout(headers["connect-timeout-ms"]);
    if (timeoutMs === false) return false;
    source.on("error", ignore);
    this.serve(exchange(), m, headers, path, binary, timeoutMs).catch(ignore);
    return true;
  }

  // As connect-es's createUnaryHandler: read and parse (failures there are refused before
  // the chain and reported), run the chain, serialize; any error becomes the Connect error
  // body with its HTTP status; the body is compressed by the negotiated encoding when large
  // enough; trailers travel as `trailer-` headers.
  private async serve(x: Exchange, m: Method, headers: http.IncomingHttpHeaders, path: string, binary: boolean, timeoutMs: number | undefined): Promise<void> {
    const start = performance.now();
    x.arm();
    const ctx = new FastContext(m.spec.method.parent, m.spec.method, path, x.call, headers, timeoutMs, this.opts.shutdownSignal, this.live, x.socketOf, "connect", "POST");
    const compression = compressionNegotiate(m.acceptCompression as Compression[], null, single(headers["accept-encoding"]), "accept-encoding");
    let status = 200;
    let body: Uint8Array;
    let error: ConnectError | undefined;
    let unread = false;
    let reached = false;
    /** The frozen message the body encodes, when it does (its compressed body is cached). */
    let stored: object | undefined;
    try {
      let bytes: Uint8Array;
      try {
        bytes = await readBody(x.body, m.readMaxBytes, single(headers["content-length"]));
      } catch (err) {
        unread = true;
        throw err;
      }
      // Binary bodies by core's plan decoder where it reads them (fromBinary's message); the rest,
      // JSON and what the plan declines, by connect-es's serialization, with its errors.
      const input = (binary ? planDecode(m.spec.method.input, bytes) : undefined) ?? m.serialization.getI(binary).parse(bytes);
      const req = fastRequest(ctx, false, input);
      reached = true;
      const res = await applyInterceptors(invokeUnary(m.spec as Unary, ctx, req), this.opts.interceptors)(req);
      adoptResponse(ctx, res);
      body = binary ? this.binary(m, res.message as object) : this.json(m, res.message as object);
      if (Object.isFrozen(res.message)) stored = res.message as object;
    } catch (err) {
      if (err === CANCELED) {
        ctx.done();
        return;
      }
      error = clientDecodeError(err instanceof ConnectError ? err : new ConnectError("internal error", Code.Internal, undefined, undefined, err), m.spec.method.input);
      status = codeToHttpStatus(error.code);
      body = errorToJsonBytes(error, this.opts.jsonOptions);
      if (!reached) this.opts.refused(m.procedure, error, performance.now() - start);
    } finally {
      ctx.done();
    }
    const h: Record<string, string> = {};
    if (ctx.responseHeader.changed) ctx.responseHeader.forEach((v, k) => (h[k] = v));
    h["content-type"] = error || !binary ? CONTENT_TYPE_JSON : CONTENT_TYPE_PROTO;
    if (error) error.metadata.forEach((v, k) => (h[k] = v));
    if (ctx.responseTrailer.changed) ctx.responseTrailer.forEach((v, k) => appendHeader(h, `trailer-${k}`, v));
    const c = compression.response;
    if (c && body.byteLength >= m.compressMinBytes) {
      const cache = stored && compressedOf[binary ? 0 : 1];
      let packed = cache?.get(stored!)?.get(c);
      if (packed === undefined) {
        try {
          packed = await c.compress(body);
        } catch {
          // The router, failing here, writes no answer.
          x.abort();
          return;
        }
        if (cache) {
          let byCompression = cache.get(stored!);
          if (!byCompression) cache.set(stored!, (byCompression = new Map()));
          byCompression.set(c, packed);
        }
      }
      body = packed;
      h["content-encoding"] = c.name;
    }
    h["content-length"] = String(body.byteLength);
    x.send(status, h, body, unread);
  }

  // As connect-es's createStreamHandler: the request's one envelope is read (split,
  // decompressed, parsed by connect-es's own transforms) when the implementation's end of
  // the chain asks for it; the status (always 200) and headers go out with the first
  // envelope, so an implementation may set headers until it yields; each message is one
  // envelope, compressed when at least compressMinBytes; the stream ends with the
  // end-stream envelope (flag 0x02): the trailers as metadata, and the error if any.
  private async serveStream(x: Exchange, m: Method, spec: ServerStreaming, headers: http.IncomingHttpHeaders, path: string, plan: StreamPlan): Promise<void> {
    const ctx = new FastContext(spec.method.parent, spec.method, path, x.call, headers, plan.timeoutMs, this.opts.shutdownSignal, this.live, x.socketOf, "connect", "POST");
    const { binary, compression } = plan;
    const input = pipe(
      // An encoding the server does not know fails the call in its end-stream envelope, as on the router.
      // Not the body's own iterator: stopping it early (a request too large) would destroy the
      // body, and with it the h2 stream or the h1 socket the answer goes out on.
      compression.error ? failing(compression.error) : { [Symbol.asyncIterator]: () => x.body.iterator({ destroyOnReturn: false }) as AsyncIterator<Uint8Array> },
      transformSplitEnvelope(m.readMaxBytes),
      transformDecompressEnvelope(compression.request ?? null, m.readMaxBytes),
      transformParseEnvelope(m.serialization.getI(binary), endStreamFlag),
    );
    const out = new StreamOut(x, ctx, binary ? CONTENT_TYPE_STREAM_PROTO : CONTENT_TYPE_STREAM_JSON, compression.response?.name);
    const pack = compression.response ? SYNC_COMPRESS.get(compression.response) : undefined;
    const min = m.compressMinBytes;
    const seal = (flags: number, data: Uint8Array): Uint8Array => (pack && data.byteLength >= min ? envelopeOf(flags | 1, pack(data)) : envelopeOf(flags, data));
    const output = spec.method.output;
    const max = m.writeMaxBytes;
    // A binary envelope is a gRPC frame: gRPC's, whose stored (frozen) messages, a watch's shared updates, are framed once.
    const encode = binary
      ? (msg: object) => {
          const frame = envelope(output, msg, max);
          return pack && frame.byteLength - 5 >= min ? envelopeOf(1, pack(frame.subarray(5))) : frame;
        }
      : (msg: object) => (pack ? seal(0, this.json(m, msg)) : this.jsonEnvelope(m, msg));
    let error: ConnectError | undefined;
    try {
      const req = fastRequest(ctx, true, input);
      const res = await applyInterceptors(invokeServerStreaming(spec, ctx, req), this.opts.interceptors)(req);
      adoptResponse(ctx, res);
      await pump(out, res.message as AsyncIterable<unknown>, encode);
    } catch (err) {
      if (err === CANCELED || x.out.destroyed) {
        ctx.done();
        return;
      }
      error = err instanceof ConnectError ? err : new ConnectError("internal error", Code.Internal, undefined, undefined, err);
    }
    ctx.done();
    let end: Uint8Array;
    try {
      end = seal(endStreamFlag, this.endStream.serialize(error ? { metadata: ctx.responseTrailer, error } : { metadata: ctx.responseTrailer }));
    } catch {
      x.abort();
      return;
    }
    if (!out.started) out.start();
    if (!x.out.destroyed) x.end(end);
  }

  /** A message's uncompressed JSON envelope (a frozen message's made once). */
  private jsonEnvelope(m: Method, msg: object): Uint8Array {
    const frozen = Object.isFrozen(msg);
    const cached = frozen ? jsonEnvelopeOf.get(msg) : undefined;
    if (cached !== undefined && cached.byteLength - 5 <= m.writeMaxBytes) return cached;
    const out = envelopeOf(0, this.json(m, msg));
    if (frozen) jsonEnvelopeOf.set(msg, out);
    return out;
  }

  private binary(m: Method, msg: object): Uint8Array {
    const bytes = encodeMessage(m.spec.method.output, msg);
    if (bytes.byteLength > m.writeMaxBytes) throw new ConnectError(`message size ${bytes.byteLength} is larger than configured writeMaxBytes ${m.writeMaxBytes}`, Code.ResourceExhausted);
    return bytes;
  }

  private json(m: Method, msg: object): Uint8Array {
    const frozen = Object.isFrozen(msg);
    const cached = frozen ? jsonOf.get(msg) : undefined;
    if (cached === undefined) {
      const bytes = m.serialization.getO(false).serialize(msg as never);
      if (frozen) jsonOf.set(msg, bytes);
      return bytes;
    }
    if (cached.byteLength > m.writeMaxBytes) throw new ConnectError(`message size ${cached.byteLength} is larger than configured writeMaxBytes ${m.writeMaxBytes}`, Code.ResourceExhausted);
    return cached;
  }
}

const CONTENT_TYPE_STREAM_PROTO = "application/connect+proto";
const CONTENT_TYPE_STREAM_JSON = "application/connect+json";

/**
 * The compressions a streamed response may use here, each done per message and
 * synchronously (the pump writes as messages come): connect-node's gzip and brotli at
 * their default settings, and the routes' gzipWherePays. A route with another goes to the router.
 */
const SYNC_COMPRESS = new Map<Compression, (data: Uint8Array) => Uint8Array>([
  [compressionGzip, (data) => gzipSync(data)],
  [compressionBrotli, (data) => brotliCompressSync(data)],
  [gzipWherePays, gzipWherePaysSync],
]);

/** How a streaming call is served: its format, deadline and negotiated compression. */
interface StreamPlan {
  readonly binary: boolean;
  readonly timeoutMs: number | undefined;
  readonly compression: ReturnType<typeof compressionNegotiate>;
}

/** A streaming call this path serves, or undefined for one it leaves to the router (another content type, a malformed timeout, a response encoding it cannot apply per message synchronously). */
function streamPlan(m: Method, headers: http.IncomingHttpHeaders): StreamPlan | undefined {
  const type = parseContentType(single(headers["content-type"]));
  if (type === undefined || !type.stream) return undefined;
  const timeoutMs = servedTimeout(headers["connect-timeout-ms"]);
  if (timeoutMs === false) return undefined;
  const compression = compressionNegotiate(m.acceptCompression as Compression[], single(headers["connect-content-encoding"]), single(headers["connect-accept-encoding"]), "connect-accept-encoding");
  if (compression.response && !SYNC_COMPRESS.has(compression.response)) return undefined;
  return { binary: type.binary, timeoutMs, compression };
}

/** An envelope: flags, a 4-byte big-endian length, the data. */
function envelopeOf(flags: number, data: Uint8Array): Uint8Array {
  const out = Buffer.allocUnsafe(data.byteLength + 5);
  out[0] = flags;
  out.writeUInt32BE(data.byteLength, 1);
  out.set(data, 5);
  return out;
}

/**
 * A streamed response's writer for the pump: the status and headers go out with the
 * first bytes (what the implementation set until then, as connect-es's untilFirst).
 */
class StreamOut implements Sink {
  started = false;

  constructor(
    private readonly x: Exchange,
    private readonly ctx: FastContext,
    private readonly contentType: string,
    private readonly encoding: string | undefined,
  ) {}

  start(): void {
    this.started = true;
    const h: Record<string, string> = {};
    if (this.ctx.responseHeader.changed) this.ctx.responseHeader.forEach((v, k) => (h[k] = v));
    h["content-type"] = this.contentType;
    if (this.encoding !== undefined) h["connect-content-encoding"] = this.encoding;
    if (!this.x.out.destroyed) this.x.head(h);
  }

  write(bytes: Uint8Array): boolean {
    if (!this.started) this.start();
    return this.x.out.write(bytes);
  }

  get writableLength(): number {
    return this.x.out.writableLength;
  }

  get writableNeedDrain(): boolean {
    return this.x.out.writableNeedDrain;
  }

  get destroyed(): boolean {
    return this.x.out.destroyed;
  }

  on(event: "close" | "drain", listener: () => void): unknown {
    return this.x.out.on(event, listener);
  }

  once(event: "close" | "drain", listener: () => void): unknown {
    return this.x.out.once(event, listener);
  }

  off(event: "close" | "drain", listener: () => void): unknown {
    return this.x.out.off(event, listener);
  }
}

/** Whether a request's content type is Connect unary binary (true) or JSON (false), or one this path leaves to the router (undefined: no, another, or a compressed body). */
function servedType(headers: http.IncomingHttpHeaders): boolean | undefined {
  const type = headers["content-type"];
  if (type === undefined || !contentTypeUnaryRegExp.test(type)) return undefined;
  const encoding = headers["content-encoding"];
  if (encoding !== undefined && encoding !== "identity") return undefined;
  return type.length === CONTENT_TYPE_PROTO.length && type.toLowerCase() === CONTENT_TYPE_PROTO;
}

/** A connect-timeout-ms this path serves: none (undefined), milliseconds, or false for one the router refuses. */
function servedTimeout(raw: string | string[] | undefined): number | undefined | false {
  if (raw === undefined) return undefined;
  if (typeof raw !== "string" || !/^\d{1,10}$/.test(raw)) return false;
  return parseInt(raw, 10);
}

function ignore(): void {}

// eslint-disable-next-line require-yield
async function* failing(err: unknown): AsyncIterable<Uint8Array> {
  throw err;
}

function single(v: string | string[] | undefined): string | null {
  return v === undefined ? null : Array.isArray(v) ? v.join(", ") : v;
}

function appendHeader(h: Record<string, string>, k: string, v: string): void {
  h[k] = h[k] === undefined ? v : `${h[k]}, ${v}`;
}

/**
 * Reads a request body as connect-es's readAllBytes does: with a content-length, more
 * than `readMaxBytes` is refused before reading and a body of another length is the
 * client's error; without one, reading stops once the body passes the limit.
 */
function readBody(body: Readable, readMaxBytes: number, lengthHint: string | null): Promise<Uint8Array> {
  const n = lengthHint === null ? NaN : parseInt(lengthHint, 10);
  const hinted = Number.isSafeInteger(n) && n >= 0;
  if (hinted && n > readMaxBytes) return Promise.reject(new ConnectError(`message size ${n} is larger than configured readMaxBytes ${readMaxBytes}`, Code.ResourceExhausted));
  return new Promise((resolve, reject) => new BodyReader(body, readMaxBytes, hinted ? n : -1, resolve, reject));
}

/** The listeners of one body read, as methods (no closures per call). */
class BodyReader {
  private readonly chunks: Buffer[] = [];
  private size = 0;
  private readonly onData = this.data.bind(this);
  private readonly onEnd = this.end.bind(this);
  private readonly onGone = this.gone.bind(this);

  constructor(
    private readonly body: Readable,
    private readonly readMaxBytes: number,
    /** The promised length, or -1. */
    private readonly hint: number,
    private readonly resolve: (bytes: Uint8Array) => void,
    private readonly reject: (err: unknown) => void,
  ) {
    body.on("data", this.onData);
    body.once("end", this.onEnd);
    body.once("error", this.onGone);
    body.once("close", this.onGone);
  }

  private data(c: Buffer): void {
    this.size += c.length;
    if (this.hint >= 0 && this.size > this.hint) return this.fail(new ConnectError(`protocol error: promised ${this.hint} bytes, received ${this.size}`, Code.InvalidArgument));
    if (this.hint < 0 && this.size > this.readMaxBytes) return this.fail(new ConnectError(`message size is larger than configured readMaxBytes ${this.readMaxBytes}`, Code.ResourceExhausted));
    this.chunks.push(c);
  }

  private end(): void {
    this.cleanup();
    if (this.hint >= 0 && this.size < this.hint) this.reject(new ConnectError(`protocol error: promised ${this.hint} bytes, received ${this.size}`, Code.InvalidArgument));
    else this.resolve(this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.size));
  }

  private gone(): void {
    this.fail(CANCELED);
  }

  private fail(err: unknown): void {
    this.cleanup();
    this.reject(err);
  }

  private cleanup(): void {
    this.body.off("data", this.onData);
    this.body.off("end", this.onEnd);
    this.body.off("error", this.onGone);
    this.body.off("close", this.onGone);
  }
}
