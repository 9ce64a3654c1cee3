import type { ApiToken } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_pb.js";
import { PrincipalType } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_pb.js";
import { API_TOKEN_KIND, CREDENTIAL_KIND, timeValue, type Clock, type Principal, type ProjectRole, type Scope, type Store } from "@quantix/core";
import { unauthenticated, type AccessTokens } from "./access-tokens.js";
import { parseTokenString, secretMatches } from "./api-token-secret.js";
import type { IdentityIndex } from "./identity-index.js";
import { minRole, roleOf } from "./roles.js";

/** What a verified token rests on: re-read from the index whenever it changes, without verifying again. */
type Basis = { readonly kind: "jwt"; readonly userId: string; readonly issuedAtSec: number } | { readonly kind: "api"; readonly tokenId: string };

interface Entry {
  readonly basis: Basis;
  readonly expiresAtMs: number;
  principal: Principal;
  generation: number;
}

/** Verified tokens kept by default (each a few hundred bytes). */
const MAX_ENTRIES = 10_000;

/**
 * Turns a bearer token into a Principal: an access token (JWT, verified against the
 * cluster's signing keys) or an API token (`qtx_<id>_<secret>`, its secret checked against
 * its digest). Verified tokens are remembered by their exact string until they expire,
 * in a bounded map, so a call with a known token costs a map lookup; the principal is
 * rebuilt from the identity index when anything in it changed (a revocation, a new role).
 */
export class Authenticator {
  private readonly cache = new Map<string, Entry>();

  constructor(
    private readonly deps: { index: IdentityIndex; access: AccessTokens; store: Store; clock: Clock; maxEntries?: number },
  ) {}

  /** The principal of a token already verified and still valid, or undefined (then call authenticate). */
  cached(token: string): Principal | undefined {
    const e = this.cache.get(token);
    if (!e) return undefined;
    if (e.expiresAtMs <= this.deps.clock.now()) {
      this.cache.delete(token);
      return undefined;
    }
    if (e.generation === this.deps.index.generation) return e.principal;
    try {
      e.principal = this.principalOf(e.basis);
      e.generation = this.deps.index.generation;
      return e.principal;
    } catch {
      this.cache.delete(token);
      return undefined;
    }
  }

  /** Verifies a token: its principal, or UNAUTHENTICATED saying why (never echoing the token). */
  async authenticate(token: string): Promise<Principal> {
    const cached = this.cached(token);
    if (cached) return cached;
    const generation = this.deps.index.generation;
    let basis: Basis;
    let expiresAtMs: number;
    const api = parseTokenString(token);
    if (api) {
      const cred = await this.deps.store.of(CREDENTIAL_KIND).get(api.id);
      if (!cred || cred.ownerType !== "api-token" || !secretMatches(api.secret, cred.secretHash)) throw unauthenticated("the API token is not valid");
      basis = { kind: "api", tokenId: api.id };
      // A token made a moment ago (maybe on another replica) may not be in the index yet.
      const fresh = this.deps.index.tokens.get(api.id) ?? (await this.deps.store.of(API_TOKEN_KIND).get(api.id));
      expiresAtMs = this.validToken(api.id, fresh).expiry;
      const principal = this.principalOf(basis, fresh);
      this.remember(token, { basis, expiresAtMs, principal, generation });
      return principal;
    } else {
      const claims = await this.deps.access.verify(token);
      basis = { kind: "jwt", userId: claims.userId, issuedAtSec: claims.issuedAtSec };
      expiresAtMs = claims.expiresAtMs;
    }
    const principal = this.principalOf(basis);
    this.remember(token, { basis, expiresAtMs, principal, generation });
    return principal;
  }

  private remember(token: string, e: Entry): void {
    if (this.cache.size >= (this.deps.maxEntries ?? MAX_ENTRIES)) this.cache.delete(this.cache.keys().next().value!);
    this.cache.set(token, e);
  }

  /** Forgets every verified token (a signing key rotation does not need it: old tokens stay valid). */
  clear(): void {
    this.cache.clear();
  }

  private principalOf(b: Basis, fresh?: ApiToken): Principal {
    const { index } = this.deps;
    if (b.kind === "jwt") {
      const u = index.users.get(b.userId);
      if (!u) throw unauthenticated("the access token's user no longer exists");
      // A password change ends the sessions before it (as Keystone revokes a user's tokens).
      if (b.issuedAtSec < Math.floor(timeValue(u.passwordChangedAt) / 1000)) throw unauthenticated("the user's password changed after this access token was issued; log in again");
      return { kind: "user", id: u.id, name: u.username, systemAdmin: u.systemAdmin, projects: this.rolesOf(u.id) };
    }
    const { token } = this.validToken(b.tokenId, fresh);
    const owner = token.ownerType === PrincipalType.SERVICE_ACCOUNT ? index.serviceAccounts.get(token.ownerId) : index.users.get(token.ownerId);
    if (!owner) throw unauthenticated("the API token's owner no longer exists");
    const name = "username" in owner ? owner.username : owner.name;
    // A token never does more than its owner may now: its role is capped by the owner's.
    const projects = new Map<string, ProjectRole>();
    const want = roleOf(token.role);
    if (token.projectId && want) {
      const ownerRole: ProjectRole | undefined = owner.systemAdmin ? "admin" : this.rolesOf(owner.id).get(token.projectId);
      if (ownerRole) projects.set(token.projectId, minRole(want, ownerRole));
    }
    const p: Principal = {
      kind: token.ownerType === PrincipalType.SERVICE_ACCOUNT ? "service-account" : "user",
      id: owner.id,
      name,
      systemAdmin: token.systemAdmin && owner.systemAdmin,
      projects,
      tokenId: token.id,
      ...(token.scopes.length > 0 ? { scopes: token.scopes as Scope[] } : {}),
    };
    return p;
  }

  private validToken(id: string, fresh?: ApiToken): { token: ApiToken; expiry: number } {
    const token = this.deps.index.tokens.get(id) ?? fresh;
    if (!token) throw unauthenticated("the API token is not valid");
    if (token.revokedAt) throw unauthenticated(`the API token '${token.name}' was revoked`);
    const expiry = timeValue(token.expiresAt);
    if (expiry <= this.deps.clock.now()) throw unauthenticated(`the API token '${token.name}' has expired`);
    return { token, expiry };
  }

  private rolesOf(principalId: string): Map<string, ProjectRole> {
    const out = new Map<string, ProjectRole>();
    for (const [project, b] of this.deps.index.bindings.get(principalId) ?? []) {
      const r = roleOf(b.role);
      if (r) out.set(project, r);
    }
    return out;
  }
}
