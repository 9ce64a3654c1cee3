import { JoinTokenSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/enrollment_service_pb.js";
import { defineKind, textField, timeField } from "../resource/kind.js";

/**
 * One-time join tokens of agent enrollment (Quantixkvm.compute.v1.JoinToken, issue 12):
 * kept by id with the SHA-256 of their secret, never the secret; Enroll marks one used in
 * the same write that checks it is unused.
 */
export const JOIN_TOKEN_KIND = defineKind(JoinTokenSchema, {
  name: "join token",
  table: "quantix_join_tokens",
  fields: {
    node_name: textField((t) => t.nodeName, { column: "node_name", filter: "eq" }),
    create_time: timeField((t) => t.createTime, { column: "created_ms", order: true }),
  },
  orderBy: ["create_time"],
  projectScoped: false,
});
