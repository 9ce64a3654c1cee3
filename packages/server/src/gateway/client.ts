import type * as http2 from "node:http2";
import type { DescMessage, MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError, type CallOptions as ConnectCallOptions, type Interceptor } from "@connectrpc/connect";
import {
  ChangeType,
  type ChangeEvent,
  type ConflictPolicy,
  type DeleteNodeRequestSchema,
  type ListNodesRequestSchema,
  type ListNodesResponse,
  type ListVersionsRequestSchema,
  type ListVersionsResponse,
  type ReadSnapshotRequestSchema,
  type ReadSnapshotResponse,
  type SubscribeRequestSchema,
  type WriteDiffRequestSchema,
  type WriteDiffResponse,
} from "@quantix/api/gen/virtualdom/v1/gateway_pb.js";
import { ConnectionPool, type Clients, type ConnectionStats } from "./client-pool.js";
import { backoffMs, DEFAULT_RETRY, delay, isTransportFailure, type RetryPolicy } from "./client-retry.js";
import type { WriterClock } from "./client-writer-clock.js";

export { WriterClock, type ClockEntries } from "./client-writer-clock.js";
export { isTransportFailure, type RetryPolicy } from "./client-retry.js";
export type { ConnectionStats } from "./client-pool.js";

/** How a GatewayClient connects, keeps its connections alive, and retries. */
export interface GatewayClientOptions {
  /** The gateway's base URL, e.g. http://127.0.0.1:8080 (h2c) or https://gateway:8443. */
  readonly baseUrl: string;
  /** HTTP/2 connections in the pool (1-64; default 4). */
  readonly connections?: number;
  /** Keepalive: a PING after this long without data on a connection with open calls or streams, and before reusing one idle this long (default 30 s). */
  readonly pingIntervalMs?: number;
  /** A PING unanswered this long closes the connection (and its streams); the pool replaces it (default 10 s). */
  readonly pingTimeoutMs?: number;
  /** An idle connection closes after this long without a call (default 15 minutes); the next call reopens it. */
  readonly idleConnectionTimeoutMs?: number;
  /** Each call's deadline, retries included, unless the call gives its own timeoutMs (default 30 s). */
  readonly timeoutMs?: number;
  /**
   * Requests at least this large are sent gzip-compressed (default 1024 bytes: the seed's
   * rule): a WriteDiff by its diff's size, a SubscribeChanges by its node ids'; the others
   * are small. Smaller requests go without grpc-encoding, which keeps them on the server's
   * gRPC fast path.
   */
  readonly compressMinBytes?: number;
  /** Retries of idempotent calls (and re-subscriptions); defaults in DEFAULT_RETRY. */
  readonly retry?: Partial<RetryPolicy>;
  /** Interceptors on every call, e.g. one setting an authorization header. */
  readonly interceptors?: readonly Interceptor[];
  /** Options of node:http2 connect(), e.g. `ca` for TLS. */
  readonly nodeOptions?: http2.ClientSessionOptions | http2.SecureClientSessionOptions;
  /** Called before each retry or re-subscription (a log line, a metric). */
  readonly onRetry?: (e: RetryEvent) => void;
  /** Milliseconds from a monotonic origin (tests); default performance.now. */
  readonly now?: () => number;
}

/** A retry about to happen. */
export interface RetryEvent {
  readonly method: string;
  /** 1 for the first retry. */
  readonly attempt: number;
  readonly delayMs: number;
  readonly error: ConnectError;
  /** For a re-subscription: the from_version it resumes after. */
  readonly fromVersion?: bigint;
}

/** Per-call options. */
export interface CallOptions {
  /** This call's deadline (all attempts together), overriding GatewayClientOptions.timeoutMs. */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
  readonly headers?: ConnectCallOptions["headers"];
}

/** Options of a resuming subscription. */
export interface SubscribeOptions {
  readonly signal?: AbortSignal;
  readonly headers?: ConnectCallOptions["headers"];
}

/** What `write()` sends besides the diff. */
export interface WriteOptions extends CallOptions {
  readonly metadata?: Record<string, string>;
  readonly onConflict?: ConflictPolicy;
}

/** A request as its init shape (plain fields), as connect's clients take it. */
type Init<S extends DescMessage> = MessageInitShape<S>;

