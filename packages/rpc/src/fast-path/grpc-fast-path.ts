import * as http2 from "node:http2";
import type { IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import { fromBinary, type DescMessage } from "@bufbuild/protobuf";
import { Code, ConnectError, createServiceImplSpec, type MethodImplSpec } from "@connectrpc/connect";
import { isPushIterable, type PushIterable } from "@quantix/core";
import { parseTimeout, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import type { Logger } from "../log/logger.js";
import type { RpcMetrics } from "../metrics/rpc-metrics.js";
import { encodeMessage } from "./encode-cache.js";
import { toConnectError } from "../errors.js";
import { FastContext } from "./fast-context.js";
import { idsOf, logRpc } from "../interceptors/observe-calls.js";
import type { Route } from "../routes.js";

/** Limits of the fast path; the same as the Connect router's. */
export interface FastPathOptions {
  readonly readMaxBytes: number;
  readonly writeMaxBytes: number;
  readonly shutdownSignal: AbortSignal;
  readonly log: Logger;
  /** Counts every call it serves, as the Connect interceptor does (the control plane's /metrics). */
  readonly metrics?: RpcMetrics;
}

type Served = Extract<MethodImplSpec, { kind: "unary" } | { kind: "server_streaming" }>;
interface Entry {
  readonly spec: Served;
  readonly service: Route["service"];
  readonly procedure: string;
}

/** A watcher whose client lets more than this many bytes pile up is cut off (it can resume). */
const MAX_BUFFERED_BYTES = 16 * 1024 * 1024;
const SLOW_CLIENT_GRACE_MS = 10_000;
const CANCELED = new ConnectError("the client cancelled the call", Code.Canceled);
/** Framed bytes of frozen messages (shared watch updates), written as they are to every stream. */
const enveloped = new WeakMap<object, Uint8Array>();
const GRPC_CONTENT_TYPE = /^application\/grpc(\+proto)?$/;
const RESPONSE_HEADERS = { ":status": "200", "content-type": "application/grpc+proto", "grpc-accept-encoding": "identity" };

/**
 * Serves unary and server-streaming gRPC calls straight from HTTP/2 streams: the same
 * service implementations, error mapping and log lines as the Connect router, without
 * its per-call machinery (docs/adr/0003-grpc-fast-path.md). Everything else (Connect,
 * gRPC-Web, bidi and client streams, compressed messages, unknown paths) goes to the
 * Connect router.
 */
export class GrpcFastPath {
  private readonly methods = new Map<string, Entry>();
  private readonly live = new Set<FastContext>();

  constructor(routes: readonly Route[], private readonly opts: FastPathOptions) {
    opts.shutdownSignal.addEventListener("abort", () => {
      for (const ctx of this.live) ctx.abort(opts.shutdownSignal.reason);
    }, { once: true });
    for (const r of routes) {
      const spec = createServiceImplSpec(r.service, r.impl);
      for (const m of Object.values(spec.methods)) {
        if (m.kind !== "unary" && m.kind !== "server_streaming") continue;
        const procedure = `${r.service.typeName}/${m.method.name}`;
        this.methods.set(`/${procedure}`, { spec: m, service: r.service, procedure });
      }
    }
  }

  /** Handles the stream if it is a call the fast path serves; returns false otherwise. */
  handle(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): boolean {
    if (headers[":method"] !== "POST") return false;
    const entry = this.methods.get(headers[":path"] ?? "");
    if (!entry || !GRPC_CONTENT_TYPE.test(headers["content-type"] ?? "")) return false;
    const encoding = headers["grpc-encoding"];
    if (encoding !== undefined && encoding !== "identity") return false;
    const rawTimeout = headers["grpc-timeout"];
    const timeout = parseTimeout(typeof rawTimeout === "string" ? rawTimeout : null, Number.MAX_SAFE_INTEGER);
    if (timeout.error) return false;
    const ctx = new FastContext(entry.service, entry.spec.method, headers[":path"] ?? "", stream, headers, timeout.timeoutMs, this.opts.shutdownSignal, this.live);
    void this.serve(stream, entry, ctx);
    return true;
  }

  private async serve(stream: ServerHttp2Stream, entry: Entry, ctx: FastContext): Promise<void> {
    const start = performance.now();
    const { spec } = entry;
    const streaming = spec.kind === "server_streaming";
    let ids: Record<string, string> = {};
    let messages = 0;
    if (streaming) this.opts.metrics?.streamOpened(entry.procedure);
    try {
      const input = fromBinary(spec.method.input, await this.readMessage(stream));
      ids = idsOf(input);
      if (spec.kind === "unary") {
        const output = await spec.impl(input as never, ctx);
        const bytes = this.envelope(spec.method.output, output as object);
        this.respond(stream, ctx);
        stream.write(bytes);
        messages = 1;
      } else {
        this.respond(stream, ctx);
        messages = await this.pump(stream, spec.impl(input as never, ctx), spec.method.output);
        if (ctx.expired()) throw new ConnectError("the deadline passed", Code.DeadlineExceeded);
      }
      this.finish(stream, ctx, undefined);
      const ms = performance.now() - start;
      this.opts.metrics?.observe(entry.procedure, 0, ms);
      logRpc(this.opts.log, entry.procedure, 0, ms, ids, streaming ? messages : undefined);
    } catch (err) {
      const ce = ctx.expired() ? new ConnectError("the deadline passed", Code.DeadlineExceeded) : toConnectError(err);
      this.finish(stream, ctx, ce);
      const ms = performance.now() - start;
      this.opts.metrics?.observe(entry.procedure, ce.code, ms);
      logRpc(this.opts.log, entry.procedure, ce.code, ms, ids, streaming ? messages : undefined, ce.cause ?? err);
    } finally {
      if (streaming) this.opts.metrics?.streamClosed(entry.procedure);
      ctx.done();
    }
  }

  /** Reads the request body: exactly one uncompressed, length-prefixed message. */
  private readMessage(stream: ServerHttp2Stream): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let size = 0;
      const limit = this.opts.readMaxBytes + 5;
      const onData = (c: Buffer) => {
        size += c.length;
        if (size > limit) {
          stream.off("data", onData);
          reject(new ConnectError(`message larger than configured max ${this.opts.readMaxBytes} bytes`, Code.ResourceExhausted));
          // Answer first (serve's catch), then reset the stream so the client stops sending (RFC 9113 §8.1).
          setImmediate(() => stream.closed || stream.close(http2.constants.NGHTTP2_NO_ERROR));
          return;
        }
        chunks.push(c);
      };
      stream.on("data", onData);
      stream.once("end", () => {
        const body = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
        if (body.length < 5 || body[0] !== 0) {
          reject(new ConnectError(body.length < 5 ? "protocol error: missing request message" : "protocol error: compressed message without grpc-encoding", Code.Internal));
          return;
        }
        if (body.length !== 5 + body.readUInt32BE(1)) {
          reject(new ConnectError("protocol error: expected exactly one request message", Code.Unimplemented));
          return;
        }
        resolve(body.subarray(5));
      });
      stream.once("error", reject);
      stream.once("close", () => reject(CANCELED));
    });
  }

  private respond(stream: ServerHttp2Stream, ctx: FastContext): void {
    if (stream.headersSent || stream.destroyed) return;
    const extra = ctx.headersSet();
    if (!extra) {
      stream.respond(RESPONSE_HEADERS, { waitForTrailers: true });
      return;
    }
    const h: Record<string, string> = { ...RESPONSE_HEADERS };
    extra.forEach((v, k) => (h[k] = v));
    stream.respond(h, { waitForTrailers: true });
  }

  /**
   * Writes a stream's messages. A push source (a watch) writes each batch it is handed as
   * one write, from the fan-out itself; any other source is pulled, and the messages it
   * yields in one turn of the event loop go out as one write.
   */
  private pump(stream: ServerHttp2Stream, source: AsyncIterable<unknown>, output: DescMessage): Promise<number> {
    return isPushIterable(source) ? this.piped(stream, source, output) : this.pulled(stream, source, output);
  }

  private piped(stream: ServerHttp2Stream, source: PushIterable<unknown>, output: DescMessage): Promise<number> {
    return new Promise<number>((resolve, reject) => {
      let count = 0;
      let settled = false;
      let stop: (() => void) | undefined;
      /** Since when more than MAX_BUFFERED_BYTES have been waiting for the client, if they are. */
      let overSince: number | undefined;
      const settle = (err?: unknown) => {
        if (settled) return;
        settled = true;
        stream.off("close", onClose);
        if (err === undefined) resolve(count);
        else reject(err);
        stop?.();
      };
      const onClose = () => settle(CANCELED);
      stream.once("close", onClose);
      stop = source.pipe({
        push: (msgs) => {
          if (settled || stream.destroyed) return;
          const frames = msgs.map((m) => this.envelope(output, m as object));
          count += msgs.length;
          stream.write(frames.length === 1 ? frames[0]! : Buffer.concat(frames));
          // A large snapshot may take a while to drain; a client that stays behind is cut off.
          if (stream.writableLength <= MAX_BUFFERED_BYTES) overSince = undefined;
          else if ((overSince ??= Date.now()) + SLOW_CLIENT_GRACE_MS < Date.now()) {
            settle(new ConnectError(`the client reads too slowly: more than ${MAX_BUFFERED_BYTES} bytes have waited for ${SLOW_CLIENT_GRACE_MS / 1000} s; resume from the last resource_version received`, Code.ResourceExhausted));
          }
        },
        fail: (err) => settle(err ?? new Error("stream failed")),
        end: () => settle(),
      });
      if (settled) stop();
    });
  }

  private async pulled(stream: ServerHttp2Stream, source: AsyncIterable<unknown>, output: DescMessage): Promise<number> {
    let pending: Uint8Array[] = [];
    let scheduled = false;
    let count = 0;
    const flush = () => {
      scheduled = false;
      if (pending.length === 0 || stream.destroyed) return;
      const batch = pending.length === 1 ? pending[0]! : Buffer.concat(pending);
      pending = [];
      stream.write(batch);
    };
    for await (const msg of source) {
      if (stream.destroyed) break;
      pending.push(this.envelope(output, msg as object));
      count++;
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
      if (stream.writableNeedDrain) {
        flush();
        await drained(stream);
      }
    }
    flush();
    return count;
  }

  private envelope(schema: DescMessage, msg: object): Uint8Array {
    const cached = Object.isFrozen(msg) ? enveloped.get(msg) : undefined;
    if (cached) return cached;
    const bytes = encodeMessage(schema, msg);
    if (bytes.length > this.opts.writeMaxBytes) throw new ConnectError(`message size ${bytes.length} is larger than configured writeMaxBytes ${this.opts.writeMaxBytes}`, Code.ResourceExhausted);
    const out = Buffer.allocUnsafe(bytes.length + 5);
    out[0] = 0;
    out.writeUInt32BE(bytes.length, 1);
    out.set(bytes, 5);
    if (Object.isFrozen(msg)) enveloped.set(msg, out);
    return out;
  }

  /** Ends the call with its status: in trailers after a response, or trailers-only before one. */
  private finish(stream: ServerHttp2Stream, ctx: FastContext, error: ConnectError | undefined): void {
    if (stream.destroyed || stream.closed) return;
    const set = ctx.trailersSet();
    const t: Record<string, string> = {};
    setTrailerStatus(set ? new Headers(set) : new Headers(), error).forEach((v, k) => (t[k] = v));
    if (!stream.headersSent) {
      stream.respond({ ":status": "200", "content-type": "application/grpc+proto", ...t }, { endStream: true });
      return;
    }
    stream.once("wantTrailers", () => stream.sendTrailers(t));
    stream.end();
  }
}

function drained(stream: ServerHttp2Stream): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      resolve();
    };
    stream.on("drain", done);
    stream.on("close", done);
  });
}
