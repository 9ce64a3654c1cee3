import type { DescMethod, DescService } from "@bufbuild/protobuf";
import type { IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import { Code, ConnectError, createContextValues, type ContextValues, type HandlerContext } from "@connectrpc/connect";

// Abort reasons made once: aborting without a reason builds a DOMException (and its stack) per call.
const CLOSED = new ConnectError("the client closed the stream", Code.Canceled);
const DEADLINE = new ConnectError("the deadline passed", Code.DeadlineExceeded);
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * A HandlerContext for the gRPC fast path that builds its parts on first use. A unary
 * read never touches `signal` or the header maps, so it pays for none of them; a power
 * action or a watch that does gets an AbortSignal linked to the client's stream, its
 * deadline and the server's shutdown, exactly as Connect's own context.
 */
export class FastContext implements HandlerContext {
  readonly protocolName = "grpc";
  readonly requestMethod = "POST";
  private controller: AbortController | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly deadline: number | undefined;
  private reqHeaders: Headers | undefined;
  private resHeaders: Headers | undefined;
  private resTrailers: Headers | undefined;
  private ctxValues: ContextValues | undefined;

  constructor(
    readonly service: DescService,
    readonly method: DescMethod,
    readonly url: string,
    private readonly stream: ServerHttp2Stream,
    private readonly headers: IncomingHttpHeaders,
    timeoutMs: number | undefined,
    private readonly shutdown: AbortSignal,
    /** Contexts with a live signal, which the server aborts on shutdown (one listener for all). */
    private readonly live: Set<FastContext>,
  ) {
    this.deadline = timeoutMs === undefined ? undefined : Date.now() + timeoutMs;
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      const c = new AbortController();
      this.controller = c;
      const abort = (reason: unknown) => c.signal.aborted || c.abort(reason);
      if (this.stream.closed || this.stream.destroyed) abort(CLOSED);
      else this.stream.once("close", () => abort(CLOSED));
      if (this.shutdown.aborted) abort(this.shutdown.reason);
      else this.live.add(this);
      // setTimeout cannot wait longer than 2^31-1 ms (~24.8 days); a longer deadline is checked by expired() only.
      if (this.deadline !== undefined && this.deadline - Date.now() <= MAX_TIMER_MS) {
        this.timer = setTimeout(() => abort(DEADLINE), Math.max(0, this.deadline - Date.now()));
        this.timer.unref();
      }
    }
    return this.controller.signal;
  }

  readonly timeoutMs = (): number | undefined => (this.deadline === undefined ? undefined : this.deadline - Date.now());

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

  get responseHeader(): Headers {
    return (this.resHeaders ??= new Headers());
  }

  get responseTrailer(): Headers {
    return (this.resTrailers ??= new Headers());
  }

  get values(): ContextValues {
    return (this.ctxValues ??= createContextValues());
  }

  /** Response headers set by the implementation, if any. */
  headersSet(): Headers | undefined {
    return this.resHeaders;
  }

  /** Response trailers set by the implementation, if any. */
  trailersSet(): Headers | undefined {
    return this.resTrailers;
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
    if (this.controller && !this.controller.signal.aborted) this.controller.abort(CLOSED);
  }
}