/**
 * A client of the MemoryGateway for other services: a pool of HTTP/2 connections with
 * keepalive PINGs, gzip for requests over 1 KiB, a deadline per call, and retries with
 * exponential backoff and full jitter of the idempotent calls only (ReadSnapshot,
 * ListNodes, ListVersions, and WriteDiff, which the contract makes idempotent when retried
 * with the same vector clock), on UNAVAILABLE or a failed connection. DeleteNode is never
 * retried (a second delete gets NOT_FOUND). `subscribe()` re-subscribes after a
 * disconnect from the last version it delivered, so its consumer sees no gap.
 */
export class GatewayClient {
  private readonly pool: ConnectionPool;
  private readonly policy: RetryPolicy;
  private readonly timeoutMs: number;
  private readonly compressMinBytes: number;
  private readonly now: () => number;
  private readonly onRetry: ((e: RetryEvent) => void) | undefined;

  constructor(o: GatewayClientOptions) {
    this.pool = new ConnectionPool({
      baseUrl: o.baseUrl,
      connections: o.connections ?? 4,
      pingIntervalMs: o.pingIntervalMs ?? 30_000,
      pingTimeoutMs: o.pingTimeoutMs ?? 10_000,
      idleConnectionTimeoutMs: o.idleConnectionTimeoutMs ?? 15 * 60_000,
      compressMinBytes: o.compressMinBytes ?? 1024,
      interceptors: o.interceptors ?? [],
      nodeOptions: o.nodeOptions ?? {},
    });
    this.policy = { ...DEFAULT_RETRY, ...o.retry };
    if (this.policy.maxAttempts < 1) throw new RangeError(`retry.maxAttempts must be at least 1, got ${this.policy.maxAttempts}`);
    this.timeoutMs = o.timeoutMs ?? 30_000;
    this.compressMinBytes = o.compressMinBytes ?? 1024;
    this.now = o.now ?? (() => performance.now());
    this.onRetry = o.onRetry;
  }

  /** WriteDiff; retried with the very same request (same vector clock), so a retry of an applied write is DUPLICATE. */
  writeDiff(req: Init<typeof WriteDiffRequestSchema>, o: CallOptions = {}): Promise<WriteDiffResponse> {
    if (!req.vectorClock) throw new ConnectError("vector_clock is required (WriteDiff is idempotent only through it)", Code.InvalidArgument);
    const big = (req.diffBson?.length ?? 0) >= this.compressMinBytes;
    return this.unary("WriteDiff", true, o, (c, co) => (big ? c.gzip : c.plain).writeDiff(req, co));
  }

  /**
   * Writes a diff as `writer`: increments its clock once, sends that clock (and its id) on
   * every attempt, then merges the node's clock from the response into the writer's.
   */
  async write(writer: WriterClock, nodeId: Uint8Array, diffBson: Uint8Array, o: WriteOptions = {}): Promise<WriteDiffResponse> {
    const vectorClock = writer.next();
    const res = await this.writeDiff({ nodeId, diffBson, vectorClock, writerId: writer.writerId, metadata: o.metadata ?? {}, ...(o.onConflict !== undefined ? { onConflict: o.onConflict } : {}) }, o);
    writer.observe(res.vectorClock);
    return res;
  }

  readSnapshot(req: Init<typeof ReadSnapshotRequestSchema>, o: CallOptions = {}): Promise<ReadSnapshotResponse> {
    return this.unary("ReadSnapshot", true, o, (c, co) => c.plain.readSnapshot(req, co));
  }

  listNodes(req: Init<typeof ListNodesRequestSchema>, o: CallOptions = {}): Promise<ListNodesResponse> {
    return this.unary("ListNodes", true, o, (c, co) => c.plain.listNodes(req, co));
  }

  listVersions(req: Init<typeof ListVersionsRequestSchema>, o: CallOptions = {}): Promise<ListVersionsResponse> {
    return this.unary("ListVersions", true, o, (c, co) => c.plain.listVersions(req, co));
  }

  /** DeleteNode: one attempt, never retried (the contract makes it idempotent only in effect). */
  async deleteNode(req: Init<typeof DeleteNodeRequestSchema>, o: CallOptions = {}): Promise<void> {
    await this.unary("DeleteNode", false, o, (c, co) => c.plain.deleteNode(req, co));
  }

