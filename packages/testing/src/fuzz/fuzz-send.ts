import { Agent, request as h1Request, type IncomingHttpHeaders as H1Headers } from "node:http";
import { connect, constants, type ClientHttp2Session, type IncomingHttpHeaders } from "node:http2";
import type { WireRequest } from "./fuzz-wire.js";

/** Connect's names of the gRPC status codes, by number. */
const CODE_NAMES = ["ok", "canceled", "unknown", "invalid_argument", "deadline_exceeded", "not_found", "already_exists", "permission_denied", "resource_exhausted", "failed_precondition", "aborted", "out_of_range", "unimplemented", "internal", "unavailable", "data_loss", "unauthenticated"];

/** Longest a fuzz request may take, by default, before it counts as unanswered. */
export const ANSWER_MS = 10_000;
/** Most bytes of a response kept to read its code. */
const KEEP_BYTES = 256 * 1024;

interface Raw {
  readonly status: number;
  readonly headers: IncomingHttpHeaders | H1Headers;
  readonly trailers: IncomingHttpHeaders | H1Headers;
  readonly body: Buffer;
}

/**
 * Sends fuzz requests to one server: HTTP/2 over a few reused cleartext sessions (a new
 * one when the server closes one), HTTP/1.1 over keep-alive sockets. Each answer becomes
 * the code a client sees: a Connect code name, `http <status>` when the response carries
 * none, `reset` (the stream was reset), `no answer` (nothing within `answerMs`), or `open
 * stream` (a server stream still running when the client gave up, which is no error).
 */
export class FuzzSender {
  private readonly sessions: (ClientHttp2Session | undefined)[];
  private readonly agent = new Agent({ keepAlive: true, maxSockets: 16 });
  private next = 0;

  constructor(
    private readonly url: string,
    sessions = 4,
    private readonly answerMs = ANSWER_MS,
  ) {
    this.sessions = Array.from({ length: sessions }, () => undefined);
  }

  async send(w: WireRequest): Promise<string> {
    try {
      const raw = await (w.http2 ? this.h2(w) : this.h1(w));
      return classify(raw);
    } catch (err) {
      const e = err as Error & { code?: string };
      if (e.message === "no answer" || e.message === "open stream") return e.message;
      return e.code === "ERR_HTTP2_STREAM_ERROR" || e.code === "ECONNRESET" ? "reset" : `client error ${e.code ?? e.message}`;
    }
  }

  close(): void {
    for (const s of this.sessions) s?.destroy();
    this.agent.destroy();
  }

  private session(): ClientHttp2Session {
    const i = this.next++ % this.sessions.length;
    let s = this.sessions[i];
    if (!s || s.closed || s.destroyed) {
      s = connect(this.url);
      s.on("error", () => undefined);
      s.on("goaway", () => s!.close());
      this.sessions[i] = s;
    }
    return s;
  }

  private h2(w: WireRequest): Promise<Raw> {
    return new Promise((resolve, reject) => {
      const req = this.session().request({ ":method": w.method, ":path": w.path, ...w.headers });
      const chunks = new Chunks();
      let status = 0;
      let headers: IncomingHttpHeaders = {};
      let trailers: IncomingHttpHeaders = {};
      const timer = setTimeout(() => {
        req.close(constants.NGHTTP2_CANCEL);
        reject(new Error(status === 200 && w.streaming ? "open stream" : "no answer"));
      }, this.answerMs);
      req.on("response", (h) => {
        headers = h;
        status = Number(h[":status"]);
      });
      req.on("trailers", (t) => (trailers = t));
      req.on("data", (b: Buffer) => chunks.add(b));
      req.on("error", (e) => {
        // The server may answer and close before the whole body is written: its answer counts.
        if (status !== 0) return;
        clearTimeout(timer);
        reject(e);
      });
      // The answer is complete when the response ends, even if the server has not read the
      // whole request (then the stream stays half open until the client resets it).
      req.on("end", () => {
        clearTimeout(timer);
        resolve({ status, headers, trailers, body: chunks.all() });
        if (!req.closed) req.close(constants.NGHTTP2_CANCEL);
      });
      req.on("close", () => {
        clearTimeout(timer);
        if (req.rstCode !== constants.NGHTTP2_NO_ERROR && status === 0) reject(Object.assign(new Error("reset"), { code: "ERR_HTTP2_STREAM_ERROR" }));
        else resolve({ status, headers, trailers, body: chunks.all() });
      });
      // A GET has no body: node:http2 ends its stream with the headers.
      if (w.method === "GET") req.end();
      else req.end(w.body);
    });
  }

