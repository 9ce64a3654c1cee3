import * as http2 from "node:http2";
import { EnvelopeReader, envelope } from "./grpc-frame.js";
import { connect } from "./h2-client.js";
import { SMALL, isSynced } from "./fanout.js";
import { median, nowMs } from "./stats.js";

/** One server-streaming call read up to its SYNCED marker. */
export interface StreamRun {
  readonly messages: number;
  /** Mean payload size of the messages before SYNCED. */
  readonly meanPayloadBytes: number;
  readonly ms: number;
}

/** The median of several runs, in messages per second. */
export interface StreamRate {
  readonly messagesPerSec: number;
  readonly runs: readonly StreamRun[];
}

/**
 * Time from sending the request to receiving the SYNCED envelope, counting envelopes
 * without decoding them (only payloads under SMALL bytes are decoded, to spot SYNCED).
 */
export async function streamOnce(url: string, headers: http2.OutgoingHttpHeaders, timeoutMs = 60_000): Promise<StreamRun> {
  const session = await connect(url);
  session.setLocalWindowSize(64 * 1024 * 1024);
  try {
    return await new Promise<StreamRun>((resolve, reject) => {
      let messages = 0;
      let bytes = 0;
      const t0 = nowMs();
      const req = session.request(headers);
      const timer = setTimeout(() => reject(new Error(`no SYNCED within ${timeoutMs} ms (${messages} messages)`)), timeoutMs);
      const reader = new EnvelopeReader(
        (len, payload) => {
          messages++;
          if (!isSynced(payload)) return void (bytes += len);
          clearTimeout(timer);
          resolve({ messages, meanPayloadBytes: messages > 1 ? bytes / (messages - 1) : 0, ms: nowMs() - t0 });
          req.close(http2.constants.NGHTTP2_CANCEL);
        },
        (len) => len < SMALL,
      );
      req.on("data", (c: Buffer) => reader.push(c));
      req.on("error", (err) => reject(err));
      req.on("trailers", (t) => reject(new Error(`stream ended before SYNCED: grpc-status ${String(t["grpc-status"])} ${String(t["grpc-message"] ?? "")}`)));
      // A Connect stream ends without trailers (its status is in the last envelope).
      req.on("end", () => reject(new Error(`stream ended before SYNCED (${messages} messages)`)));
      req.end(envelope(new Uint8Array(0)));
    });
  } finally {
    session.destroy();
  }
}

/** One unmeasured run each, then `runs` rounds in which the targets take turns; the median rate counts. */
export async function streamRates(targets: readonly { url: string; headers: http2.OutgoingHttpHeaders }[], runs = 9): Promise<StreamRate[]> {
  for (const t of targets) await streamOnce(t.url, t.headers);
  const results: StreamRun[][] = targets.map(() => []);
  for (let r = 0; r < runs; r++) for (const [i, t] of targets.entries()) results[i]!.push(await streamOnce(t.url, t.headers));
  return results.map((rs) => ({ messagesPerSec: median(rs.map((x) => (x.messages / x.ms) * 1000)), runs: rs }));
}
