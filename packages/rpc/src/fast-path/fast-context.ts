import type { DescMethod, DescService } from "@bufbuild/protobuf";
import type { IncomingHttpHeaders } from "node:http2";
import { Code, ConnectError, createContextKey, createContextValues, type ContextValues, type HandlerContext } from "@connectrpc/connect";
import { OutgoingHeaders } from "./fast-headers.js";
import { peerKey, peerOfSocket, type Peer } from "../call-context.js";

// Abort reasons made once: aborting without a reason builds a DOMException (and its stack) per call.
const CLOSED = new ConnectError("the client closed the stream", Code.Canceled);
/** What a call whose deadline passed ends with. */
export const DEADLINE = new ConnectError("the deadline passed", Code.DeadlineExceeded);
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * True in the context values of a call the gRPC fast path serves, false (the default) on
 * the Connect router: lets an interceptor, a log or a test tell the paths apart.
 */
export const servedByFastPath = createContextKey(false, { description: "served by a fast path (gRPC or Connect)" });

/** What the connect-es router aborts a call with when its Connect deadline passes (protocol/signals.js). */
export const CONNECT_DEADLINE = new ConnectError("the operation timed out", Code.DeadlineExceeded);

/**
 * The transport side of a call: an HTTP/2 stream, or an HTTP/1.1 response (whose "close"
 * comes when it is done or its connection went away).
 */
export interface CallStream {
  readonly closed: boolean;
  readonly destroyed: boolean;
  once(event: "close", listener: () => void): unknown;
}

/** A set for a fast path's contexts with a live signal, each aborted with the shutdown's reason when `shutdown` aborts (one listener for all). */
export function liveContexts(shutdown: AbortSignal): Set<FastContext> {
  const live = new Set<FastContext>();
  shutdown.addEventListener("abort", () => {
    for (const ctx of live) ctx.abort(shutdown.reason);
  }, { once: true });
  return live;
}

/** Each connection's peer, by its socket, made on the first call that asks. */
const peers = new WeakMap<object, Peer>();

/**
 * The peer of a call's connection: the same for all its calls (a connection's address and
 * certificate do not change), so read once. Reading it through an HTTP/2 session's socket
 * proxy cost ~130 ns a call (three proxied reads), on every call an interceptor reads the
 * context values of (the identity interceptor's, every call).
 */
function connectionPeer(socket: unknown): Peer {
  if (typeof socket !== "object" || socket === null) return peerOfSocket(undefined);
  let peer = peers.get(socket);
  if (peer === undefined) peers.set(socket, (peer = peerOfSocket(socket as Parameters<typeof peerOfSocket>[0])));
  return peer;
}

/** The protocol a fast-path call speaks, as HandlerContext.protocolName says it. */
export type FastProtocol = "grpc" | "connect";

/**
 * A HandlerContext for the gRPC fast path that builds its costly parts on first use (an
 * AbortSignal alone costs microseconds in Node 20, more than a unary read). A unary read
 * touches none of them; a power action or a watch that asks for the signal gets one linked
 * to the client's stream, its deadline and the server's shutdown, exactly as Connect's own
 * context. The request objects interceptors see (fast-request.ts) read these parts from here.
 */
export class FastContext implements HandlerContext {
  /** What the call ends with when its deadline passes (the protocol's router says it so). */
  readonly deadlineError: ConnectError;
  /** Set only when something is written: a call that writes nothing sends constant headers. */
  readonly responseHeader = new OutgoingHeaders();
  readonly responseTrailer = new OutgoingHeaders();
  /** The response object the implementation's end of the chain returned, to tell whether an interceptor replaced it. */
  ownResponse: object | undefined;
  private controller: AbortController | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly deadline: number | undefined;
  private reqHeaders: Headers | undefined;
  private ctxValues: ContextValues | undefined;
  private fullUrl: string | undefined;

  constructor(
    readonly service: DescService,
    readonly method: DescMethod,
    private readonly path: string,
    private readonly stream: CallStream,
    private readonly headers: IncomingHttpHeaders,
    timeoutMs: number | undefined,
    private readonly shutdown: AbortSignal,
    /** Contexts with a live signal, which the server aborts on shutdown (one listener for all). */
    private readonly live: Set<FastContext>,
    /** The connection's socket (the call's peer), from the call's stream (a module-level function: no closure per call). */
    private readonly socketOf: (stream: CallStream) => unknown,
    readonly protocolName: FastProtocol = "grpc",
    readonly requestMethod: "POST" | "GET" = "POST",
  ) {
    this.deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
    this.deadlineError = protocolName === "grpc" ? DEADLINE : CONNECT_DEADLINE;
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      const c = new AbortController();
      this.controller = c;
      if (this.stream.closed || this.stream.destroyed) this.abort(CLOSED);
      else this.stream.once("close", () => this.abort(CLOSED));
      if (this.shutdown.aborted) this.abort(this.shutdown.reason);
      else this.live.add(this);
      // setTimeout cannot wait longer than 2^31-1 ms (~24.8 days); a longer deadline is checked by expired() only.
      if (this.deadline !== undefined && this.deadline - Date.now() <= MAX_TIMER_MS) {
        this.timer = setTimeout(() => this.abort(this.deadlineError), Math.max(0, this.deadline - Date.now()));
        this.timer.unref();
      }
    }
    return this.controller.signal;
  }

  timeoutMs(): number | undefined {
    return this.deadline === undefined ? undefined : this.deadline - Date.now();
  }

  /** The URL as the Connect router reports it: scheme, authority and path. */
  get url(): string {
    return (this.fullUrl ??= `http://${this.headers[":authority"] ?? this.headers.host ?? "localhost"}${this.path}`);
  }

  get requestHeader(): Headers {
    if (!this.reqHeaders) {
      const h = new Headers();
      for (const k in this.headers) {
        const v = this.headers[k];
        if (k.startsWith(":") || v === undefined) continue;
        h.set(k, Array.isArray(v) ? v.join(", ") : v);
      }
      this.reqHeaders = h;
    }
    return this.reqHeaders;
  }

  /** One request header's value without building the Headers object (lowercase name); what an interceptor changed wins. */
  header(name: string): string | null {
    if (this.reqHeaders) return this.reqHeaders.get(name);
    const v = this.headers[name];
    return v === undefined ? null : Array.isArray(v) ? v.join(", ") : v;
  }

  get values(): ContextValues {
    return (this.ctxValues ??= createContextValues().set(servedByFastPath, true).set(peerKey, connectionPeer(this.socketOf(this.stream))));
  }

  /** Whether a deadline was set. */
  hasDeadline(): boolean {
    return this.deadline !== undefined;
  }

  /** Whether the deadline has passed. */
  expired(): boolean {
    return this.deadline !== undefined && Date.now() >= this.deadline;
  }

  /** Aborts the signal (if anyone asked for it) with `reason`. */
  abort(reason: unknown): void {
    if (this.controller && !this.controller.signal.aborted) this.controller.abort(reason);
  }

  /** Ends the call: timers stop and the signal (if anyone asked for it) aborts. */
  done(): void {
    this.live.delete(this);
    clearTimeout(this.timer);
    this.abort(CLOSED);
  }
}
