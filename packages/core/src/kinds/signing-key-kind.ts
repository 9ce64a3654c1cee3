import { SigningKeySchema } from "@quantix/api/gen/Quantixkvm/identity/v1/identity_pb.js";
import { defineKind, textField, timeField } from "../resource/kind.js";

/** Keys that sign access tokens (Quantixkvm.identity.v1.SigningKey, public halves); private halves are Credentials. */
export const SIGNING_KEY_KIND = defineKind(SigningKeySchema, {
  name: "signing key",
  table: "quantix_signing_keys",
  fields: {
    algorithm: textField((k) => k.algorithm, { column: "algorithm", filter: "eq" }),
    created_at: timeField((k) => k.createdAt, { column: "created_ms", order: true }),
  },
  orderBy: ["created_at"],
  projectScoped: false,
});
