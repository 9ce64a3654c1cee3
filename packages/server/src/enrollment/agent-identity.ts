import { X509Certificate } from "node:crypto";
import { nodeIdOfSubjectAltName, type Principal, type ProjectRole } from "@quantix/core";
import type { Peer } from "@quantix/rpc";
import type { ClusterCa } from "./cluster-ca.js";

/** The node an enrolled agent's verified certificate names. */
export interface AgentIdentity {
  readonly nodeId: string;
  /** The node name it was enrolled for (the certificate's CN). */
  readonly nodeName: string;
}

/** Certificates already checked, by fingerprint (an agent calls every few seconds). */
const MAX_REMEMBERED = 4096;

/**
 * Reads who a call's peer is as an enrolled agent: a TLS client certificate that the
 * cluster CA itself issued (not merely one the listener verified: QUANTIX_TLS_CLIENT_CA
 * may add other CAs) and that names exactly one node (spiffe://quantix/node/<id>).
 * Undefined for any other caller.
 */
export function agentIdentityReader(ca: ClusterCa): (peer: Peer) => AgentIdentity | undefined {
  const seen = new Map<string, AgentIdentity | null>();
  return (peer) => {
    const c = peer.certificate;
    if (!c?.raw) return undefined;
    const known = seen.get(c.fingerprint256);
    if (known !== undefined) return known ?? undefined;
    let identity: AgentIdentity | null = null;
    const nodeId = nodeIdOfSubjectAltName(c.subjectaltname);
    if (nodeId !== undefined && ca.issued(new X509Certificate(c.raw))) {
      const cn = c.subject?.CN;
      identity = { nodeId, nodeName: Array.isArray(cn) ? (cn[0] ?? "") : (cn ?? "") };
    }
    if (seen.size >= MAX_REMEMBERED) seen.clear();
    seen.set(c.fingerprint256, identity);
    return identity ?? undefined;
  };
}

/**
 * The principal of an enrolled agent (kind "agent", id = its node's id), for the
 * authentication interceptor: a call whose peer holds a node's certificate is that
 * node's agent. Undefined when the peer is no enrolled agent.
 */
export function agentPrincipalFromPeer(read: (peer: Peer) => AgentIdentity | undefined, peer: Peer): Principal | undefined {
  const id = read(peer);
  if (!id) return undefined;
  return { kind: "agent", id: id.nodeId, name: `agent of node ${id.nodeName} (${id.nodeId})`, systemAdmin: false, projects: new Map<string, ProjectRole>() };
}
