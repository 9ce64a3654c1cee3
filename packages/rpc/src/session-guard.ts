import type * as http2 from "node:http2";

/** How long HTTP/2 sessions may stay silent, or say nothing useful. */
export interface SessionGuardLimits {
  /** A session without a frame either way for this long gets a GOAWAY (open streams may finish), at the next sweep (at most 1 s later). */
  readonly idleTimeoutMs: number;
  /** A session that has not sent a complete request header block this long after connecting is closed. */
  readonly headersTimeoutMs: number;
}

/** How often sessions are looked at, at most. */
const SWEEP_MS = 1000;
/** How long a session suspected of being dead has to answer a PING. */
const PING_TIMEOUT_MS = 2000;

interface Watched {
  readonly openedAt: number;
  /** Bytes read and written on the session's socket at the last sweep, and when they last changed. */
  traffic: number;
  activeAt: number;
  /** The highest stream id handed to the server's 'stream' listeners. */
  delivered: number;
  probing: boolean;
}

/**
 * Closes HTTP/2 sessions that hold a connection for nothing: idle ones (RFC 9113 §9.1 lets a
 * server close those; gRPC servers call it MAX_CONNECTION_IDLE), ones that never send a
 * request (a client preface and SETTINGS only), and ones nghttp2 has given up on. The
 * last: for a connection error (a header field over nghttp2's 64 KiB, a broken HPACK block)
 * nghttp2 sends GOAWAY and then ignores the connection, but Node keeps the socket open and
 * tells no one, so a client waiting for the stream the GOAWAY names as processed waits
 * until its deadline. Such a session has received a stream it never delivered; it is sent
 * a PING, and one that does not answer is closed.
 */
export class SessionGuard {
  private readonly sessions = new Map<http2.Http2Session, Watched>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly limits: SessionGuardLimits) {}

  /** Watches a new session until it closes. */
  add(session: http2.ServerHttp2Session): void {
    const now = Date.now();
    this.sessions.set(session, { openedAt: now, traffic: 0, activeAt: now, delivered: 0, probing: false });
    session.once("close", () => this.sessions.delete(session));
    this.timer ??= setInterval(() => this.sweep(), Math.min(SWEEP_MS, this.limits.headersTimeoutMs, this.limits.idleTimeoutMs)).unref();
  }

  /** A stream reached the server's listeners (cheap: called for every request). */
  delivered(stream: http2.ServerHttp2Stream): void {
    const w = this.sessions.get(stream.session!);
    const id = stream.id ?? 0;
    if (w && id > w.delivered) w.delivered = id;
  }

  /** Stops watching (the listener is closing). */
  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private sweep(): void {
    if (this.sessions.size === 0) {
      this.stop();
      return;
    }
    const now = Date.now();
    for (const [session, w] of this.sessions) {
      if (session.destroyed) continue;
      // Idleness is read from the socket's byte counts here rather than with
      // session.setTimeout, whose timer Node refreshes on every frame and stream
      // operation (several times per call; issue 19).
      const traffic = trafficOf(session);
      if (traffic !== w.traffic) {
        w.traffic = traffic;
        w.activeAt = now;
      } else if (now - w.activeAt >= this.limits.idleTimeoutMs) {
        session.close();
        continue;
      }
      const received = session.state.lastProcStreamID ?? 0;
      if (received === 0 && now - w.openedAt > this.limits.headersTimeoutMs) session.close();
      else if (received > w.delivered && !w.probing) this.probe(session, w, received);
    }
  }

  private probe(session: http2.Http2Session, w: Watched, received: number): void {
    w.probing = true;
    const deliveredBefore = w.delivered;
    const armedAt = Date.now();
    // A session that delivers streams meanwhile is alive, however late the PING's answer
    // (a flood of ten thousand streams keeps this process busy for seconds, and the
    // answer waits behind them); so is one whose timer itself ran late (this process was
    // busy, not the peer silent): it is asked again.
    const dead = setTimeout(() => {
      if (w.delivered > deliveredBefore || Date.now() - armedAt > PING_TIMEOUT_MS * 1.5) {
        w.probing = false;
        return;
      }
      session.destroy();
    }, PING_TIMEOUT_MS).unref();
    const sent = session.ping((err) => {
      clearTimeout(dead);
      if (err) session.destroy();
      w.probing = false;
      // Streams nghttp2 refused itself (a header list over the limit): the session is alive.
      w.delivered = Math.max(w.delivered, received);
    });
    if (!sent) {
      clearTimeout(dead);
      session.destroy();
    }
  }
}

/** Bytes read and written so far on a session's socket: they change with every frame either way. */
function trafficOf(session: http2.Http2Session): number {
  const s = session.socket as { bytesRead?: number; bytesWritten?: number } | undefined;
  return (s?.bytesRead ?? 0) + (s?.bytesWritten ?? 0);
}
