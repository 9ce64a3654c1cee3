import * as http2 from "node:http2";
import { nowMs, percentile } from "./stats.js";

/** Request headers of a gRPC call. */
export const grpcHeaders = (path: string): http2.OutgoingHttpHeaders => ({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers" });

/** A finished unary exchange. */
export interface Exchange {
  readonly status: number;
  readonly headers: http2.IncomingHttpHeaders;
  readonly trailers: http2.IncomingHttpHeaders;
  readonly body: Buffer;
}

/** Opens an HTTP/2 session (h2c, or TLS for an https URL) and waits until the server's SETTINGS arrived. */
export function connect(url: string, options: http2.ClientSessionOptions | http2.SecureClientSessionOptions = {}): Promise<http2.ClientHttp2Session> {
  return new Promise((resolve, reject) => {
    const s = http2.connect(url, options);
    s.once("error", reject);
    s.once("remoteSettings", () => {
      s.off("error", reject);
      s.on("error", () => undefined);
      resolve(s);
    });
  });
}

/** One request with a pre-encoded body; resolves when the response (and its trailers) ended. */
export function exchange(session: http2.ClientHttp2Session, headers: http2.OutgoingHttpHeaders, body: Buffer): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    const req = session.request(headers);
    let status = 0;
    let resHeaders: http2.IncomingHttpHeaders = {};
    let trailers: http2.IncomingHttpHeaders = {};
    const chunks: Buffer[] = [];
    req.on("response", (h) => {
      status = Number(h[":status"]);
      resHeaders = h;
    });
    req.on("trailers", (t) => (trailers = t));
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve({ status, headers: resHeaders, trailers, body: Buffer.concat(chunks) }));
    req.on("error", reject);
    req.end(body);
  });
}

/** The gRPC status of an exchange: from the trailers, or a trailers-only response's headers. */
export const grpcStatus = (x: Exchange): string => String(x.trailers["grpc-status"] ?? x.headers["grpc-status"] ?? "missing");

/** Latency at concurrency 1, in microseconds. */
export interface Latency {
  readonly p50Us: number;
  readonly p99Us: number;
  readonly samples: number;
}

/**
 * Sequential requests, each sent only after the previous one ended, timed from request
 * to the end of the response. Targets take turns in `rounds` rounds of n/rounds calls
 * (after `warmup` unmeasured calls each), so drift in the machine's load hits all alike.
 */
export async function sequentialLatency(urls: readonly string[], headers: http2.OutgoingHttpHeaders | readonly http2.OutgoingHttpHeaders[], body: Buffer, n = 2000, warmup = 200, rounds = 4, budgetMs = 60_000, options: http2.SecureClientSessionOptions = {}): Promise<Latency[]> {
  const sessions = await Promise.all(urls.map((u) => connect(u, options)));
  const samples: number[][] = urls.map(() => []);
  const deadline = nowMs() + budgetMs;
  const calls = async (i: number, count: number, keep: boolean) => {
    for (let k = 0; k < count && nowMs() < deadline; k++) {
      const t0 = process.hrtime.bigint();
      await exchange(sessions[i]!, Array.isArray(headers) ? headers[i]! : (headers as http2.OutgoingHttpHeaders), body);
      if (keep) samples[i]!.push(Number(process.hrtime.bigint() - t0) / 1000);
    }
  };
  try {
    for (let i = 0; i < urls.length; i++) await calls(i, warmup, false);
    for (let r = 0; r < rounds; r++) for (let i = 0; i < urls.length; i++) await calls(i, Math.ceil(n / rounds), true);
  } finally {
    for (const s of sessions) s.close();
  }
  return samples.map((us) => ({ p50Us: percentile(us, 50), p99Us: percentile(us, 99), samples: us.length }));
}

/** Sends `n` requests, `concurrency` at a time, and counts those `check` rejects (or that fail). */
export async function countBad(url: string, headers: http2.OutgoingHttpHeaders, body: Buffer, check: (x: Exchange) => boolean, n = 200, concurrency = 20, options: http2.SecureClientSessionOptions = {}): Promise<number> {
  const session = await connect(url, options);
  let bad = 0;
  let next = 0;
  const worker = async () => {
    while (next < n) {
      next++;
      try {
        if (!check(await exchange(session, headers, body))) bad++;
      } catch {
        bad++;
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: concurrency }, worker));
  } finally {
    session.close();
  }
  return bad;
}
