import type { IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import type { DescMethod } from "@bufbuild/protobuf";
import { createServiceImplSpec, type ConnectError, type Interceptor, type MethodImplSpec } from "@connectrpc/connect";
import { parseTimeout } from "@connectrpc/connect/protocol-grpc";
import { toConnectError } from "../errors.js";
import { applyInterceptors } from "../interceptors/apply-interceptors.js";
import type { Route } from "../routes.js";
import { acceptsGzip, gzipFrameIfItPays } from "./response-compression.js";
import { DEADLINE, FastContext, liveContexts, type CallStream } from "./fast-context.js";
import { adoptResponse, fastRequest, invokeServerStreaming, invokeUnary } from "./fast-request.js";
import { decodeMessage, envelope, finish, readMessage, respond } from "./grpc-wire.js";
import { pump, type Encode } from "./stream-pump.js";

/** Limits and interceptors of the fast path: the very ones the Connect router gets. */
export interface FastPathOptions {
  readonly readMaxBytes: number;
  readonly writeMaxBytes: number;
  readonly shutdownSignal: AbortSignal;
  /** Run around every call, in this order (the first outermost), as the Connect router runs them. */
  readonly interceptors: readonly Interceptor[];
  /** Told of a call refused before the interceptor chain (its request undecodable or too large). */
  readonly refused: (procedure: string, err: ConnectError, durationMs: number) => void;
}

type Served = Extract<MethodImplSpec, { kind: "unary" } | { kind: "server_streaming" }>;

/** What a path serves, found with one lookup per call: the method, its limits and its compression threshold. */
interface Plan {
  readonly spec: Served;
  readonly limits: { readonly readMaxBytes: number; readonly writeMaxBytes: number };
  /** Unary responses of at least this many bytes are gzipped where it pays (Route.compressMinBytes). */
  readonly compressMin: number | undefined;
}

/** The socket of an HTTP/2 stream's connection. */
export const h2Socket = (stream: CallStream): unknown => (stream as ServerHttp2Stream).session?.socket;

const GRPC_CONTENT_TYPE = /^application\/grpc(\+proto)?$/;

/**
 * Serves unary and server-streaming gRPC calls straight from HTTP/2 streams: the same
 * service implementations and the same interceptors as the Connect router, without its
 * per-call machinery (docs/adr/0003-*.md). Everything else (Connect, gRPC-Web, bidi and
 * client streams, compressed messages, unknown paths) goes to the Connect router.
 */
export class GrpcFastPath {
  /** By path: each method with its route's limits (Route.limits, or the server's) and compression. */
  private readonly methods = new Map<string, Plan>();
  private readonly live: Set<FastContext>;
  /** Each streaming method's encoder, one for all its calls (so the pump encodes a fan-out's shared batches once). */
  private readonly encoders = new Map<DescMethod, Encode>();

  constructor(routes: readonly Route[], private readonly opts: FastPathOptions) {
    this.live = liveContexts(opts.shutdownSignal);
    for (const r of routes) {
      const spec = createServiceImplSpec(r.service, r.impl);
      for (const m of Object.values(spec.methods)) {
        if (m.kind !== "unary" && m.kind !== "server_streaming") continue;
        this.methods.set(`/${r.service.typeName}/${m.method.name}`, { spec: m, limits: r.limits ?? opts, compressMin: r.compressMinBytes });
      }
    }
  }

  /** Handles the stream if it is a call the fast path serves; returns false otherwise. */
  handle(stream: ServerHttp2Stream, headers: IncomingHttpHeaders): boolean {
    if (headers[":method"] !== "POST") return false;
    const path = headers[":path"] ?? "";
    const plan = this.methods.get(path);
    if (!plan || !GRPC_CONTENT_TYPE.test(headers["content-type"] ?? "")) return false;
    const encoding = headers["grpc-encoding"];
    if (encoding !== undefined && encoding !== "identity") return false;
    const rawTimeout = headers["grpc-timeout"];
    const timeout = parseTimeout(typeof rawTimeout === "string" ? rawTimeout : null, Number.MAX_SAFE_INTEGER);
    if (timeout.error) return false;
    const spec = plan.spec;
    const ctx = new FastContext(spec.method.parent, spec.method, path, stream, headers, timeout.timeoutMs, this.opts.shutdownSignal, this.live, h2Socket);
    const { limits, compressMin } = plan;
    const gzipAbove = compressMin !== undefined && acceptsGzip(headers["grpc-accept-encoding"]) ? compressMin : undefined;
    void (spec.kind === "unary" ? this.serveUnary(stream, spec, ctx, limits, gzipAbove) : this.serveStreaming(stream, spec, ctx, limits));
    return true;
  }

  // A request that fails before the chain (too large, undecodable) is refused as the Connect
  // router refuses it there: with its status, unseen by the interceptors, and reported.
  private async serveUnary(stream: ServerHttp2Stream, spec: Extract<Served, { kind: "unary" }>, ctx: FastContext, limits: Route["limits"] & {}, gzipAbove: number | undefined): Promise<void> {
    const start = performance.now();
    let req;
    try {
      req = fastRequest(ctx, false, decodeMessage(spec.method.input, await readMessage(stream, limits.readMaxBytes)));
    } catch (err) {
      const e = ctx.expired() ? DEADLINE : toConnectError(err);
      finish(stream, ctx, e);
      ctx.done();
      this.opts.refused(`${spec.method.parent.typeName}/${spec.method.name}`, e, performance.now() - start);
      return;
    }
    try {
      const res = await applyInterceptors(invokeUnary(spec, ctx, req), this.opts.interceptors)(req);
      adoptResponse(ctx, res);
      let bytes = envelope(spec.method.output, res.message as object, limits.writeMaxBytes);
      const packed = gzipAbove === undefined ? undefined : await gzipFrameIfItPays(bytes, gzipAbove);
      if (packed) {
        bytes = packed;
        ctx.responseHeader.set("grpc-encoding", "gzip");
      }
      respond(stream, ctx);
      finish(stream, ctx, undefined, bytes);
    } catch (err) {
      finish(stream, ctx, ctx.expired() ? DEADLINE : toConnectError(err));
    } finally {
      ctx.done();
    }
  }

  private async serveStreaming(stream: ServerHttp2Stream, spec: Extract<Served, { kind: "server_streaming" }>, ctx: FastContext, limits: Route["limits"] & {}): Promise<void> {
    // Read from now on; a bad request message fails the call when its implementation's end of the chain reads it.
    const body = readMessage(stream, limits.readMaxBytes);
    body.catch(() => undefined);
    const input = spec.method.input;
    const req = fastRequest(ctx, true, {
      async *[Symbol.asyncIterator]() {
        yield decodeMessage(input, await body);
      },
    });
    try {
      const res = await applyInterceptors(invokeServerStreaming(spec, ctx, req), this.opts.interceptors)(req);
      adoptResponse(ctx, res);
      respond(stream, ctx);
      await pump(stream, res.message as AsyncIterable<unknown>, this.encoderOf(spec.method, limits.writeMaxBytes));
      finish(stream, ctx, undefined);
    } catch (err) {
      finish(stream, ctx, ctx.expired() ? DEADLINE : toConnectError(err));
    } finally {
      ctx.done();
    }
  }

  private encoderOf(method: DescMethod, max: number): Encode {
    let encode = this.encoders.get(method);
    if (!encode) {
      const output = method.output;
      encode = (m) => envelope(output, m, max);
      this.encoders.set(method, encode);
    }
    return encode;
  }
}
