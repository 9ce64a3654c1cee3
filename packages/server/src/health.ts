import type { ConnectNodeAdapterOptions } from "@connectrpc/connect-node";
import type { Store } from "@quantix/core";
import { prometheusContentType } from "prom-client";
import type { WorkersStatus } from "./workers.js";

/** The version reported by /_/health. */
export const VERSION = "0.1.0";

type Fallback = NonNullable<ConnectNodeAdapterOptions["fallback"]>;
type Req = Parameters<Fallback>[0];
type Res = Parameters<Fallback>[1];

/**
 * Serves `GET /_/health` (status, version, the serving process's pid (which of
 * QUANTIX_WORKERS answered), uptime, store health, and under QUANTIX_WORKERS how many
 * workers run of how many wanted, how many were replaced and the last one's exit), `GET /metrics` (the
 * Prometheus text from `metrics`, when given) and answers every other non-RPC path with a
 * JSON 404 that says where the API lives.
 */
export function createFallback(store: Store, startedAtMs: number, now: () => number, metrics?: () => Promise<string>, workers?: () => WorkersStatus | undefined) {
  return (req: Req, res: Res): void => {
    const url = (req.url ?? "/").split("?")[0];
    if (url === "/_/health" && (req.method === "GET" || req.method === "HEAD")) {
      const siblings = workers?.();
      const common = () => ({ version: VERSION, pid: process.pid, uptime_seconds: Math.floor((now() - startedAtMs) / 1000), ...(siblings ? { workers: siblings } : {}) });
      void store.health().then(
        (s) => send(res, s.ok ? 200 : 503, { status: s.ok ? "ok" : "degraded", ...common(), store: s }),
        (err: unknown) => send(res, 503, { status: "degraded", ...common(), store: { ok: false, detail: String(err) } }),
      );
      return;
    }
    if (url === "/metrics" && req.method === "GET" && metrics) {
      metrics().then(
        (text) => {
          (res as { writeHead(s: number, h: Record<string, string | number>): unknown }).writeHead(200, { "content-type": prometheusContentType, "content-length": Buffer.byteLength(text) });
          res.end(text);
        },
        (err: unknown) => send(res, 503, { error: "unavailable", message: `metrics unavailable: ${err instanceof Error ? err.message : String(err)}` }),
      );
      return;
    }
    send(res, 404, { error: "not_found", message: `no route for ${req.method} ${url}; RPCs are POST /<package>.<Service>/<Method>, e.g. POST /Quantixkvm.compute.v1.VMService/ListVMs` });
  };
}

function send(res: Res, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  (res as { writeHead(s: number, h: Record<string, string | number>): unknown }).writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}
