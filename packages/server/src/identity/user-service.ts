import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { CredentialSchema } from "@quantix/api/gen/Quantixkvm/identity/v1/credential_pb.js";
import { ServiceAccountSchema, UserSchema, type ServiceAccount, type User } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_pb.js";
import type { CreateServiceAccountRequest, CreateUserRequest, LoginRequest, SetPasswordRequest } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_service_pb.js";
import {
  API_TOKEN_KIND,
  allOf,
  CREDENTIAL_KIND,
  notFound,
  QuantixError,
  ROLE_BINDING_KIND,
  SERVICE_ACCOUNT_KIND,
  throwIfViolations,
  USER_KIND,
  Violations,
  type Clock,
  type IdGenerator,
  type Kind,
  type Principal,
  type Resource,
  type Store,
  type TxOp,
} from "@quantix/core";
import { unauthenticated, type AccessTokens } from "./access-tokens.js";
import type { IdentityIndex } from "./identity-index.js";
import { checkLoginName, checkText } from "./identity-rules.js";
import type { LoginLimiter } from "./login-limiter.js";
import { hashPassword, passwordViolations, verifyPassword } from "./passwords.js";

/** What the user service needs. */
export interface UserServiceDeps {
  readonly store: Store;
  readonly index: IdentityIndex;
  readonly access: AccessTokens;
  readonly limiter: LoginLimiter;
  readonly clock: Clock;
  readonly ids: IdGenerator;
}

const WRONG = "wrong username or password";

/** Logins, users (with their password credentials) and service accounts. */
export class UserService {
  constructor(private readonly d: UserServiceDeps) {}

  /** Login: never says which of username or password was wrong; failures are rate-limited. */
  async login(req: LoginRequest, address: string): Promise<{ token: string; expiresAtMs: number; user: User }> {
    const v = new Violations();
    v.required("username", req.username !== "");
    v.required("password", req.password !== "");
    throwIfViolations(v.list);
    const username = req.username.slice(0, 256);
    this.d.limiter.check(username, address);
    const user = await this.byUsername(username);
    const cred = user ? await this.d.store.of(CREDENTIAL_KIND).get(user.id) : undefined;
    if (!(await verifyPassword(cred?.secretHash, req.password)) || !user) {
      this.d.limiter.failed(username, address);
      throw unauthenticated(WRONG);
    }
    const { token, expiresAtMs } = await this.d.access.issue(user);
    return { token, expiresAtMs, user };
  }

  async createUser(req: CreateUserRequest, by: Principal): Promise<User> {
    const v = new Violations();
    checkLoginName(v, "username", req.username);
    checkText(v, "display_name", req.displayName, 256);
    v.list.push(...passwordViolations("password", req.password));
    throwIfViolations(v.list);
    const now = timestampFromMs(this.d.clock.now());
    const user = create(UserSchema, { id: this.d.ids.newId(), username: req.username, displayName: req.displayName, systemAdmin: req.systemAdmin, createdAt: now, updatedAt: now, passwordChangedAt: now, createdBy: by.id });
    const cred = create(CredentialSchema, { id: user.id, ownerType: "user", secretHash: await hashPassword(req.password), updatedAt: now });
    const [stored] = await this.d.store.commit([
      { op: "create", kind: kindOf(USER_KIND), object: user },
      { op: "create", kind: kindOf(CREDENTIAL_KIND), object: cred },
    ]);
    return stored as User;
  }

  /** A user: the caller itself, or anyone for a system admin (others get NOT_FOUND, as for no user). */
  async getUser(id: string, by: Principal): Promise<User> {
    const u = by.systemAdmin || by.id === id ? await this.d.store.of(USER_KIND).get(id) : undefined;
    if (!u) throw notFound("user", id);
    return u;
  }

  async deleteUser(id: string, by: Principal): Promise<void> {
    if (id === by.id) throw new QuantixError("failed_precondition", "a user cannot delete itself; another system admin can");
    const u = await this.d.store.of(USER_KIND).get(id);
    if (!u) throw notFound("user", id);
    await this.d.store.commit([{ op: "delete", kind: kindOf(USER_KIND), object: u }, ...(await this.belongings(id))]);
  }

