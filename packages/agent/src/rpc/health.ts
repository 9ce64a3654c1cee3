import type { ConnectNodeAdapterOptions } from "@connectrpc/connect-node";
import type { Logger, RpcMetrics } from "@quantix/rpc";
import { prometheusContentType } from "prom-client";
import type { Backend } from "../backend.js";
import { renderAgentMetrics } from "./agent-metrics.js";

/** The agent's version, reported by /_/health and to the control plane. */
export const AGENT_VERSION = "0.1.0";

type Fallback = NonNullable<ConnectNodeAdapterOptions["fallback"]>;
type Res = Parameters<Fallback>[1];

/** What `GET /_/health` answers: its status and JSON body. */
export interface HealthReport {
  readonly status: number;
  readonly body: Record<string, unknown>;
}

/**
 * The health report: 503 with `problem()`'s reason while the agent cannot serve as a node
 * (it was decommissioned); otherwise 200 with the backend's type, version and ping result
 * when the hypervisor answers, 503 with the reason when it does not. Served over HTTP by
 * {@link healthFallback}, and read directly for an agent in the control plane's process.
 */
export async function healthReport(backend: Backend, backendVersion: string, problem: () => string | undefined = () => undefined): Promise<HealthReport> {
  const base = { version: AGENT_VERSION, backend: { type: backend.type, version: backendVersion, capabilities: [...backend.capabilities].sort() } };
  const reason = problem();
  if (reason !== undefined) return { status: 503, body: { status: "failed", reason, ...base } };
  try {
    await backend.ping();
    return { status: 200, body: { status: "ok", ...base, ping: { ok: true } } };
  } catch (err) {
    return { status: 503, body: { status: "degraded", ...base, ping: { ok: false, detail: err instanceof Error ? err.message : String(err) } } };
  }
}

/**
 * Serves `GET /_/health` ({@link healthReport}); `GET /metrics` in the
 * Prometheus text format (agent-metrics.ts; with the RPC metrics of `o.rpc`), or 503 with a generic message when the backend
 * cannot list its VMs (the cause, which may name host paths, goes to the log only). Every
 * other non-RPC path gets a JSON 404 naming where the API lives.
 */
export function healthFallback(backend: Backend, backendVersion: string, o: { log: Logger; problem?: (() => string | undefined) | undefined; rpc?: RpcMetrics }): Fallback {
  return (req, res) => {
    const url = (req.url ?? "/").split("?")[0];
    if (url === "/_/health" && (req.method === "GET" || req.method === "HEAD")) {
      void healthReport(backend, backendVersion, o.problem).then((r) => send(res, r.status, r.body));
      return;
    }
    if (url === "/metrics" && req.method === "GET") {
      renderAgentMetrics(backend, o.rpc).then(
        (text) => sendText(res, 200, text),
        (err: unknown) => {
          o.log.log("error", "rendering /metrics failed", { error: err instanceof Error ? err.message : String(err) });
          send(res, 503, { error: "unavailable", message: "the agent could not read its VMs' metrics; see the agent's log" });
        },
      );
      return;
    }
    send(res, 404, { error: "not_found", message: `no route for ${req.method} ${url}; RPCs are POST /vmm.v1.VmService/<Method>, health is GET /_/health, metrics GET /metrics` });
  };
}

function send(res: Res, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  (res as { writeHead(s: number, h: Record<string, string | number>): unknown }).writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

function sendText(res: Res, status: number, text: string): void {
  (res as { writeHead(s: number, h: Record<string, string | number>): unknown }).writeHead(status, { "content-type": prometheusContentType, "content-length": Buffer.byteLength(text) });
  res.end(text);
}
