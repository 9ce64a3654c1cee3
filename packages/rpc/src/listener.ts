import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
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

/** Takes an HTTP/2 stream before the request/response layer; returns whether it did. */
export type StreamHook = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => boolean;

/** A listening port that serves HTTP/1.1 and cleartext HTTP/2 (prior knowledge) at once. */
export interface DualListener {
  readonly port: number;
  readonly address: string;
  /** Stops accepting, lets in-flight requests finish, then closes every connection. */
  close(graceMs: number): Promise<void>;
}

const PREFACE = Buffer.from("PRI * HTTP/2.0");

/**
 * Listens on one TCP port and routes each connection by its first bytes: the HTTP/2
 * client preface goes to an h2c server, anything else to an HTTP/1.1 server. Node's
 * http2 module only offers HTTP/1.1 fallback over TLS (ALPN), hence the sniffing.
 */
export async function listenDual(host: string, port: number, handler: Handler, limits: ListenerLimits, hook?: StreamHook): Promise<DualListener> {
  const h1 = http.createServer(
    { maxHeaderSize: limits.maxHeaderBytes, headersTimeout: limits.headersTimeoutMs, connectionsCheckingInterval: Math.min(30_000, Math.max(50, limits.headersTimeoutMs / 2)) },
    (req, res) => handler(req, closeIfUnread(req, res)),
  );
  h1.keepAliveTimeout = Math.min(65_000, limits.idleTimeoutMs);
  // h1 never listens itself (connections are handed to it), so start its connection
  // tracking by hand: it drives closeIdleConnections() and the headers/request timeouts.
  h1.emit("listening");
  // No 'request' listener: streams the hook does not take get the compatibility
  // request/response pair here, as http2's own compat layer would build it.
  const h2 = http2.createServer({ settings: { maxConcurrentStreams: limits.maxConcurrentStreams, maxHeaderListSize: limits.maxHeaderBytes }, maxSessionMemory: 64, maxHeaderListPairs: 256 });
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
    s.on("close", () => sessions.delete(s));
    s.on("error", () => s.destroy());
  });
  const sockets = new Set<net.Socket>();
  /** Connections whose first bytes have not arrived yet. */
  const unsniffed = new Set<net.Socket>();
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
