import * as http from "node:http";
import * as http2 from "node:http2";
import type { UniversalHandler } from "@connectrpc/connect/protocol";
import { Code, ConnectError, createConnectRouter, createContextKey, createContextValues, type ConnectRouter, type ConnectRouterOptions, type Interceptor } from "@connectrpc/connect";
import { universalRequestFromNodeRequest, universalResponseToNodeResponse, type ConnectNodeAdapterOptions } from "@connectrpc/connect-node";
import { ACCEPT_COMPRESSION, GRPC_ACCEPT_ENCODING } from "../compression.js";
import { clientDecodeError } from "../errors.js";
import { fixResponseError, wireProtocolOf } from "./response-error.js";
import { peerKey, peerOfSocket } from "../call-context.js";

/** A Node request handler, for HTTP/1.1 and HTTP/2 alike. */
export type NodeHandler = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void;

/** What the router serves and whom it tells about calls the interceptor chain never saw. */
export interface RouterHandlerOptions extends ConnectRouterOptions {
  readonly routes: (router: ConnectRouter) => void;
  /** Answers requests for paths that are not RPCs, except gRPC ones (UNIMPLEMENTED). */
  readonly fallback: NonNullable<ConnectNodeAdapterOptions["fallback"]>;
  /**
   * Told of a call that ended before the interceptor chain (a request that cannot be
   * decoded, or is too large, or names no method), with the error the client got.
   */
  readonly refused: (procedure: string, err: ConnectError, durationMs: number) => void;
  /** Told when writing a response failed (the client went away): not the server's error. */
  readonly writeFailed: (procedure: string, reason: unknown) => void;
}

/** Set by the chain's outermost interceptor on the router: the call reached the chain. */
const reachedChain = createContextKey<{ value: boolean }>({ value: true }, { description: "the call reached the interceptor chain" });
const markReached: Interceptor = (next) => (req) => {
  req.contextValues.get(reachedChain).value = true;
  return next(req);
};

/**
 * connect-node's connectNodeAdapter with what the protocols require and it leaves out:
 * an unknown gRPC method is UNIMPLEMENTED (HTTP 200 and grpc-status 12, not a 404), gRPC
 * responses list the encodings the server accepts (grpc-accept-encoding), a request the
 * router cannot decode is INVALID_ARGUMENT (connect-es says INTERNAL), and a call that
 * fails before the interceptor chain is still reported (`refused`).
 */
export function routerHandler(o: RouterHandlerOptions): NodeHandler & { readonly handlers: readonly UniversalHandler[] } {
  const router = createConnectRouter({ acceptCompression: ACCEPT_COMPRESSION, ...o, interceptors: [markReached, ...(o.interceptors ?? [])] });
  o.routes(router);
  const paths = new Map(router.handlers.map((h) => [h.requestPath, h]));
  const handle: NodeHandler = (req, res) => {
    const path = (req.url ?? "").split("?", 1)[0]!;
    const handler = paths.get(path);
    const contentType = String(req.headers["content-type"] ?? "");
    const protocol = wireProtocolOf(contentType);
    const grpc = protocol === "grpc" || protocol === "grpc-web";
    if (!handler) {
      if (grpc) unknownGrpcMethod(req, res, path, contentType, o.refused);
      else o.fallback(req, res);
      return;
    }
    const start = performance.now();
    const procedure = `${handler.service.typeName}/${handler.method.name}`;
    const reached = { value: false };
    const uReq = universalRequestFromNodeRequest(req, res, undefined, createContextValues().set(reachedChain, reached).set(peerKey, peerOfSocket(req.socket as Parameters<typeof peerOfSocket>[0])));
    handler(uReq)
      .then((uRes) => {
        if (grpc) uRes.header?.set("grpc-accept-encoding", GRPC_ACCEPT_ENCODING);
        const fixed = fixResponseError(protocol, uRes, (err) => {
          const e = clientDecodeError(err, handler.method.input);
          if (!reached.value) o.refused(procedure, e, performance.now() - start);
          return e;
        });
        return universalResponseToNodeResponse(fixed, res);
      })
      .catch((reason: unknown) => o.writeFailed(procedure, reason));
  };
  return Object.assign(handle, { handlers: router.handlers });
}

function unknownGrpcMethod(req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse, path: string, contentType: string, refused: RouterHandlerOptions["refused"]): void {
  // The path is the client's: echo a bounded part of it.
  const shown = path.length > 200 ? `${path.slice(0, 200)}...` : path;
  const err = new ConnectError(`unknown method ${shown}: RPCs are POST /<package>.<Service>/<Method>`, Code.Unimplemented);
  const type = contentType.startsWith("application/grpc-web") ? "application/grpc-web+proto" : "application/grpc+proto";
  // Trailers-only: the status in the headers of an empty response; what the client still sends is read and dropped.
  req.resume();
  const headers = { "content-type": type, "grpc-status": String(err.code), "grpc-message": encodeURIComponent(err.rawMessage), "grpc-accept-encoding": GRPC_ACCEPT_ENCODING };
  // On HTTP/2 one HEADERS frame that ends the stream (the compatibility layer would send an empty DATA frame after it).
  if (res instanceof http2.Http2ServerResponse) {
    if (!res.stream.destroyed) res.stream.respond({ ":status": 200, ...headers }, { endStream: true });
  } else res.writeHead(200, headers).end();
  refused(path, err, 0);
}
