import type * as http from "node:http";
import type * as http2 from "node:http2";
import { ConnectError } from "@connectrpc/connect";
import { codeToHttpStatus } from "@connectrpc/connect/protocol-connect";
import { codeLabel } from "@quantix/rpc";

/** A request of either HTTP version, as the one-port listener hands it over. */
export type AnyRequest = http.IncomingMessage | http2.Http2ServerRequest;

/** The VM id of `/v1/vms/{id}/console` (`suffix` ""), `/v1/vms/{id}/console/ws` ("/ws"); undefined when the path is not one. */
/**
 * A request target as a URL, or undefined when it is not an origin-form path. `new URL`
 * with a base reads `//` or `//host/x` as a URL of another host (and throws on `//`), and
 * `*` or an absolute form are no path of ours: those are simply not the console's.
 */
export function requestUrl(target: string | undefined): URL | undefined {
  if (!target?.startsWith("/")) return undefined;
  try {
    return new URL(`http://x${target}`);
  } catch {
    return undefined;
  }
}

export function consolePathVmId(pathname: string, suffix: "" | "/ws"): string | undefined {
  const prefix = "/v1/vms/";
  const end = `/console${suffix}`;
  if (!pathname.startsWith(prefix) || !pathname.endsWith(end)) return undefined;
  const raw = pathname.slice(prefix.length, pathname.length - end.length);
  if (raw === "" || raw.includes("/")) return undefined;
  try {
    return decodeURIComponent(raw);
  } catch {
    return undefined;
  }
}

/**
 * The headers the in-process RPC is called with: the request's `Authorization`, or a
 * `Bearer` header made of the `access_token` query parameter (browsers cannot set
 * headers on a WebSocket). Neither: no header, which only local trust mode accepts.
 */
export function authHeaders(req: AnyRequest, query: URLSearchParams): Record<string, string> {
  const header = req.headers.authorization;
  if (typeof header === "string" && header !== "") return { authorization: header };
  const token = query.get("access_token");
  return token ? { authorization: `Bearer ${token}` } : {};
}

/** An RPC error as plain text: the status its code maps to, and "code: message". */
export function errorText(err: unknown): { status: number; body: string } {
  const e = ConnectError.from(err);
  return { status: codeToHttpStatus(e.code), body: `${codeLabel(e.code)}: ${e.rawMessage}\n` };
}

/** Reads a non-negative integer query parameter, or throws INVALID_ARGUMENT-shaped text naming it. */
export function intParam(query: URLSearchParams, name: string, max: number): number {
  const v = query.get(name);
  if (v === null || v === "") return 0;
  if (!/^\d{1,16}$/.test(v) || Number(v) > max) throw new QueryError(`${name}: must be an integer between 0 and ${max}, got ${JSON.stringify(v.slice(0, 40))}`);
  return Number(v);
}

/** Reads a boolean query parameter ("1"/"true"/"0"/"false"/absent). */
export function boolParam(query: URLSearchParams, name: string): boolean {
  const v = query.get(name);
  if (v === null || v === "" || v === "0" || v === "false") return false;
  if (v === "1" || v === "true") return true;
  throw new QueryError(`${name}: must be true, false, 1 or 0, got ${JSON.stringify(v.slice(0, 40))}`);
}

/** A bad query parameter: answered 400 with its text. */
export class QueryError extends Error {}
