import { setMaxListeners } from "node:events";
import type { DescFile } from "@bufbuild/protobuf";
import { Code, ConnectError, type Interceptor, type Transport } from "@connectrpc/connect";
import type { ConnectNodeAdapterOptions } from "@connectrpc/connect-node";
import { validateReadWriteMaxBytes } from "@connectrpc/connect/protocol";
import { ACCEPT_COMPRESSION } from "./compression.js";
import { ConnectFastPath } from "./fast-path/connect-fast-path.js";
import { GrpcFastPath } from "./fast-path/grpc-fast-path.js";
import { mapErrors } from "./interceptors/map-errors.js";
import { observeCalls } from "./interceptors/observe-calls.js";
import type { Peer } from "./call-context.js";
import { inProcessTransport } from "./in-process.js";
import { listenDual, type ListenerLimits, type ListenerTls, type UpgradeHandler } from "./listener.js";
import type { Logger } from "./log/logger.js";
import { logRefusal } from "./log/rpc-log.js";
import type { RpcMetrics } from "./metrics/rpc-metrics.js";
import { registerReflection } from "./reflection.js";
import { routerHandler } from "./router/node-adapter.js";
import { registerRoutes, serviceOptions, type Route } from "./routes.js";

/** Answers every request that is not an RPC (health, metrics, a 404 that says where the API is). */
export type Fallback = NonNullable<ConnectNodeAdapterOptions["fallback"]>;

/** The limits of a server (docs/adr/0002-*.md): the listener's, and message sizes. */
export interface RpcLimits extends ListenerLimits {
  /** Largest request message, in bytes. */
  readonly readMaxBytes: number;
  /** Largest response message, in bytes. */
  readonly writeMaxBytes: number;
}

/** ADR 0002's limits, and the connection limits of issue 11 (idle 5 min, headers 20 s, 1024 connections per client address). */
export const DEFAULT_LIMITS: RpcLimits = {
  readMaxBytes: 4 * 1024 * 1024,
  writeMaxBytes: 64 * 1024 * 1024,
  maxConcurrentStreams: 10_000,
  maxHeaderBytes: 64 * 1024,
  idleTimeoutMs: 300_000,
  headersTimeoutMs: 20_000,
  maxConnectionsPerSource: 1024,
};

/** What a server serves, where, and who hears about it. */
export interface RpcServerOptions {
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  /** The services, on every protocol. */
  readonly routes: readonly Route[];
  /** Files whose services gRPC server reflection (v1 and v1alpha) lists; without them, no reflection. */
  readonly reflection?: readonly DescFile[];
  /** One line per RPC goes here. */
  readonly log: Logger;
  /** Counts every RPC, when given (the binary's /metrics). */
  readonly metrics?: RpcMetrics;
  /**
   * Run on every call on every path, inside the log line and the error mapping (so what
   * they refuse is logged, counted and answered in the API's vocabulary), first outermost.
   */
  readonly interceptors?: readonly Interceptor[];
  readonly fallback?: Fallback;
  readonly limits?: Partial<RpcLimits>;
  /**
   * Serve TLS with this certificate (HTTP/2 and HTTP/1.1 over ALPN on the one port, every
   * protocol and the fast path alike), optionally verifying client certificates; without
   * it, cleartext. A verified client certificate reaches every call as its peer (peerKey).
   */
  readonly tls?: ListenerTls;
  /** Told to in-flight calls when the server closes (UNAVAILABLE). */
  readonly shutdownMessage?: string;
  /** Called on close once the shutdown signal has aborted, before in-flight calls drain: end long streams here. */
  readonly onShutdown?: () => void;
  /** Takes HTTP/1.1 upgrade requests (a WebSocket endpoint); without it they are refused with 400. */
  readonly upgrade?: UpgradeHandler;
  /**
   * Serve Connect unary calls on the Connect fast path (fast-path/connect-fast-path.ts);
   * default true. False leaves every Connect call to connect-node's router (the tests
   * compare the two).
   */
  readonly connectFastPath?: boolean;
}

/** A listening server. */
export interface RpcServer {
  readonly port: number;
  /** The address it listens on, e.g. 127.0.0.1 or ::1. */
  readonly address: string;
  /** Base URL, e.g. http://127.0.0.1:8080 (https:// with TLS). */
  readonly url: string;
  /** Aborts when the server begins to close. */
  readonly shutdownSignal: AbortSignal;
  /** Aborts in-flight calls, lets them finish for up to `graceMs`, then closes every connection. */
  close(graceMs: number): Promise<void>;
  /** A transport calling this server's routes in process, through its whole interceptor chain, as from `peer` (in-process.ts). */
  inProcessTransport(peer: Peer): Transport;
}

/**
 * Serves `routes` over Connect (JSON and binary), gRPC and gRPC-Web, on HTTP/1.1 and
 * HTTP/2 at one port (cleartext, or TLS with `tls`: docs/adr/0002-*.md), unary and server-streaming gRPC on
 * the fast path (docs/adr/0003-*.md). Every path runs one interceptor chain, installed
 * here once: the log line and metrics outermost, then the error mapping, then `interceptors`.
 */
