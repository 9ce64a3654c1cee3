import { create, isMessage, type DescMessage } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type MethodImplSpec, type StreamRequest, type StreamResponse, type UnaryRequest, type UnaryResponse } from "@connectrpc/connect";
import type { AnyFn } from "../interceptors/apply-interceptors.js";
import { observeStream } from "../interceptors/observe-stream.js";
import type { FastContext } from "./fast-context.js";
import { HEADER_READER } from "../call-context.js";

// The request and response objects the fast path hands its interceptor chain: the same
// shape as connect-es builds on its router (interceptor.d.ts), so one Interceptor[] serves
// both.

type Unary = Extract<MethodImplSpec, { kind: "unary" }>;
type ServerStreaming = Extract<MethodImplSpec, { kind: "server_streaming" }>;

const CTX = Symbol("fast-path context");
interface RequestState {
  readonly [CTX]: FastContext;
  readonly stream: boolean;
  readonly message: unknown;
}
const KEYS = ["stream", "service", "method", "requestMethod", "url", "signal", "header", "contextValues", "message"];

/**
 * A request reads its costly parts (signal, header, url, contextValues) from the lazy
 * FastContext when asked. It is a proxy, not an object with getters: an object literal
 * with getters costs microseconds in V8, more than the call, and getters on a class would
 * be lost when an interceptor copies the request (`next({ ...req, message })`); copying
 * the proxy copies every part, as copying Connect's request does.
 */
const requestHandler: ProxyHandler<RequestState> = {
  get(t, key) {
    switch (key) {
      case "stream":
        return t.stream;
      case "message":
        return t.message;
      case "service":
        return t[CTX].service;
      case "method":
        return t[CTX].method;
      case "requestMethod":
        return t[CTX].requestMethod;
      case "url":
        return t[CTX].url;
      case "signal":
        return t[CTX].signal;
      case "header":
        return t[CTX].requestHeader;
      case "contextValues":
        return t[CTX].values;
      case HEADER_READER:
        return t[CTX];
      default:
        return typeof key === "symbol" && key !== CTX ? Reflect.get(t, key) : undefined;
    }
  },
  has: (_t, key) => typeof key === "string" && KEYS.includes(key),
  ownKeys: () => [...KEYS],
  getOwnPropertyDescriptor: (t, key) => (typeof key === "string" && KEYS.includes(key) ? { value: requestHandler.get!(t, key, t), writable: false, enumerable: true, configurable: true } : undefined),
  set: () => false,
};

/**
 * The request of a call: for a unary call its message, read; for a server-streaming call
 * an iterable that yields its one message (read when the implementation's end of the
 * chain asks, as on the Connect router).
 */
export function fastRequest(ctx: FastContext, stream: boolean, message: unknown): UnaryRequest | StreamRequest {
  return new Proxy<RequestState>({ [CTX]: ctx, stream, message }, requestHandler) as unknown as UnaryRequest | StreamRequest;
}

/** The innermost function of a unary call's chain: runs the implementation, as connect's invokeUnaryImplementation. */
export function invokeUnary(spec: Unary, ctx: FastContext, original: UnaryRequest | StreamRequest): AnyFn {
  return async (req) => {
    let out: unknown;
    try {
      out = await spec.impl(req.message as never, contextFor(ctx, req, original));
    } catch (err) {
      throw ctx.expired() ? ctx.deadlineError : err;
    }
    return fastResponse(ctx, false, normalize(spec.method.output, out));
  };
}

/** The innermost function of a server-streaming call's chain: reads the one request message and starts the implementation's stream. */
export function invokeServerStreaming(spec: ServerStreaming, ctx: FastContext, original: UnaryRequest | StreamRequest): AnyFn {
  return async (req) => {
    if (!req.stream) throw new ConnectError("protocol error: an interceptor turned a streaming request into a unary one", Code.Internal);
    let output: AsyncIterable<unknown>;
    try {
      output = spec.impl((await single(req.message)) as never, contextFor(ctx, req, original));
    } catch (err) {
      throw ctx.expired() ? ctx.deadlineError : err;
    }
    // A stream that ends, or fails, once the deadline has passed ended because of it.
    const message = ctx.hasDeadline() ? observeStream(output, { settle: (err) => (ctx.expired() ? ctx.deadlineError : err) }) : output;
    return fastResponse(ctx, true, message);
  };
}

/** The response of a call, remembered as the call's own; its headers and trailers are the call's (cheap until written). */
function fastResponse(ctx: FastContext, stream: boolean, message: unknown): UnaryResponse | StreamResponse {
  const res = { stream, service: ctx.service, method: ctx.method, header: ctx.responseHeader, trailer: ctx.responseTrailer, message } as UnaryResponse | StreamResponse;
  ctx.ownResponse = res;
  return res;
}

/**
 * Copies into the call's response what an interceptor put in headers or trailers of its
 * own making, as connect's router does; the fast path's own response writes to them directly.
 */
export function adoptResponse(ctx: FastContext, res: UnaryResponse | StreamResponse): void {
  if (res === ctx.ownResponse) return;
  replace(res.header, ctx.responseHeader);
  replace(res.trailer, ctx.responseTrailer);
}

/** The context an implementation gets: the call's own, or, for a request an interceptor replaced with other parts, one that reads from it (connect's mergeRequest). */
function contextFor(ctx: FastContext, req: UnaryRequest | StreamRequest, original: UnaryRequest | StreamRequest): HandlerContext {
  if (req === original || (req.service === ctx.service && req.signal === ctx.signal && req.header === ctx.requestHeader && req.contextValues === ctx.values)) return ctx;
  return {
    method: ctx.method,
    service: req.service,
    protocolName: ctx.protocolName,
    requestMethod: ctx.requestMethod,
    url: req.url,
    signal: req.signal,
    timeoutMs: () => ctx.timeoutMs(),
    requestHeader: req.header,
    values: req.contextValues,
    responseHeader: ctx.responseHeader,
    responseTrailer: ctx.responseTrailer,
  };
}

/** The one message of a request stream, refusing none or more, as connect's ensureSingle. */
async function single<T>(messages: AsyncIterable<T>): Promise<T> {
  const it = messages[Symbol.asyncIterator]();
  const first = await it.next();
  if (first.done === true) throw new ConnectError("protocol error: missing input message for server-streaming method", Code.Unimplemented);
  const second = await it.next();
  if (second.done !== true) throw new ConnectError("protocol error: received extra input message for server-streaming method", Code.Unimplemented);
  return first.value;
}

/** What an implementation returned, as a message of the output type (an init object becomes one), as connect's normalize. */
function normalize(schema: DescMessage, value: unknown): unknown {
  return isMessage(value, schema) ? value : create(schema, value as never);
}

function replace(from: Headers, to: Headers): void {
  if (from === to) return;
  [...to.keys()].forEach((k) => to.delete(k));
  from.forEach((v, k) => to.set(k, v));
}
