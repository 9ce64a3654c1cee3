import { createContextValues, type Transport } from "@connectrpc/connect";
import { createUniversalHandlerClient, type UniversalHandler } from "@connectrpc/connect/protocol";
import { createTransport } from "@connectrpc/connect/protocol-connect";
import { peerKey, type Peer } from "./call-context.js";

/**
 * A transport that runs calls through a server's own router handlers, interceptor chain
 * included (log line, metrics, error mapping, authentication and policy), without a
 * network hop, each call carrying `peer` as the connection it came from. For the one-port
 * listener's non-RPC doors (a WebSocket, a plain-text GET) that must answer exactly as
 * the RPC they stand for. Connect protocol, binary, no compression, no size limits of its
 * own (the router's apply).
 */
export function inProcessTransport(handlers: readonly UniversalHandler[], peer: Peer): Transport {
  const withPeer = handlers.map((h) => Object.assign((req: Parameters<UniversalHandler>[0]) => h({ ...req, contextValues: createContextValues().set(peerKey, peer) }), h) as UniversalHandler);
  return createTransport({
    httpClient: createUniversalHandlerClient(withPeer),
    baseUrl: "http://in-process",
    useBinaryFormat: true,
    interceptors: [],
    acceptCompression: [],
    sendCompression: null,
    compressMinBytes: Number.MAX_SAFE_INTEGER,
    readMaxBytes: Number.MAX_SAFE_INTEGER,
    writeMaxBytes: Number.MAX_SAFE_INTEGER,
  });
}
