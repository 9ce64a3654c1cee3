import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import type { Duplex } from "node:stream";
import * as tls from "node:tls";
import { SessionGuard } from "./session-guard.js";

/** Limits of the listener. */
export interface ListenerLimits {
  /** Concurrent HTTP/2 streams per connection (watch fan-out lives here). */
  readonly maxConcurrentStreams: number;
  /** Largest request header block, in bytes (advertised to HTTP/2 clients as SETTINGS_MAX_HEADER_LIST_SIZE). */
  readonly maxHeaderBytes: number;
  /** A connection without traffic for this long is closed (HTTP/2: a GOAWAY; HTTP/1.1: between requests, at most 65 s). */
  readonly idleTimeoutMs: number;
  /** A connection must send its first bytes, and an HTTP/1.1 request or the first HTTP/2 request its headers, within this. */
  readonly headersTimeoutMs: number;
  /** Connections one client address may hold at once; more are refused at accept. */
  readonly maxConnectionsPerSource: number;
}

type Handler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void;

/**
 * Takes an HTTP/1.1 request asking to switch protocols (`Upgrade:`, e.g. a WebSocket);
 * the socket is the handler's from then on. Without one, such requests are refused.
 */
export type UpgradeHandler = (req: http.IncomingMessage, socket: Duplex, head: Buffer) => void;

/** Takes an HTTP/2 stream before the request/response layer; returns whether it did. */
export type StreamHook = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => boolean;

/** Takes an HTTP/1.1 request before the handler (the Connect fast path); returns whether it did. */
export type RequestHook = (req: http.IncomingMessage, res: http.ServerResponse) => boolean;

/** The certificate a listener serves TLS with, and whom it asks for a client certificate. */
export interface ListenerTls {
  /** The server's certificate chain (PEM). */
  readonly cert: string | Buffer;
  /** Its private key (PEM). */
  readonly key: string | Buffer;
  /** The CA certificates (PEM) that verify client certificates; without them no client certificate is asked for. */
  readonly clientCa?: string | Buffer;
  /**
   * "optional" (the default with a clientCa): a client may present a certificate, which
   * the call's peer carries once verified; one that does not verify is ignored (the call
   * is anonymous). "required": a connection without a certificate the CA verifies fails
   * in the handshake.
   */
  readonly clientCert?: "optional" | "required";
}

/** A listening port that serves HTTP/1.1 and HTTP/2 at once: cleartext (prior knowledge), or TLS (ALPN). */
export interface DualListener {
  readonly port: number;
  readonly address: string;
  /** Stops accepting, lets in-flight requests finish, then closes every connection. */
  close(graceMs: number): Promise<void>;
}

const PREFACE = Buffer.from("PRI * HTTP/2.0");

/**
 * Listens on one TCP port and routes each connection to one HTTP/1.1 and one HTTP/2
 * server. Cleartext: by its first bytes (the HTTP/2 client preface goes to h2c, anything
 * else to HTTP/1.1; Node's http2 module only falls back to HTTP/1.1 over TLS). With `tls`:
 * by the protocol the TLS handshake agreed (ALPN "h2", else HTTP/1.1), which is what
 * http2.createSecureServer({ allowHTTP1 }) does inside, done here so that both kinds of
 * connection reach the same two servers, with the same limits, stream hook (the gRPC fast
 * path) and session guard as cleartext ones.
 */
/**
 * HTTP/2 flow control and frames as adr-0001 (the MemoryGateway's seed) sets them, for
 * every service on the port: a 2 MiB window per stream and 10 MiB per connection (a
 * large document is not held to the 64 KiB default's round trips), and frames up to
 * 16 MiB (the protocol's largest). Concurrent streams are ListenerLimits'.
 */
export const H2_WINDOWS = {
  settings: { initialWindowSize: 2 * 1024 * 1024, maxFrameSize: 16 * 1024 * 1024 - 1 },
  connectionWindowBytes: 10 * 1024 * 1024,
} as const;

