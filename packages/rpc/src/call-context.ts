import type { PeerCertificate } from "node:tls";
import { createContextKey } from "@connectrpc/connect";
import type { Principal } from "@quantix/core";

/** The other end of a call's connection, as the transport knows it. */
export interface Peer {
  /** The client's address (IPv4, IPv6 or "" when unknown); never a header the client wrote. */
  readonly address: string;
  /** The client's certificate, on a TLS connection where it sent one the server's CA verified. */
  readonly certificate: PeerCertificate | undefined;
}

const NO_PEER: Peer = Object.freeze({ address: "", certificate: undefined });

/**
 * Set on every protocol path (the Connect router and the gRPC fast path) before the
 * interceptor chain runs: where the call came from. Read it with `req.contextValues.get(peerKey)`
 * in an interceptor or `ctx.values.get(peerKey)` in a handler.
 */
export const peerKey = createContextKey<Peer>(NO_PEER, { description: "the calling connection's peer" });

/**
 * Set by the server's authentication interceptor: who is calling. Undefined before
 * authentication ran, or on a server that has none.
 */
export const principalKey = createContextKey<Principal | undefined>(undefined, { description: "the authenticated caller" });

/** A request's cheap one-header reader, where its path has one (the gRPC fast path). */
export const HEADER_READER: unique symbol = Symbol("quantix.rpc.header-reader");

/**
 * One request header's value (`name` in lowercase), as `req.header.get(name)` gives it, but
 * on the gRPC fast path without building the request's Headers object (a few microseconds a
 * call): for an interceptor that reads one header on every call (authentication).
 */
export function requestHeader(req: { readonly header: Headers }, name: string): string | null {
  const reader = (req as { [HEADER_READER]?: { header(name: string): string | null } })[HEADER_READER];
  return reader ? reader.header(name) : req.header.get(name);
}

/** The peer of a Node socket: its address and, on TLS, the verified client certificate. */
export function peerOfSocket(socket: { remoteAddress?: string | undefined; getPeerCertificate?: (detailed?: boolean) => PeerCertificate; authorized?: boolean } | null | undefined): Peer {
  if (!socket) return NO_PEER;
  const address = socket.remoteAddress ?? "";
  let certificate: PeerCertificate | undefined;
  if (socket.authorized === true && typeof socket.getPeerCertificate === "function") {
    const c = socket.getPeerCertificate();
    if (c && Object.keys(c).length > 0) certificate = c;
  }
  return { address, certificate };
}
