// Who a certificate of the cluster CA names (issue 12): the control plane, or the agent of
// one node. The name is a URI subject alternative name in SPIFFE form, so it never depends
// on host names or addresses (an agent's endpoint may be an IP the operator changes).

/** The URI every certificate of the cluster's control plane carries (its client certificate for agents). */
export const CONTROL_PLANE_URI = "spiffe://quantix/control-plane";

const NODE_PREFIX = "spiffe://quantix/node/";

/** The URI of the certificate of node `nodeId`'s agent. */
export function nodeUri(nodeId: string): string {
  return `${NODE_PREFIX}${nodeId}`;
}

/** The node id a URI names, or undefined when it names no node. */
export function nodeIdOfUri(uri: string): string | undefined {
  if (!uri.startsWith(NODE_PREFIX)) return undefined;
  const id = uri.slice(NODE_PREFIX.length);
  return /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$/.test(id) ? id : undefined;
}

/**
 * The URIs of a certificate's subject alternative names, from Node's text form of them
 * (`PeerCertificate.subjectaltname`: `DNS:a, URI:spiffe://quantix/node/x, IP Address:1.2.3.4`).
 * A name that contains ", " or a quote is left out (Node quotes such names): ours never do.
 */
export function urisOfSubjectAltName(subjectaltname: string | undefined): string[] {
  if (!subjectaltname) return [];
  return subjectaltname
    .split(", ")
    .filter((n) => n.startsWith("URI:"))
    .map((n) => n.slice(4))
    .filter((u) => !u.startsWith('"'));
}

/** The node id a verified certificate's SANs name (exactly one), or undefined. */
export function nodeIdOfSubjectAltName(subjectaltname: string | undefined): string | undefined {
  const ids = urisOfSubjectAltName(subjectaltname).map(nodeIdOfUri).filter((id): id is string => id !== undefined);
  return ids.length === 1 ? ids[0] : undefined;
}