export async function listenDual(host: string, port: number, handler: Handler, limits: ListenerLimits, hook?: StreamHook, tlsOptions?: ListenerTls, upgrade?: UpgradeHandler, h1Hook?: RequestHook): Promise<DualListener> {
  const h1 = http.createServer(
    { maxHeaderSize: limits.maxHeaderBytes, headersTimeout: limits.headersTimeoutMs, connectionsCheckingInterval: Math.min(30_000, Math.max(50, limits.headersTimeoutMs / 2)) },
    (req, res) => h1Hook?.(req, res) || handler(req, closeIfUnread(req, res)),
  );
  h1.keepAliveTimeout = Math.min(65_000, limits.idleTimeoutMs);
  // Upgrades exist on HTTP/1.1 only (RFC 9113 forbids the header over h2): a WebSocket
  // reaches the handler here, cleartext or over TLS with ALPN http/1.1.
  h1.on("upgrade", (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    if (upgrade) return upgrade(req, socket, head);
    socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
  });
  // h1 never listens itself (connections are handed to it), so start its connection
  // tracking by hand: it drives closeIdleConnections() and the headers/request timeouts.
  h1.emit("listening");
  // No 'request' listener: streams the hook does not take get the compatibility
  // request/response pair here, as http2's own compat layer would build it.
  const h2 = http2.createServer({ settings: { ...H2_WINDOWS.settings, maxConcurrentStreams: limits.maxConcurrentStreams, maxHeaderListSize: limits.maxHeaderBytes }, maxSessionMemory: 64, maxHeaderListPairs: 256 });
  const guard = new SessionGuard(limits);
  h2.on("stream", (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, _flags: number, rawHeaders: string[]) => {
    guard.delivered(stream);
    if (hook?.(stream, headers)) return;
    const req = new http2.Http2ServerRequest(stream, headers, {} as never, rawHeaders);
    const res = new http2.Http2ServerResponse(stream);
    if (headers.expect === "100-continue") res.writeContinue();
    // A response sent before the request was read (too large, say) ends the stream: the
    // client, out of flow-control window, would otherwise wait for its deadline (RFC 9113 §8.1).
    // The compatibility layer always ends a response with trailers, once its data is out:
    // the reset goes after them.
    stream.once("wantTrailers", () => stream.readableEnded || setImmediate(() => stream.closed || stream.close(http2.constants.NGHTTP2_NO_ERROR)));
    handler(req, res);
  });
  const sessions = new Set<http2.ServerHttp2Session>();
  h2.on("session", (s: http2.ServerHttp2Session) => {
    sessions.add(s);
    guard.add(s);
    s.setLocalWindowSize(H2_WINDOWS.connectionWindowBytes);
    s.on("close", () => sessions.delete(s));
    s.on("error", () => s.destroy());
  });
  const sockets = new Set<net.Socket>();
  /** Connections whose first bytes (with TLS: whose handshake) have not arrived yet. */
  const unsniffed = new Set<net.Socket>();
  /** TLS connections in their handshake, by the client's address and port (the TLS socket's too). */
  const handshaking = new Map<string, net.Socket>();
  const secure = tlsOptions
    ? secureServer(tlsOptions, limits, (socket) => {
        const raw = handshaking.get(`${socket.remoteAddress}:${socket.remotePort}`);
        if (raw) {
          unsniffed.delete(raw);
          handshaking.delete(`${socket.remoteAddress}:${socket.remotePort}`);
        }
        (socket.alpnProtocol === "h2" ? h2 : h1).emit("connection", socket);
      })
    : undefined;
  /** Open connections by client address. */
  const perSource = new Map<string, number>();
  const tcp = net.createServer({ noDelay: true }, (socket) => {
    const source = socket.remoteAddress ?? "";
    const held = perSource.get(source) ?? 0;
    // One client must not take every slot (tcp.maxConnections) from the others.
    if (held >= limits.maxConnectionsPerSource) {
      socket.destroy();
      return;
    }
    perSource.set(source, held + 1);
    sockets.add(socket);
    unsniffed.add(socket);
    // A connection that says nothing is not kept: it would hold a slot and delay shutdown.
    const silent = setTimeout(() => socket.destroy(), limits.headersTimeoutMs);
    socket.on("close", () => {
      clearTimeout(silent);
      sockets.delete(socket);
      unsniffed.delete(socket);
      const n = (perSource.get(source) ?? 1) - 1;
      if (n > 0) perSource.set(source, n);
      else perSource.delete(source);
    });
    socket.on("error", () => socket.destroy());
    if (secure) {
      // The handshake has headersTimeoutMs (handshakeTimeout); after it, each server's own timeouts.
      clearTimeout(silent);
      const key = `${socket.remoteAddress}:${socket.remotePort}`;
      handshaking.set(key, socket);
      socket.on("close", () => handshaking.delete(key));
      secure.emit("connection", socket);
      return;
    }
    let head = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      head = Buffer.concat([head, chunk]);
      const n = Math.min(head.length, PREFACE.length);
      const isH2 = head.subarray(0, n).equals(PREFACE.subarray(0, n));
      if (isH2 && head.length < PREFACE.length) return;
      clearTimeout(silent);
      unsniffed.delete(socket);
      socket.off("data", onData);
      socket.pause();
      socket.unshift(head);
      (isH2 ? h2 : h1).emit("connection", socket);
      process.nextTick(() => socket.resume());
    };
    socket.on("data", onData);
  });
  tcp.maxConnections = 10_000;
  await new Promise<void>((resolve, reject) => {
    tcp.once("error", reject);
    tcp.listen(port, host, () => resolve());
  });
  const addr = tcp.address() as net.AddressInfo;
  return {
    port: addr.port,
    address: addr.address,
    async close(graceMs) {
      guard.stop();
      const closed = new Promise<void>((resolve) => tcp.close(() => resolve()));
      for (const s of unsniffed) s.destroy();
      secure?.close();
      for (const s of sessions) s.close();
      h1.closeIdleConnections();
      const deadline = Date.now() + graceMs;
      while (sockets.size > 0 && Date.now() < deadline) {
        h1.closeIdleConnections();
        await new Promise((r) => setTimeout(r, 20));
      }
      for (const s of sockets) s.destroy();
      h1.close(() => undefined);
      await closed;
    },
  };
}

