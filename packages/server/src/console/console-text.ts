import { createClient, type Transport } from "@connectrpc/connect";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { peerOfSocket, type Peer } from "@quantix/rpc";
import { authHeaders, consolePathVmId, errorText, intParam, QueryError, requestUrl, type AnyRequest } from "./console-http.js";

type Res = { writeHead(status: number, headers: Record<string, string | number>): unknown; end(body?: string | Uint8Array): unknown };

/**
 * `GET /v1/vms/{id}/console?tail_bytes=N`: GetConsoleOutput for curl users, as
 * `text/plain; charset=utf-8` (the guest's bytes as it wrote them). The RPC itself runs
 * in process with the request's credentials, so authentication, policy, audit and the
 * log line are the RPC's; an error answers its HTTP status with "code: message".
 * Returns false for a path that is not this endpoint.
 */
export function consoleText(transport: (peer: Peer) => Transport): (req: AnyRequest, res: Res) => boolean {
  return (req, res) => {
    const url = requestUrl(req.url);
    const vmId = url && consolePathVmId(url.pathname, "");
    if (url === undefined || vmId === undefined) return false;
    const send = (status: number, body: string | Uint8Array, extra: Record<string, string> = {}) => {
      res.writeHead(status, { "content-type": "text/plain; charset=utf-8", "content-length": typeof body === "string" ? Buffer.byteLength(body) : body.length, ...extra });
      res.end(req.method === "HEAD" ? undefined : body);
    };
    if (req.method !== "GET" && req.method !== "HEAD") {
      send(405, `method ${req.method} not allowed: GET /v1/vms/{id}/console?tail_bytes=N\n`, { allow: "GET, HEAD" });
      return true;
    }
    let tailBytes: number;
    try {
      tailBytes = intParam(url.searchParams, "tail_bytes", 1024 * 1024);
    } catch (err) {
      if (!(err instanceof QueryError)) throw err;
      send(400, `invalid_argument: ${err.message}\n`);
      return true;
    }
    const client = createClient(VMService, transport(peerOfSocket(req.socket as Parameters<typeof peerOfSocket>[0])));
    client.getConsoleOutput({ vmId, tailBytes }, { headers: authHeaders(req, url.searchParams) }).then(
      (out) => send(200, out.data, { "x-console-truncated": String(out.truncated) }),
      (err: unknown) => {
        const e = errorText(err);
        send(e.status, e.body);
      },
    );
    return true;
  };
}