  /** SetPassword: one's own with the current password; another user's as a system admin. */
  async setPassword(req: SetPasswordRequest, by: Principal, address: string): Promise<void> {
    const target = req.userId || by.id;
    const self = target === by.id;
    if (!self && !by.systemAdmin) throw new QuantixError("permission_denied", "only a system admin may set another user's password");
    if (self && by.kind !== "user") throw new QuantixError("failed_precondition", "only users have passwords: name the user in user_id");
    throwIfViolations(passwordViolations("new_password", req.newPassword));
    const user = await this.d.store.of(USER_KIND).get(target);
    if (!user) throw notFound("user", target);
    if (self) {
      this.d.limiter.check(user.username, address);
      const cred = await this.d.store.of(CREDENTIAL_KIND).get(user.id);
      if (!(await verifyPassword(cred?.secretHash, req.oldPassword))) {
        this.d.limiter.failed(user.username, address);
        throw unauthenticated("the current password (old_password) is wrong");
      }
    }
    const now = timestampFromMs(this.d.clock.now());
    const cred = create(CredentialSchema, { id: user.id, ownerType: "user", secretHash: await hashPassword(req.newPassword), updatedAt: now });
    const old = await this.d.store.of(CREDENTIAL_KIND).get(user.id);
    await this.d.store.commit([
      { op: "update", kind: kindOf(USER_KIND), object: { ...user, passwordChangedAt: now, updatedAt: now } as User },
      old ? { op: "update", kind: kindOf(CREDENTIAL_KIND), object: { ...cred, resourceVersion: old.resourceVersion } } : { op: "create", kind: kindOf(CREDENTIAL_KIND), object: cred },
    ]);
  }

  async createServiceAccount(req: CreateServiceAccountRequest, by: Principal): Promise<ServiceAccount> {
    const v = new Violations();
    checkLoginName(v, "name", req.name);
    checkText(v, "description", req.description, 1024);
    throwIfViolations(v.list);
    const sa = create(ServiceAccountSchema, { id: this.d.ids.newId(), name: req.name, description: req.description, systemAdmin: req.systemAdmin, createdAt: timestampFromMs(this.d.clock.now()), createdBy: by.id });
    return this.d.store.of(SERVICE_ACCOUNT_KIND).create(sa, { actor: "api" });
  }

  async deleteServiceAccount(id: string): Promise<void> {
    const sa = await this.d.store.of(SERVICE_ACCOUNT_KIND).get(id);
    if (!sa) throw notFound("service account", id);
    await this.d.store.commit([{ op: "delete", kind: kindOf(SERVICE_ACCOUNT_KIND), object: sa }, ...(await this.belongings(id))]);
  }

  /** The deletes of what a principal holds: its credential, role bindings, tokens and their credentials. */
  private async belongings(principalId: string): Promise<TxOp[]> {
    const ops: TxOp[] = [];
    const cred = await this.d.store.of(CREDENTIAL_KIND).get(principalId);
    if (cred) ops.push({ op: "delete", kind: kindOf(CREDENTIAL_KIND), object: cred });
    for await (const b of allOf(this.d.store.of(ROLE_BINDING_KIND), { where: { principal_id: principalId } })) ops.push({ op: "delete", kind: kindOf(ROLE_BINDING_KIND), object: b });
    for await (const t of allOf(this.d.store.of(API_TOKEN_KIND), { where: { owner_id: principalId } })) {
      ops.push({ op: "delete", kind: kindOf(API_TOKEN_KIND), object: t });
      const c = await this.d.store.of(CREDENTIAL_KIND).get(t.id);
      if (c) ops.push({ op: "delete", kind: kindOf(CREDENTIAL_KIND), object: c });
    }
    return ops;
  }

  private async byUsername(username: string): Promise<User | undefined> {
    const page = await this.d.store.of(USER_KIND).list({ where: { username }, order: { field: "username", desc: false }, limit: 1, countTotal: false });
    return page.items[0];
  }
}

/** A kind as transactions take it. */
export function kindOf<T extends Resource>(k: Kind<T>): Kind<Resource> {
  return k as unknown as Kind<Resource>;
}
