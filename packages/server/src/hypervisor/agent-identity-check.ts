import { NodeStatusSchema, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { create } from "@bufbuild/protobuf";
import { ConditionStatus } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { NODE_KIND, type Store } from "@quantix/core";
import { setCondition } from "../controllers/conditions.js";
import { probeAgent, type AgentDialTls, type AgentProbe } from "./agent-tls.js";

/** The node condition that says whether the control plane verified the node's agent (written here only). */
export const AGENT_IDENTITY_CONDITION = "AgentIdentity";

/** The control plane talks to enrolled agents only; `dial` is undefined when it has no cluster CA to dial with. */
export interface EnrolledOnly {
  readonly dial: AgentDialTls | undefined;
  /** Tests: the probe of an endpoint (default: a real TLS handshake). */
  readonly probe?: (endpoint: string, nodeId: string, dial: AgentDialTls) => Promise<AgentProbe>;
}

/** Why a node's agent is not attached: a condition's reason and message. */
export interface Refusal {
  readonly reason: string;
  readonly message: string;
}

/**
 * Whether the agent at a node's endpoint may be attached: undefined when it proved it is
 * the node's (or could not be reached yet: every connection checks the certificate anyway),
 * else why not.
 */
export async function refusalOf(node: Node, endpoint: string, o: EnrolledOnly): Promise<Refusal | undefined> {
  if (!endpoint.startsWith("https://")) {
    return { reason: "AgentNotEnrolled", message: `the agent endpoint ${endpoint} is not https: this control plane talks to enrolled agents only, over mutual TLS; enroll the agent (quantix agent --join <control plane URL> --join-token <token> --ca-cert <ca.crt>)` };
  }
  if (!o.dial) {
    return { reason: "NoClusterCa", message: "this control plane has no cluster CA (QUANTIX_CA_CERT, QUANTIX_CA_KEY): it cannot call agents over mutual TLS" };
  }
  const probe = await (o.probe ?? probeAgent)(endpoint, node.id, o.dial);
  if (probe.kind === "wrong-identity") {
    return { reason: "AgentIdentityMismatch", message: `the agent endpoint ${endpoint} did not prove it is node ${node.id}'s enrolled agent: ${probe.message}; it is not called (is the endpoint pointing at another service?)` };
  }
  return undefined;
}

/** Records the outcome in the node's AgentIdentity condition, writing only when it changes. */
export async function writeAgentIdentity(store: Store, node: Node, refusal: Refusal | undefined, nowMs: number): Promise<void> {
  const want = refusal ?? { reason: "AgentCertificateVerified", message: "the agent endpoint is served with the node's certificate from the cluster CA, or will be checked on connecting" };
  const same = (n: Node) => {
    const c = n.status?.conditions.find((x) => x.type === AGENT_IDENTITY_CONDITION);
    return c !== undefined && c.reason === want.reason && c.message === want.message && c.status === (refusal ? ConditionStatus.FALSE : ConditionStatus.TRUE);
  };
  // A node that never had the condition and is fine needs none.
  if (same(node) || (!refusal && !node.status?.conditions.some((x) => x.type === AGENT_IDENTITY_CONDITION))) return;
  await store
    .of(NODE_KIND)
    .update(node.id, (cur) => {
      if (same(cur)) return undefined;
      const s = cur.status ?? create(NodeStatusSchema);
      s.conditions = setCondition(s.conditions, { type: AGENT_IDENTITY_CONDITION, status: !refusal, reason: want.reason, message: want.message, generation: 0n }, nowMs);
      cur.status = s;
      return cur;
    })
    .catch(() => undefined);
}