/**
 * A TLS server that never listens itself (the TCP listener hands it connections, after
 * its per-source limit): it offers h2 and http/1.1 over ALPN and hands each connection,
 * once the handshake is done, to `secured`. A failed handshake (no or an untrusted client
 * certificate where one is required, a client that does not speak TLS) closes the
 * connection; nothing is logged per connection.
 */
function secureServer(o: ListenerTls, limits: ListenerLimits, secured: (socket: tls.TLSSocket) => void): tls.Server {
  const server = tls.createServer({
    cert: o.cert,
    key: o.key,
    ALPNProtocols: ["h2", "http/1.1"],
    handshakeTimeout: limits.headersTimeoutMs,
    ...(o.clientCa !== undefined ? { ca: o.clientCa, requestCert: true, rejectUnauthorized: o.clientCert === "required" } : {}),
  });
  server.on("secureConnection", secured);
  server.on("tlsClientError", (_err, socket) => socket.destroy());
  return server;
}

/**
 * Answers an HTTP/1.1 request whose body has not all been read (refused as too large,
 * say) with `Connection: close`, and closes the connection after the answer: the unread
 * rest would stall the next request on a keep-alive connection until the client gave up.
 * (Draining instead is not possible: connect-node destroys the request it stops reading,
 * and Node then stops reading the socket.)
 */
function closeIfUnread(req: http.IncomingMessage, res: http.ServerResponse): http.ServerResponse {
  const writeHead = res.writeHead;
  res.writeHead = function (this: http.ServerResponse, ...args: Parameters<typeof writeHead>) {
    if (!req.complete) this.shouldKeepAlive = false;
    return writeHead.apply(this, args);
  } as typeof writeHead;
  return res;
}
