import { ServiceAccountSchema } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_pb.js";
import { defineKind, textField, timeField } from "../resource/kind.js";

/** Service accounts (Quantixkvm.identity.v1.ServiceAccount): machine identities holding API tokens. */
export const SERVICE_ACCOUNT_KIND = defineKind(ServiceAccountSchema, {
  name: "service account",
  table: "quantix_service_accounts",
  fields: {
    name: textField((s) => s.name, { column: "name", filter: "eq", order: true }),
    created_by: textField((s) => s.createdBy, { column: "created_by", filter: "eq" }),
    created_at: timeField((s) => s.createdAt, { column: "created_ms", order: true }),
  },
  orderBy: ["name", "created_at"],
  unique: { key: (s) => s.name, describe: (s) => `a service account named '${s.name}' already exists` },
  projectScoped: false,
});
