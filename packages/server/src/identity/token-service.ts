import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { CredentialSchema } from "@quantix/api/gen/Quantixkvm/identity/v1/credential_pb.js";
import { ApiTokenSchema, PrincipalType, Role, type ApiToken, type SigningKey } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_pb.js";
import type { CreateTokenRequest } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_service_pb.js";
import {
  API_TOKEN_KIND,
  checkId,
  CREDENTIAL_KIND,
  notFound,
  PROJECT_ID_FORMAT,
  PROJECT_KIND,
  QuantixError,
  SERVICE_ACCOUNT_KIND,
  SIGNING_KEY_KIND,
  throwIfViolations,
  timeValue,
  USER_KIND,
  Violations,
  type Clock,
  type IdGenerator,
  type Principal,
  type ProjectRole,
  type Store,
} from "@quantix/core";
import { newSigningKey } from "./access-tokens.js";
import { newTokenSecret } from "./api-token-secret.js";
import type { IdentityIndex } from "./identity-index.js";
import { checkTokenName } from "./identity-rules.js";
import { roleIncludes, roleOf } from "./roles.js";
import { kindOf } from "./user-service.js";

const SCOPES = ["dom.read", "dom.write"];
const DEFAULT_TTL_SEC = 90 * 86_400;
const MAX_TTL_SEC = 365 * 86_400;

/** What the token service needs. */
export interface TokenServiceDeps {
  readonly store: Store;
  readonly index: IdentityIndex;
  readonly clock: Clock;
  readonly ids: IdGenerator;
  /** The lifetime of access tokens: retired signing keys are kept this long. */
  readonly accessTokenTtlSec: number;
}

/** API tokens (made, listed, revoked) and the rotation of signing keys. */
export class TokenService {
  constructor(private readonly d: TokenServiceDeps) {}

  /** CreateToken: the token and its secret, shown this once. */
  async create(req: CreateTokenRequest, by: Principal): Promise<{ token: ApiToken; secret: string }> {
    if (by.tokenId) throw new QuantixError("permission_denied", "an API token cannot make tokens: log in (IdentityService/Login) to make one");
    const v = new Violations();
    checkTokenName(v, "name", req.name);
    if (req.ttlSec !== 0n && (req.ttlSec < 60n || req.ttlSec > BigInt(MAX_TTL_SEC))) v.add("ttl_sec", "OUT_OF_RANGE", `must be between 60 and ${MAX_TTL_SEC} (0 means ${DEFAULT_TTL_SEC})`);
    req.scopes.forEach((s, i) => {
      if (!SCOPES.includes(s)) v.add(`scopes[${i}]`, "INVALID_ENUM", `must be one of ${SCOPES.join(", ")}`);
    });
    if (req.systemAdmin) {
      if (req.projectId !== "") v.add("project_id", "INVALID_ARGUMENT", "a system admin token acts in every project: leave project_id empty");
      if (req.role !== Role.UNSPECIFIED) v.add("role", "INVALID_ARGUMENT", "a system admin token has no project role: leave role unset");
    } else {
      checkId(v, "project_id", req.projectId, PROJECT_ID_FORMAT);
      if (!roleOf(req.role)) v.add("role", "REQUIRED", "must be ROLE_READER, ROLE_MEMBER or ROLE_ADMIN");
    }
    throwIfViolations(v.list);
    const owner = await this.ownerOf(req, by);
    if (req.systemAdmin) {
      if (!owner.systemAdmin) throw new QuantixError("permission_denied", "only a system admin's token may be a system admin token");
    } else {
      if (!(await this.d.store.of(PROJECT_KIND).get(req.projectId))) throw notFound("project", req.projectId);
      const want = roleOf(req.role)!;
      const has: ProjectRole | undefined = owner.systemAdmin ? "admin" : owner.roles.get(req.projectId);
      if (!roleIncludes(has, want)) throw new QuantixError("permission_denied", `requires role ${want} in project ${req.projectId} to make a token with it${has ? ` (the owner is ${has})` : ""}`);
    }
    const now = this.d.clock.now();
    const id = this.d.ids.newId();
    const { token: secret, digest } = newTokenSecret(id);
    const token = create(ApiTokenSchema, {
      id,
      name: req.name,
      ownerType: owner.type,
      ownerId: owner.id,
      projectId: req.projectId,
      role: req.systemAdmin ? Role.UNSPECIFIED : req.role,
      systemAdmin: req.systemAdmin,
      scopes: [...new Set(req.scopes)],
      expiresAt: timestampFromMs(now + Number(req.ttlSec === 0n ? BigInt(DEFAULT_TTL_SEC) : req.ttlSec) * 1000),
      createdAt: timestampFromMs(now),
      createdBy: by.id,
    });
    const [stored] = await this.d.store.commit([
      { op: "create", kind: kindOf(API_TOKEN_KIND), object: token },
      { op: "create", kind: kindOf(CREDENTIAL_KIND), object: create(CredentialSchema, { id, ownerType: "api-token", secretHash: digest, updatedAt: timestampFromMs(now) }) },
    ]);
    await this.d.index.caughtUp(kindOf(API_TOKEN_KIND), stored!.resourceVersion);
    return { token: stored as ApiToken, secret };
  }

