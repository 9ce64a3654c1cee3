import { ApiTokenSchema } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_pb.js";
import { defineKind, textField, timeField } from "../resource/kind.js";

/** API tokens (Quantixkvm.identity.v1.ApiToken); their secrets' hashes are Credentials. */
export const API_TOKEN_KIND = defineKind(ApiTokenSchema, {
  name: "token",
  table: "quantix_api_tokens",
  fields: {
    owner_id: textField((t) => t.ownerId, { column: "owner_id", filter: "eq" }),
    project_id: textField((t) => t.projectId, { column: "project_id", filter: "eq" }),
    name: textField((t) => t.name, { column: "name", order: true }),
    created_at: timeField((t) => t.createdAt, { column: "created_ms", order: true }),
  },
  orderBy: ["created_at", "name"],
  unique: { key: (t) => `${t.ownerId}/${t.name}`, describe: (t) => `a token named '${t.name}' already exists for this owner` },
  // A system admin token acts in no project; a token is its owner's, not its project's.
  projectScoped: false,
});
