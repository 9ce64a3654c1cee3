import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { CredentialSchema } from "@quantix/api/gen/Quantixkvm/identity/v1/credential_pb.js";
import { UserSchema } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_pb.js";
import { ProjectSchema } from "@quantix/api/gen/Quantixkvm/identity/v1/project_pb.js";
import { CREDENTIAL_KIND, DEFAULT_PROJECT_ID, PROJECT_KIND, QuantixError, SIGNING_KEY_KIND, USER_KIND, type Clock, type IdGenerator, type Store } from "@quantix/core";
import type { Logger } from "@quantix/rpc";
import { newSigningKey } from "./access-tokens.js";
import { hashPassword, passwordViolations } from "./passwords.js";
import { kindOf } from "./user-service.js";

/** The first administrator's username. */
export const BOOTSTRAP_ADMIN = "admin";

/** What the first start needs. */
export interface BootstrapDeps {
  readonly store: Store;
  readonly ids: IdGenerator;
  readonly clock: Clock;
  readonly log: Logger;
  /** QUANTIX_ADMIN_PASSWORD: the admin's password; without it one is generated and announced once. */
  readonly adminPassword?: string | undefined;
  /** Where the generated password is shown, once (stdout): never the log. */
  readonly announce: (text: string) => void;
}

/**
 * The identity of a new cluster, made once in its life (the store has no signing key yet),
 * in one transaction: the first signing key, the system admin `admin`, and the project
 * "default" (DEFAULT_PROJECT_ID: the project of VMs created without one, and of the demo
 * VMs). Replicas starting together race on the same unique keys: one wins, the others
 * find it done. Resolves to whether this process made it.
 */
export async function bootstrapIdentity(d: BootstrapDeps): Promise<boolean> {
  const keys = await d.store.of(SIGNING_KEY_KIND).list({ order: { field: "created_at", desc: false }, limit: 1, countTotal: false });
  if (keys.items.length > 0) return false;
  const given = d.adminPassword !== undefined && d.adminPassword !== "";
  if (given && passwordViolations("QUANTIX_ADMIN_PASSWORD", d.adminPassword!).length > 0) {
    throw new QuantixError("invalid_argument", "QUANTIX_ADMIN_PASSWORD must be 12-1024 characters long");
  }
  const password = given ? d.adminPassword! : randomBytes(18).toString("base64url");
  const now = timestampFromMs(d.clock.now());
  const { key, credential } = await newSigningKey(d.ids, d.clock);
  const admin = create(UserSchema, { id: d.ids.newId(), username: BOOTSTRAP_ADMIN, displayName: "Administrator", systemAdmin: true, createdAt: now, updatedAt: now, passwordChangedAt: now, createdBy: "bootstrap" });
  const adminCred = create(CredentialSchema, { id: admin.id, ownerType: "user", secretHash: await hashPassword(password), updatedAt: now });
  const project = await d.store.of(PROJECT_KIND).get(DEFAULT_PROJECT_ID);
  try {
    await d.store.commit([
      { op: "create", kind: kindOf(SIGNING_KEY_KIND), object: key },
      { op: "create", kind: kindOf(CREDENTIAL_KIND), object: credential },
      { op: "create", kind: kindOf(USER_KIND), object: admin },
      { op: "create", kind: kindOf(CREDENTIAL_KIND), object: adminCred },
      ...(project ? [] : [{ op: "create" as const, kind: kindOf(PROJECT_KIND), object: create(ProjectSchema, { id: DEFAULT_PROJECT_ID, name: "default", description: "The project of VMs created without one", createdAt: now, updatedAt: now }) }]),
    ]);
  } catch (err) {
    if (err instanceof QuantixError && err.code === "already_exists") return false;
    throw err;
  }
  d.log.log("info", "identity bootstrapped: the first signing key, the system admin 'admin' and the project 'default'", { adminPassword: given ? "from QUANTIX_ADMIN_PASSWORD" : "generated, printed once to stdout" });
  if (!given) {
    d.announce(
      `\nQuantix: the first system admin is '${BOOTSTRAP_ADMIN}' with the password\n\n    ${password}\n\n` +
        "This is shown once, now. Log in with IdentityService/Login and change it with IdentityService/SetPassword.\n\n",
    );
  }
  return true;
}
