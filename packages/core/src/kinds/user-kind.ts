import { UserSchema } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_pb.js";
import { defineKind, textField, timeField } from "../resource/kind.js";

/** Users (Quantixkvm.identity.v1.User); their password hashes are Credentials. */
export const USER_KIND = defineKind(UserSchema, {
  name: "user",
  table: "quantix_users",
  fields: {
    username: textField((u) => u.username, { column: "username", filter: "eq", order: true }),
    created_by: textField((u) => u.createdBy, { column: "created_by", filter: "eq" }),
    created_at: timeField((u) => u.createdAt, { column: "created_ms", order: true }),
  },
  orderBy: ["username", "created_at"],
  unique: { key: (u) => u.username, describe: (u) => `a user named '${u.username}' already exists` },
  projectScoped: false,
});
