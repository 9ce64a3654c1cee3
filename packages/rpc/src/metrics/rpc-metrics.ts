import { Code } from "@connectrpc/connect";
import { Counter, Gauge, Registry } from "prom-client";
import { codeLabel } from "../code-label.js";

/** Upper bounds (seconds) of the latency histogram's buckets; +Inf is implied. */
export const LATENCY_BUCKETS_SEC = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

/** The procedure label of calls to procedures the server does not serve. */
export const UNKNOWN_PROCEDURE = "unknown";

/** A procedure's calls by code and its latency histogram, as plain numbers (see RpcMetrics). */
interface ProcedureStats {
  readonly procedure: string;
  /** Calls by code: how many, and how many the counter has been told of. */
  readonly calls: Map<number, { n: number; counted: number }>;
  /** Calls per latency bucket (not cumulative); the last one is +Inf. */
  readonly buckets: number[];
  sum: number;
  count: number;
}

/**
 * RPC counts by procedure and code, latency histograms by procedure, and open streams,
 * as prom-client metrics in `registry` (the binary's /metrics): quantix_rpc_calls_total,
 * quantix_rpc_duration_seconds and quantix_rpc_streams_open. The observeCalls interceptor
 * reports every call here, on every protocol path.
 *
 * A call adds to plain numbers (a Map lookup by procedure, one by code); the registry reads
 * them when scraped. prom-client checks and hashes the labels on every inc and observe,
 * even of a labelled child made once: a few µs of every unary call.
 */
export class RpcMetrics {
  /**
   * Calls and latency by procedure label. Only labels are keys (a known procedure, or
   * UNKNOWN_PROCEDURE), so names a client makes up cannot grow it.
   */
  private readonly stats = new Map<string, ProcedureStats>();
  /**
   * The procedures counted under their own name (every other one under UNKNOWN_PROCEDURE,
   * so a client naming methods cannot grow the label sets); while empty, every name counts.
   */
  private readonly known = new Set<string>();
  /** Open streams by procedure: kept as plain numbers (openWatches reads them synchronously), set into the gauge when scraped. */
  private readonly streams = new Map<string, number>();

  constructor(readonly registry: Registry = new Registry()) {
    const stats = this.stats;
    new Counter({
      name: "quantix_rpc_calls_total",
      help: "Finished RPCs by procedure and code (streams count when they end).",
      labelNames: ["procedure", "code"],
      registers: [registry],
      collect() {
        for (const s of stats.values()) {
          for (const [code, c] of s.calls) {
            if (c.n > c.counted) this.inc({ procedure: s.procedure, code: codeLabel(code) }, c.n - c.counted);
            c.counted = c.n;
          }
        }
      },
    });
    registry.registerMetric(new LatencyHistogram(stats) as never);
    const streams = this.streams;
    new Gauge({
      name: "quantix_rpc_streams_open",
      help: "Server streams open now, by procedure.",
      labelNames: ["procedure"],
      registers: [registry],
      collect() {
        for (const [procedure, n] of streams) this.set({ procedure }, n);
      },
    });
  }

  /** Makes `procedures` ("pkg.Service/Method") the ones counted under their own name. */
  register(procedures: Iterable<string>): void {
    for (const p of procedures) this.known.add(p);
  }

  /** Records one finished call (unary or stream) with its final code (0 = OK). */
  observe(rawProcedure: string, code: Code | 0, durationMs: number): void {
    let s = this.stats.get(rawProcedure);
    if (s === undefined || s.procedure !== rawProcedure) {
      const procedure = this.procedureLabel(rawProcedure);
      s = this.stats.get(procedure);
      if (s === undefined) this.stats.set(procedure, (s = { procedure, calls: new Map(), buckets: new Array<number>(LATENCY_BUCKETS_SEC.length + 1).fill(0), sum: 0, count: 0 }));
    }
    const c = s.calls.get(code);
    if (c === undefined) s.calls.set(code, { n: 1, counted: 0 });
    else c.n++;
    const sec = durationMs / 1000;
    let i = 0;
    while (i < LATENCY_BUCKETS_SEC.length && sec > LATENCY_BUCKETS_SEC[i]!) i++;
    s.buckets[i]!++;
    s.sum += sec;
    s.count++;
  }

  /** A server stream began (a watch, a console follow, ...). */
  streamOpened(rawProcedure: string): void {
    const procedure = this.procedureLabel(rawProcedure);
    this.streams.set(procedure, (this.streams.get(procedure) ?? 0) + 1);
  }

  /** A server stream ended, however it ended. */
  streamClosed(rawProcedure: string): void {
    const procedure = this.procedureLabel(rawProcedure);
    this.streams.set(procedure, (this.streams.get(procedure) ?? 1) - 1);
  }

  private procedureLabel(procedure: string): string {
    return this.known.size === 0 || this.known.has(procedure) ? procedure : UNKNOWN_PROCEDURE;
  }

  /** Open streams of the procedures whose method name starts with "Watch". */
  openWatches(): number {
    let n = 0;
    for (const [p, v] of this.streams) if (p.slice(p.lastIndexOf("/") + 1).startsWith("Watch")) n += v;
    return n;
  }
}

/**
 * quantix_rpc_duration_seconds, read from RpcMetrics' numbers: a prom-client metric (what
 * a Registry asks of one: name, help, type, get and reset) whose samples are those a
 * prom-client Histogram with the same buckets would give.
 */
class LatencyHistogram {
  readonly name = "quantix_rpc_duration_seconds";
  readonly help = "RPC duration from the request to the last response message, by procedure.";
  readonly type = "histogram";
  readonly aggregator = "sum";

  constructor(private readonly stats: Map<string, ProcedureStats>) {}

  get(): { name: string; help: string; type: string; aggregator: string; values: { labels: Record<string, string | number>; value: number; metricName: string }[] } {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    for (const s of this.stats.values()) {
      if (s.count === 0) continue;
      const procedure = s.procedure;
      let acc = 0;
      LATENCY_BUCKETS_SEC.forEach((le, i) => {
        acc += s.buckets[i]!;
        values.push({ labels: { le, procedure }, value: acc, metricName: `${this.name}_bucket` });
      });
      values.push(
        { labels: { le: "+Inf", procedure }, value: s.count, metricName: `${this.name}_bucket` },
        { labels: { procedure }, value: s.sum, metricName: `${this.name}_sum` },
        { labels: { procedure }, value: s.count, metricName: `${this.name}_count` },
      );
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  /** Forgets every observation (Registry.resetMetrics). */
  reset(): void {
    for (const s of this.stats.values()) {
      s.buckets.fill(0);
      s.sum = 0;
      s.count = 0;
    }
  }
}