  /** SubscribeChanges as is, on one pooled connection: no resume (see subscribe()). */
  async *subscribeChanges(req: Init<typeof SubscribeRequestSchema>, o: SubscribeOptions = {}): AsyncGenerator<ChangeEvent> {
    const { clients, release } = this.pool.acquire();
    const ids = (req.nodeIds ?? []).reduce((n, id) => n + id.length + 2, 0);
    try {
      yield* (ids >= this.compressMinBytes ? clients.gzip : clients.plain).subscribeChanges(req, this.callOptions(o, undefined));
    } finally {
      release();
    }
  }

  /**
   * SubscribeChanges that survives disconnects: after the stream fails in transport, ends
   * (a server shutting down ends it cleanly) or is ended RESOURCE_EXHAUSTED (too slow), it
   * subscribes again with from_version = the last version delivered (a DIFF's or DELETED's,
   * or SYNCED's), with backoff, and drops any change at or below it: from the first SYNCED
   * on, the consumer gets every change once, in version order. Each resume ends with its
   * own SYNCED. Before the first SYNCED of an include_snapshots subscription, a resume
   * starts over with the snapshots. Any other error (OUT_OF_RANGE: the history was
   * compacted) ends the iteration; aborting `signal` ends it quietly.
   */
  async *subscribe(req: Init<typeof SubscribeRequestSchema>, o: SubscribeOptions = {}): AsyncGenerator<ChangeEvent> {
    let last = req.fromVersion ?? 0n;
    let failures = 0;
    let outageStart = 0;
    for (;;) {
      const attempt = { ...req, fromVersion: last, includeSnapshots: last === 0n ? (req.includeSnapshots ?? false) : false };
      let error: ConnectError;
      try {
        for await (const ev of this.subscribeChanges(attempt, o)) {
          failures = 0;
          if (ev.type === ChangeType.DIFF || ev.type === ChangeType.DELETED) {
            if (ev.version <= last) continue;
            last = ev.version;
          } else if (ev.type === ChangeType.SYNCED && ev.version > last) {
            last = ev.version;
          }
          yield ev;
        }
        error = new ConnectError("the stream ended", Code.Unavailable);
      } catch (err) {
        if (o.signal?.aborted) return;
        error = ConnectError.from(err);
        if (!isTransportFailure(err) && error.code !== Code.ResourceExhausted) throw error;
      }
      if (failures === 0) outageStart = this.now();
      failures++;
      const wait = backoffMs(this.policy, failures);
      if (failures >= this.policy.maxAttempts || this.now() - outageStart + wait > this.policy.maxTotalMs) throw error;
      this.onRetry?.({ method: "SubscribeChanges", attempt: failures, delayMs: wait, error, fromVersion: last });
      try {
        await delay(wait, o.signal);
      } catch {
        return;
      }
    }
  }

  /** The pool's connections: state, calls, streams in flight, TCP ports, replacements. */
  stats(): ConnectionStats[] {
    return this.pool.stats();
  }

  /** Closes every connection (open calls and streams fail). */
  close(): void {
    this.pool.close();
  }

  private callOptions(o: CallOptions | SubscribeOptions, timeoutMs: number | undefined): ConnectCallOptions {
    return { ...(timeoutMs !== undefined ? { timeoutMs } : {}), ...(o.signal ? { signal: o.signal } : {}), ...(o.headers ? { headers: o.headers } : {}) };
  }

  private async unary<T>(method: string, idempotent: boolean, o: CallOptions, call: (c: Clients, co: ConnectCallOptions) => Promise<T>): Promise<T> {
    const budget = o.timeoutMs ?? this.timeoutMs;
    const started = this.now();
    for (let attempt = 1; ; attempt++) {
      const remaining = Math.floor(started + budget - this.now());
      try {
        if (remaining <= 0) throw new ConnectError(`${method}: the deadline of ${budget} ms passed after ${attempt - 1} attempts`, Code.DeadlineExceeded);
        return await this.pool.use((c) => call(c, this.callOptions(o, remaining)));
      } catch (err) {
        if (!idempotent || o.signal?.aborted || attempt >= this.policy.maxAttempts || !isTransportFailure(err)) throw err;
        const wait = backoffMs(this.policy, attempt);
        const elapsed = this.now() - started;
        if (elapsed + wait > this.policy.maxTotalMs || elapsed + wait >= budget) throw err;
        this.onRetry?.({ method, attempt, delayMs: wait, error: ConnectError.from(err) });
        await delay(wait, o.signal);
      }
    }
  }
}