  /** RevokeToken: by its owner or a system admin (others get NOT_FOUND). Idempotent. */
  async revoke(id: string, by: Principal): Promise<ApiToken> {
    const t = await this.d.store.of(API_TOKEN_KIND).get(id);
    if (!t || (!by.systemAdmin && t.ownerId !== by.id)) throw notFound("token", id);
    const out = await this.d.store.of(API_TOKEN_KIND).update(id, (cur) => (cur.revokedAt ? undefined : { ...cur, revokedAt: timestampFromMs(this.d.clock.now()) }), { actor: "api" });
    await this.d.index.caughtUp(kindOf(API_TOKEN_KIND), out.resourceVersion);
    return out;
  }

  /** The owner ListTokens may show: the caller, unless a system admin names another. */
  listOwner(ownerId: string, by: Principal): string {
    if (by.systemAdmin) return ownerId;
    if (ownerId !== "" && ownerId !== by.id) throw new QuantixError("permission_denied", "only a system admin may list another principal's tokens");
    return by.id;
  }

  /**
   * RotateSigningKey: a new key signs from now on; the others are retired (they verify
   * the tokens they signed until those expire) and keys retired longer ago than a token
   * lives are deleted.
   */
  async rotate(): Promise<SigningKey> {
    const { key, credential } = await newSigningKey(this.d.ids, this.d.clock);
    const now = this.d.clock.now();
    const { written } = await this.d.store.transact(async (tx) => {
      const keys = await this.d.store.of(SIGNING_KEY_KIND).list({ order: { field: "created_at", desc: false }, limit: 10_000, countTotal: false });
      for (const k of keys.items) {
        const current = await tx.get(SIGNING_KEY_KIND, k.id);
        if (!current) continue;
        if (!current.retiredAt) tx.update(SIGNING_KEY_KIND, { ...current, retiredAt: timestampFromMs(now) });
        else if (timeValue(current.retiredAt) + this.d.accessTokenTtlSec * 1000 < now) {
          tx.delete(SIGNING_KEY_KIND, current);
          const c = await tx.get(CREDENTIAL_KIND, k.id);
          if (c) tx.delete(CREDENTIAL_KIND, c);
        }
      }
      tx.create(SIGNING_KEY_KIND, key);
      tx.create(CREDENTIAL_KIND, credential);
    });
    const stored = written.find((w) => w.id === key.id) as SigningKey;
    await this.d.index.caughtUp(kindOf(SIGNING_KEY_KIND), stored.resourceVersion);
    return stored;
  }

  private async ownerOf(req: CreateTokenRequest, by: Principal): Promise<{ type: PrincipalType; id: string; systemAdmin: boolean; roles: ReadonlyMap<string, ProjectRole> }> {
    if (req.serviceAccountId !== "") {
      if (!by.systemAdmin) throw new QuantixError("permission_denied", "only a system admin may make tokens for a service account");
      const sa = await this.d.store.of(SERVICE_ACCOUNT_KIND).get(req.serviceAccountId);
      if (!sa) throw notFound("service account", req.serviceAccountId);
      const roles = new Map<string, ProjectRole>();
      for (const [project, b] of this.d.index.bindings.get(sa.id) ?? []) {
        const r = roleOf(b.role);
        if (r) roles.set(project, r);
      }
      return { type: PrincipalType.SERVICE_ACCOUNT, id: sa.id, systemAdmin: sa.systemAdmin, roles };
    }
    if (by.kind !== "user") throw new QuantixError("failed_precondition", `a ${by.kind} caller has no tokens of its own: name a service account (service_account_id), or log in as a user`);
    const user = await this.d.store.of(USER_KIND).get(by.id);
    if (!user) throw notFound("user", by.id);
    return { type: PrincipalType.USER, id: user.id, systemAdmin: user.systemAdmin, roles: by.projects };
  }
}
