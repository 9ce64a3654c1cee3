import { CredentialSchema } from "@quantix/api/gen/Quantixkvm/identity/v1/credential_pb.js";
import { defineKind, textField, timeField } from "../resource/kind.js";

/**
 * The secret halves of users (password hashes), API tokens (secret hashes) and signing
 * keys (private JWKs), by their owner's id (Quantixkvm.identity.v1.Credential): kept
 * apart so that no RPC serving those kinds can return a secret. No route serves this kind.
 */
export const CREDENTIAL_KIND = defineKind(CredentialSchema, {
  name: "credential",
  table: "quantix_credentials",
  fields: {
    owner_type: textField((c) => c.ownerType, { column: "owner_type", filter: "eq" }),
    updated_at: timeField((c) => c.updatedAt, { column: "updated_ms", order: true }),
  },
  orderBy: ["updated_at"],
  projectScoped: false,
});