  private h1(w: WireRequest): Promise<Raw> {
    return new Promise((resolve, reject) => {
      const u = new URL(w.path.startsWith("/") ? `${this.url}${w.path}` : `${this.url}/${w.path}`);
      const req = h1Request(u, { method: w.method, agent: this.agent, headers: { ...w.headers, "content-length": String(w.body.length) } }, (res) => {
        const chunks = new Chunks();
        res.on("data", (b: Buffer) => chunks.add(b));
        res.on("end", () => {
          clearTimeout(timer);
          resolve({ status: res.statusCode ?? 0, headers: res.headers, trailers: res.trailers, body: chunks.all() });
        });
        res.on("error", reject);
      });
      const timer = setTimeout(() => {
        req.destroy();
        reject(new Error(w.streaming ? "open stream" : "no answer"));
      }, this.answerMs);
      req.on("error", (e) => {
        clearTimeout(timer);
        reject(e);
      });
      req.end(w.body);
    });
  }
}

class Chunks {
  private readonly list: Buffer[] = [];
  private size = 0;
  add(b: Buffer): void {
    if (this.size >= KEEP_BYTES) return;
    this.list.push(b);
    this.size += b.length;
  }
  all(): Buffer {
    return Buffer.concat(this.list);
  }
}

/** The code a client of the request's protocol reads from an answer. */
function classify(r: Raw): string {
  const header = (name: string) => {
    const v = r.trailers[name] ?? r.headers[name];
    return Array.isArray(v) ? v[0] : v;
  };
  // The response's content type says which protocol answered (a gRPC path may be answered as Connect).
  const contentType = String(r.headers["content-type"] ?? "");
  if (contentType.startsWith("application/grpc") || (contentType === "" && header("grpc-status") !== undefined)) {
    const s = header("grpc-status") ?? grpcWebTrailer(r.body);
    return s !== undefined ? (CODE_NAMES[Number(s)] ?? `grpc-status ${s}`) : `http ${r.status}`;
  }
  if (contentType.startsWith("application/connect+")) return connectEndStream(r.body) ?? `http ${r.status} (no end of stream)`;
  if (r.status === 200) return "ok";
  try {
    const code = (JSON.parse(r.body.toString("utf8")) as { code?: unknown }).code;
    if (typeof code === "string") return code;
  } catch {
    // Not a Connect error body: the HTTP status is all a client has.
  }
  return `http ${r.status}`;
}

/** grpc-status from a gRPC-Web body's trailer frame (flag 0x80). */
function grpcWebTrailer(body: Buffer): string | undefined {
  for (let off = 0; off + 5 <= body.length; ) {
    const len = body.readUInt32BE(off + 1);
    if (body[off]! & 0x80) return /grpc-status:\s*(\d+)/i.exec(body.subarray(off + 5, off + 5 + len).toString("latin1"))?.[1];
    off += 5 + len;
  }
  return undefined;
}

/** The code of a Connect stream's end-of-stream frame (flag 0x02): its error's, or ok. */
function connectEndStream(body: Buffer): string | undefined {
  for (let off = 0; off + 5 <= body.length; ) {
    const len = body.readUInt32BE(off + 1);
    if (body[off]! & 0x02) {
      try {
        const end = JSON.parse(body.subarray(off + 5, off + 5 + len).toString("utf8")) as { error?: { code?: string } };
        return end.error?.code ?? "ok";
      } catch {
        return "bad end of stream";
      }
    }
    off += 5 + len;
  }
  return undefined;
}
