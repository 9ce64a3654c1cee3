export * from "./vm-kind.js";
export * from "./node-kind.js";
export * from "./event-kind.js";
export * from "./migration-kind.js";
export * from "./node-tombstone-kind.js";
export * from "./project-kind.js";
export * from "./user-kind.js";
export * from "./service-account-kind.js";
export * from "./api-token-kind.js";
export * from "./role-binding-kind.js";
export * from "./signing-key-kind.js";
export * from "./credential-kind.js";
export * from "./quota-kind.js";
export * from "./audit-record-kind.js";
export * from "./join-token-kind.js";
export * from "./storage-pool-kind.js";
export * from "./volume-kind.js";

import type { Kind, Resource } from "../resource/kind.js";
import { EVENT_KIND } from "./event-kind.js";
import { MIGRATION_KIND } from "./migration-kind.js";
import { NODE_KIND } from "./node-kind.js";
import { NODE_TOMBSTONE_KIND } from "./node-tombstone-kind.js";
import { QUOTA_KIND } from "./quota-kind.js";
import { AUDIT_RECORD_KIND } from "./audit-record-kind.js";
import { JOIN_TOKEN_KIND } from "./join-token-kind.js";
import { VM_KIND } from "./vm-kind.js";
import { PROJECT_KIND } from "./project-kind.js";
import { USER_KIND } from "./user-kind.js";
import { SERVICE_ACCOUNT_KIND } from "./service-account-kind.js";
import { API_TOKEN_KIND } from "./api-token-kind.js";
import { ROLE_BINDING_KIND } from "./role-binding-kind.js";
import { SIGNING_KEY_KIND } from "./signing-key-kind.js";
import { CREDENTIAL_KIND } from "./credential-kind.js";
import { STORAGE_POOL_KIND } from "./storage-pool-kind.js";
import { VOLUME_KIND } from "./volume-kind.js";

/** Every kind the control plane keeps: each store registers them all. */
export const ALL_KINDS: readonly Kind<Resource>[] = [VM_KIND, NODE_KIND, EVENT_KIND, MIGRATION_KIND, NODE_TOMBSTONE_KIND, PROJECT_KIND, USER_KIND, SERVICE_ACCOUNT_KIND, API_TOKEN_KIND, ROLE_BINDING_KIND, SIGNING_KEY_KIND, CREDENTIAL_KIND, QUOTA_KIND, AUDIT_RECORD_KIND, JOIN_TOKEN_KIND, STORAGE_POOL_KIND, VOLUME_KIND] as unknown as Kind<Resource>[];
