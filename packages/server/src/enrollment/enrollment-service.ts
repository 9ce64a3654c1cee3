import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampDate, timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import {
  CreateJoinTokenResponseSchema,
  EnrollResponseSchema,
  JoinTokenSchema,
  type CreateJoinTokenRequest,
  type CreateJoinTokenResponse,
  type EnrollRequest,
  type EnrollResponse,
  type JoinToken,
} from "@quantix/api/gen/Quantixkvm/compute/v1/enrollment_service_pb.js";
import { checkId, HOSTNAME, JOIN_TOKEN_KIND, NODE_KIND, QuantixError, Violations, throwIfViolations, type Clock, type IdGenerator, type Store } from "@quantix/core";
import type { ClusterCa } from "./cluster-ca.js";

/** A join token's validity when the request names none, and the longest allowed. */
export const DEFAULT_TOKEN_TTL_SEC = 3600;
const MAX_TOKEN_TTL_SEC = 7 * 86_400;
/** Tokens read `qjt_<id>.<secret>`: the prefix lets secret scanners find leaked ones. */
const TOKEN = /^qjt_([a-zA-Z0-9-]{1,64})\.([A-Za-z0-9_-]{43})$/;
/** Why a token is refused, without saying whether the id or the secret was wrong. */
const NOT_VALID = "the join token is not valid: create one with CreateJoinToken (EnrollmentService) and pass it whole to the agent (--join-token)";

/**
 * Join tokens and enrollment (EnrollmentService): CreateJoinToken stores a token's
 * SHA-256, Enroll exchanges a valid unused token and a CSR for the node's certificate,
 * marking the token used in one store write that checks it is still unused (two agents
 * racing with one token: one gets a certificate, the other UNAUTHENTICATED).
 */
export class EnrollmentService {
  constructor(private readonly deps: { store: Store; clock: Clock; ids: IdGenerator; ca: ClusterCa | undefined }) {}

  async createJoinToken(req: CreateJoinTokenRequest): Promise<CreateJoinTokenResponse> {
    this.requireCa();
    const v = new Violations();
    if (v.required("node_name", req.nodeName !== "")) v.pattern("node_name", req.nodeName, HOSTNAME, "must be an RFC 1123 host name (letters, digits, '-' and '.', at most 253 characters)");
    if (req.ttlSeconds !== 0) v.range("ttl_seconds", req.ttlSeconds, 60, MAX_TOKEN_TTL_SEC, " s");
    throwIfViolations(v.list);
    const now = this.deps.clock.now();
    const existing = await this.nodeNamed(req.nodeName);
    const secret = randomBytes(32).toString("base64url");
    const token = create(JoinTokenSchema, {
      id: this.deps.ids.newId(),
      nodeName: req.nodeName,
      nodeId: existing?.id ?? this.deps.ids.newId(),
      createTime: timestampFromMs(now),
      expireTime: timestampFromMs(now + (req.ttlSeconds || DEFAULT_TOKEN_TTL_SEC) * 1000),
      secretSha256: sha256(secret),
    });
    const stored = await this.deps.store.of(JOIN_TOKEN_KIND).create(token);
    return create(CreateJoinTokenResponseSchema, { joinToken: shown(stored), token: `qjt_${stored.id}.${secret}` });
  }

  async list(nodeName: string): Promise<JoinToken[]> {
    const v = new Violations();
    if (nodeName !== "") v.pattern("node_name", nodeName, HOSTNAME, "must be an RFC 1123 host name (letters, digits, '-' and '.', at most 253 characters)");
    throwIfViolations(v.list);
    const page = await this.deps.store.of(JOIN_TOKEN_KIND).list({ ...(nodeName ? { where: { node_name: nodeName } } : {}), order: { field: "create_time", desc: true }, limit: 1000 });
    return page.items.map(shown);
  }

  async delete(id: string): Promise<void> {
    const v = new Violations();
    checkId(v, "id", id);
    throwIfViolations(v.list);
    await this.deps.store.of(JOIN_TOKEN_KIND).delete(id);
  }

  /**
   * Checks the token, then the CSR (INVALID_ARGUMENT; the token stays unused), then marks
   * the token used (once: a replay is UNAUTHENTICATED) and returns the certificate.
   */
  async enroll(req: EnrollRequest): Promise<EnrollResponse> {
    const ca = this.requireCa();
    const v = new Violations();
    v.required("join_token", req.joinToken !== "");
    v.required("csr_pem", req.csrPem !== "");
    if (req.csrPem.length > 16_384) v.add("csr_pem", "INVALID_LENGTH", "must be at most 16384 characters");
    throwIfViolations(v.list);
    const m = TOKEN.exec(req.joinToken);
    if (!m) throw new QuantixError("unauthenticated", NOT_VALID);
    const [, id, secret] = m as unknown as [string, string, string];
    const token = await this.deps.store.of(JOIN_TOKEN_KIND).get(id);
    if (!token || token.secretSha256.length !== 32 || !timingSafeEqual(token.secretSha256, sha256(secret))) throw new QuantixError("unauthenticated", NOT_VALID);
    refuseSpent(token, this.deps.clock.now());
    // The node the certificate names: the node of that name if one registered meanwhile.
    const nodeId = (await this.nodeNamed(token.nodeName))?.id ?? token.nodeId;
    const issued = await ca.issueNode(req.csrPem, nodeId, token.nodeName);
    // Used exactly once: the store re-runs this on a conflicting write, which then sees use_time.
    await this.deps.store.of(JOIN_TOKEN_KIND).update(id, (cur) => {
      refuseSpent(cur, this.deps.clock.now());
      cur.useTime = timestampFromMs(this.deps.clock.now());
      return cur;
    });
    return create(EnrollResponseSchema, { nodeId, nodeName: token.nodeName, certificatePem: issued.certPem, caCertificatePem: ca.certPem, expireTime: timestampFromMs(issued.notAfter.getTime()) });
  }

  private requireCa(): ClusterCa {
    if (!this.deps.ca) {
      throw new QuantixError(
        "failed_precondition",
        "agent enrollment needs the cluster CA and TLS: start the control plane with QUANTIX_TLS_CERT, QUANTIX_TLS_KEY, QUANTIX_CA_CERT and QUANTIX_CA_KEY (docs/api/tls-and-enrollment.md)",
      );
    }
    return this.deps.ca;
  }

  private async nodeNamed(hostname: string) {
    return (await this.deps.store.of(NODE_KIND).list({ where: { hostname }, order: { field: "hostname", desc: false }, limit: 1 })).items[0];
  }
}

/** A used or expired token is refused, saying which (only a holder of the secret learns it). */
function refuseSpent(t: JoinToken, nowMs: number): void {
  if (t.useTime) throw new QuantixError("unauthenticated", `the join token was already used (at ${timestampDate(t.useTime).toISOString()}): a join token enrolls one agent once; create a new one with CreateJoinToken`);
  if (!t.expireTime || timestampMs(t.expireTime) <= nowMs) throw new QuantixError("unauthenticated", `the join token expired at ${t.expireTime ? timestampDate(t.expireTime).toISOString() : "creation"}; create a new one with CreateJoinToken`);
}

/** A token as the API shows it: without the hash of its secret. */
function shown(t: JoinToken): JoinToken {
  return { ...t, secretSha256: new Uint8Array() };
}

function sha256(text: string): Uint8Array {
  return createHash("sha256").update(text).digest();
}
