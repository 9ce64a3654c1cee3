import { RoleBindingSchema } from "@quantix/api/gen/Quantixkvm/identity/v1/project_pb.js";
import { defineKind, textField, timeField } from "../resource/kind.js";

/** Role bindings (Quantixkvm.identity.v1.RoleBinding): one principal's role in one project. */
export const ROLE_BINDING_KIND = defineKind(RoleBindingSchema, {
  name: "role binding",
  table: "quantix_role_bindings",
  fields: {
    project_id: textField((b) => b.projectId, { column: "project_id", filter: "eq" }),
    principal_id: textField((b) => b.principalId, { column: "principal_id", filter: "eq" }),
    created_at: timeField((b) => b.createdAt, { column: "created_ms", order: true }),
  },
  orderBy: ["created_at"],
  unique: { key: (b) => `${b.projectId}/${b.principalId}`, describe: (b) => `'${b.principalId}' already has a role in project '${b.projectId}'` },
  projectScoped: true,
});