export async function startRpcServer(o: RpcServerOptions): Promise<RpcServer> {
  const limits = { ...DEFAULT_LIMITS, ...o.limits };
  const shutdown = new AbortController();
  // Every in-flight RPC (each open watch too) links its context to this signal until it ends:
  // without this, more than 10 at once print a spurious MaxListenersExceededWarning.
  setMaxListeners(0, shutdown.signal);
  const interceptors = [observeCalls({ log: o.log, metrics: o.metrics }), mapErrors(), ...(o.interceptors ?? [])];
  const refused = (procedure: string, err: ConnectError, ms: number) => {
    o.metrics?.observe(procedure, err.code, ms);
    logRefusal(o.log, procedure, err.code, ms, err.rawMessage);
  };
  const handler = routerHandler({
    routes: (router) => {
      const served = registerRoutes(router, o.routes);
      o.metrics?.register(o.reflection ? [...served, ...registerReflection(router, o.reflection)] : served);
    },
    interceptors,
    readMaxBytes: limits.readMaxBytes,
    writeMaxBytes: limits.writeMaxBytes,
    jsonOptions: JSON_OPTIONS,
    shutdownSignal: shutdown.signal,
    fallback: o.fallback ? guardedFallback(o.fallback, o.log) : notFound,
    refused,
    writeFailed: (procedure, reason) => o.log.log("debug", "rpc response not written", { procedure, error: String(reason) }),
  });
  const fast = new GrpcFastPath(o.routes, { readMaxBytes: limits.readMaxBytes, writeMaxBytes: limits.writeMaxBytes, shutdownSignal: shutdown.signal, interceptors, refused });
  const connect =
    o.connectFastPath === false
      ? undefined
      : new ConnectFastPath(o.routes, {
          shutdownSignal: shutdown.signal,
          interceptors,
          jsonOptions: JSON_OPTIONS,
          refused,
          routeOptions: (r) => {
            const s = serviceOptions(r);
            return { ...validateReadWriteMaxBytes(s.readMaxBytes ?? limits.readMaxBytes, s.writeMaxBytes ?? limits.writeMaxBytes, s.compressMinBytes), acceptCompression: s.acceptCompression ?? ACCEPT_COMPRESSION };
          },
        });
  const listener = await listenDual(
    o.host,
    o.port,
    handler,
    limits,
    connect ? (stream, headers) => fast.handle(stream, headers) || connect.handleH2(stream, headers) : (stream, headers) => fast.handle(stream, headers),
    o.tls,
    o.upgrade && guardedUpgrade(o.upgrade, o.log),
    connect && ((req, res) => connect.handleH1(req, res)),
  );
  const host = listener.address.includes(":") ? `[${listener.address}]` : listener.address;
  let closing: Promise<void> | undefined;
  return {
    port: listener.port,
    address: listener.address,
    url: `${o.tls ? "https" : "http"}://${host}:${listener.port}`,
    shutdownSignal: shutdown.signal,
    inProcessTransport: (peer) => inProcessTransport(handler.handlers, peer),
    close(graceMs) {
      closing ??= (async () => {
        shutdown.abort(new ConnectError(o.shutdownMessage ?? "the server is shutting down", Code.Unavailable));
        o.onShutdown?.();
        await listener.close(graceMs);
      })();
      return closing;
    },
  };
}

/** The router's JSON options, and the Connect fast path's: unknown fields in a request are refused. */
const JSON_OPTIONS = { ignoreUnknownFields: false } as const;

/** The fallback without one given: an empty 404. */
const notFound: Fallback = (_req, res) => {
  res.writeHead(404);
  res.end();
};

/**
 * A fallback that throws (a door with a bug, a request nobody foresaw) answers 500 and
 * is logged; it never reaches the process's uncaught-exception handler, which would end
 * every other call with it.
 */
function guardedFallback(fallback: Fallback, log: Logger): Fallback {
  return (req, res) => {
    try {
      fallback(req, res);
    } catch (err) {
      log.log("error", "request handler failed", { method: req.method, path: String(req.url ?? "").slice(0, 200), error: String(err) });
      if (!res.headersSent) {
        res.writeHead(500, { "content-type": "text/plain; charset=utf-8" });
        res.end("internal: the request could not be handled\n");
      } else res.destroy();
    }
  };
}

/** The same guard for HTTP/1.1 upgrades: a throwing handler closes that socket with a 500. */
function guardedUpgrade(upgrade: UpgradeHandler, log: Logger): UpgradeHandler {
  return (req, socket, head) => {
    try {
      upgrade(req, socket, head);
    } catch (err) {
      log.log("error", "upgrade handler failed", { path: String(req.url ?? "").slice(0, 200), error: String(err) });
      if (!socket.destroyed) socket.end("HTTP/1.1 500 Internal Server Error\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    }
  };
}
