import { Code } from "@connectrpc/connect";
import type { PrometheusText } from "@quantix/core";
import { codeLabel } from "../code-label.js";

/** Upper bounds (seconds) of the latency histogram's buckets; +Inf is implied. */
export const LATENCY_BUCKETS_SEC = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

interface Histogram {
  /** Per bucket, calls that landed in it (not cumulative; summed when rendered). */
  readonly buckets: number[];
  sum: number;
  count: number;
}

/**
 * RPC counts by procedure and code, latency histograms by procedure, and open streams,
 * kept as plain numbers: each finished call costs two map lookups and a short bucket
 * scan, where the call is already being logged (the interceptor and the gRPC fast path).
 */
export class RpcMetrics {
  private readonly calls = new Map<string, { procedure: string; code: string; n: number }>();
  private readonly latency = new Map<string, Histogram>();
  private readonly streams = new Map<string, number>();

  /** Records one finished call (unary or stream) with its final code (0 = OK). */
  observe(procedure: string, code: Code | 0, durationMs: number): void {
    const codeName = codeLabel(code);
    const key = `${procedure} ${codeName}`;
    const c = this.calls.get(key);
    if (c) c.n++;
    else this.calls.set(key, { procedure, code: codeName, n: 1 });
    let h = this.latency.get(procedure);
    if (!h) this.latency.set(procedure, (h = { buckets: new Array<number>(LATENCY_BUCKETS_SEC.length + 1).fill(0), sum: 0, count: 0 }));
    const sec = durationMs / 1000;
    let i = 0;
    while (i < LATENCY_BUCKETS_SEC.length && sec > LATENCY_BUCKETS_SEC[i]!) i++;
    h.buckets[i]!++;
    h.sum += sec;
    h.count++;
  }

  /** A server stream began (a watch, a console follow, ...). */
  streamOpened(procedure: string): void {
    this.streams.set(procedure, (this.streams.get(procedure) ?? 0) + 1);
  }

  /** A server stream ended, however it ended. */
  streamClosed(procedure: string): void {
    this.streams.set(procedure, (this.streams.get(procedure) ?? 1) - 1);
  }

  /** Open streams of the procedures whose method name starts with "Watch". */
  openWatches(): number {
    let n = 0;
    for (const [p, v] of this.streams) if (p.slice(p.lastIndexOf("/") + 1).startsWith("Watch")) n += v;
    return n;
  }

  /** Writes the RPC families. */
  render(out: PrometheusText): void {
    out.family("quantix_rpc_calls_total", "counter", "Finished RPCs by procedure and code (streams count when they end).");
    for (const c of this.calls.values()) out.sample("quantix_rpc_calls_total", { procedure: c.procedure, code: c.code }, c.n);
    out.family("quantix_rpc_duration_seconds", "histogram", "RPC duration from the request to the last response message, by procedure.");
    for (const [procedure, h] of this.latency) {
      let cumulative = 0;
      LATENCY_BUCKETS_SEC.forEach((le, i) => {
        cumulative += h.buckets[i]!;
        out.sample("quantix_rpc_duration_seconds_bucket", { procedure, le: String(le) }, cumulative);
      });
      out.sample("quantix_rpc_duration_seconds_bucket", { procedure, le: "+Inf" }, h.count);
      out.sample("quantix_rpc_duration_seconds_sum", { procedure }, h.sum);
      out.sample("quantix_rpc_duration_seconds_count", { procedure }, h.count);
    }
    out.family("quantix_rpc_streams_open", "gauge", "Server streams open now, by procedure.");
    for (const [procedure, n] of this.streams) out.sample("quantix_rpc_streams_open", { procedure }, n);
  }
}
