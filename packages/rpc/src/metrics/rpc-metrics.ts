import { Code } from "@connectrpc/connect";
import { Counter, Gauge, Histogram, Registry } from "prom-client";
import { codeLabel } from "../code-label.js";

/** Upper bounds (seconds) of the latency histogram's buckets; +Inf is implied. */
export const LATENCY_BUCKETS_SEC = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

/** The procedure label of calls to procedures the server does not serve. */
export const UNKNOWN_PROCEDURE = "unknown";

/**
 * RPC counts by procedure and code, latency histograms by procedure, and open streams,
 * as prom-client metrics in `registry` (the binary's /metrics): quantix_rpc_calls_total,
 * quantix_rpc_duration_seconds and quantix_rpc_streams_open. The observeCalls interceptor
 * reports every call here, on every protocol path.
 */
export class RpcMetrics {
  private readonly calls: Counter<"procedure" | "code">;
  private readonly duration: Histogram<"procedure">;
  /**
   * The labelled children of the counter and the histogram, made once per label set:
   * prom-client hashes the labels on every inc/observe otherwise (a few µs of a unary call).
   */
  private readonly callChildren = new Map<string, { inc(): void }>();
  private readonly durationChildren = new Map<string, { observe(v: number): void }>();
  /**
   * The procedures counted under their own name (every other one under UNKNOWN_PROCEDURE,
   * so a client naming methods cannot grow the label sets); while empty, every name counts.
   */
  private readonly known = new Set<string>();
  /** Open streams by procedure: kept as plain numbers (openWatches reads them synchronously), set into the gauge when scraped. */
  private readonly streams = new Map<string, number>();

  constructor(readonly registry: Registry = new Registry()) {
    this.calls = new Counter({ name: "quantix_rpc_calls_total", help: "Finished RPCs by procedure and code (streams count when they end).", labelNames: ["procedure", "code"], registers: [registry] });
    this.duration = new Histogram({
      name: "quantix_rpc_duration_seconds",
      help: "RPC duration from the request to the last response message, by procedure.",
      labelNames: ["procedure"],
      buckets: [...LATENCY_BUCKETS_SEC],
      registers: [registry],
    });
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
    const procedure = this.procedureLabel(rawProcedure);
    const label = codeLabel(code);
    const key = `${procedure} ${label}`;
    let call = this.callChildren.get(key);
    if (!call) this.callChildren.set(key, (call = this.calls.labels({ procedure, code: label })));
    call.inc();
    let duration = this.durationChildren.get(procedure);
    if (!duration) this.durationChildren.set(procedure, (duration = this.duration.labels({ procedure })));
    duration.observe(durationMs / 1000);
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
