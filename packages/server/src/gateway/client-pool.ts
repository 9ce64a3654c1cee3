import type * as http2 from "node:http2";
import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { compressionGzip, createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { MemoryGateway } from "@quantix/api/gen/virtualdom/v1/gateway_pb.js";

/** How the pool connects; see GatewayClientOptions for each field. */
export interface PoolOptions {
  readonly baseUrl: string;
  readonly connections: number;
  readonly pingIntervalMs: number;
  readonly pingTimeoutMs: number;
  readonly idleConnectionTimeoutMs: number;
  readonly compressMinBytes: number;
  readonly interceptors: readonly Interceptor[];
  readonly nodeOptions: http2.ClientSessionOptions | http2.SecureClientSessionOptions;
}

/** What one connection of the pool has done, for observability and tests. */
export interface ConnectionStats {
  readonly index: number;
  /** The session manager's state: closed, connecting, open, idle, verifying or error. */
  readonly state: string;
  /** Calls and streams running on it now. */
  readonly inFlight: number;
  /** Calls and streams started on it, in all. */
  readonly calls: number;
  /** The local TCP ports of the HTTP/2 sessions its streams ran on (one per session it opened). */
  readonly localPorts: readonly number[];
  /** How many times its session had failed and it was replaced by a new one. */
  readonly replaced: number;
}

/** The clients of one connection: requests that go as they are, and requests that go gzip-compressed. */
export interface Clients {
  readonly plain: Client<typeof MemoryGateway>;
  readonly gzip: Client<typeof MemoryGateway>;
}

/**
 * One pooled connection: an HTTP/2 session manager (keepalive PINGs) and two gRPC
 * transports on it. A transport with sendCompression announces grpc-encoding: gzip on
 * every call, compressed or not, and the server's gRPC fast path serves only calls without
 * it (the router decompresses): so only requests of compressMinBytes and more take the
 * gzip transport.
 */
class Connection {
  inFlight = 0;
  calls = 0;
  replaced = 0;
  readonly localPorts = new Set<number>();
  private readonly sessions = new WeakSet<http2.Http2Session>();
  private manager!: Http2SessionManager;
  clients!: Clients;

  constructor(
    readonly index: number,
    private readonly o: PoolOptions,
  ) {
    this.open();
  }

  /** A fresh session manager and transport; the old one (if any) is aborted. */
  open(): void {
    // PINGs while streams are open; an idle connection is verified with a PING before its next
    // call instead. Not pingIdleConnection: connect-node 2.1.1 then arms a PING timer on a
    // session it already destroyed (after a PING timeout), which throws an uncaught
    // ERR_HTTP2_INVALID_SESSION.
    const manager = new Http2SessionManager(this.o.baseUrl, { pingIntervalMs: this.o.pingIntervalMs, pingTimeoutMs: this.o.pingTimeoutMs, pingIdleConnection: false, idleConnectionTimeoutMs: this.o.idleConnectionTimeoutMs }, this.o.nodeOptions);
    this.manager = manager;
    // The transport asks this wrapper for streams, so the pool learns which TCP connection each ran on.
    const sessionManager = {
      authority: manager.authority,
      request: async (method: string, path: string, headers: http2.OutgoingHttpHeaders, options: Omit<http2.ClientSessionRequestOptions, "signal">) => {
        const stream = await manager.request(method, path, headers, options);
        const session = stream.session;
        if (session && !this.sessions.has(session)) {
          this.sessions.add(session);
          const port = session.socket?.localPort;
          if (port !== undefined) this.localPorts.add(port);
        }
        return stream;
      },
      notifyResponseByteRead: (stream: http2.ClientHttp2Stream) => manager.notifyResponseByteRead(stream),
    };
    const common = { baseUrl: this.o.baseUrl, sessionManager, interceptors: [...this.o.interceptors] };
    this.clients = {
      plain: createClient(MemoryGateway, createGrpcTransport(common)),
      gzip: createClient(MemoryGateway, createGrpcTransport({ ...common, sendCompression: compressionGzip, compressMinBytes: this.o.compressMinBytes })),
    };
  }

  get state(): ReturnType<Http2SessionManager["state"]> {
    return this.manager.state();
  }

  /** Replaces the session if it failed (a connection that died, a PING unanswered, a refused connect). */
  healthy(): this {
    if (this.manager.state() === "error") {
      this.manager.abort();
      this.replaced++;
      this.open();
    }
    return this;
  }

  close(): void {
    this.manager.abort();
  }
}

/**
 * N HTTP/2 connections to one gateway, as the seed's GrpcConnectionPool: each call takes
 * the least busy connection (fewest calls and streams in flight; ties go round robin), and
 * a connection whose session failed is replaced by a new one before it is used again.
 */
export class ConnectionPool {
  private readonly conns: Connection[];
  private turn = 0;

  constructor(o: PoolOptions) {
    if (!Number.isInteger(o.connections) || o.connections < 1 || o.connections > 64) throw new RangeError(`connections must be an integer 1-64, got ${o.connections}`);
    this.conns = Array.from({ length: o.connections }, (_, i) => new Connection(i, o));
  }

  /** Runs `fn` on the least busy healthy connection, counting it in flight until it settles. */
  async use<T>(fn: (clients: Clients) => Promise<T>): Promise<T> {
    const c = this.pick();
    c.inFlight++;
    c.calls++;
    try {
      return await fn(c.clients);
    } finally {
      c.inFlight--;
    }
  }

  /** Takes a connection for a stream: `release` must be called when the stream ends. */
  acquire(): { clients: Clients; release: () => void } {
    const c = this.pick();
    c.inFlight++;
    c.calls++;
    let released = false;
    return {
      clients: c.clients,
      release: () => {
        if (!released) c.inFlight--;
        released = true;
      },
    };
  }

  stats(): ConnectionStats[] {
    return this.conns.map((c) => ({ index: c.index, state: c.state, inFlight: c.inFlight, calls: c.calls, localPorts: [...c.localPorts], replaced: c.replaced }));
  }

  close(): void {
    for (const c of this.conns) c.close();
  }

  private pick(): Connection {
    const n = this.conns.length;
    let best: Connection | undefined;
    for (let k = 0; k < n; k++) {
      const c = this.conns[(this.turn + k) % n]!;
      if (!best || c.inFlight < best.inFlight) best = c;
    }
    this.turn = (this.turn + 1) % n;
    return best!.healthy();
  }
}
