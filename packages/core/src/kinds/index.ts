export * from "./vm-kind.js";
export * from "./node-kind.js";
export * from "./event-kind.js";
export * from "./migration-kind.js";
export * from "./node-tombstone-kind.js";
export * from "./join-token-kind.js";

import type { Kind, Resource } from "../resource/kind.js";
import { EVENT_KIND } from "./event-kind.js";
import { MIGRATION_KIND } from "./migration-kind.js";
import { NODE_KIND } from "./node-kind.js";
import { NODE_TOMBSTONE_KIND } from "./node-tombstone-kind.js";
import { JOIN_TOKEN_KIND } from "./join-token-kind.js";
import { VM_KIND } from "./vm-kind.js";

/** Every kind the control plane keeps: each store registers them all. */
export const ALL_KINDS: readonly Kind<Resource>[] = [VM_KIND, NODE_KIND, EVENT_KIND, MIGRATION_KIND, NODE_TOMBSTONE_KIND, JOIN_TOKEN_KIND] as unknown as Kind<Resource>[];
