import { QuotaSchema } from "@quantix/api/gen/Quantixkvm/quota/v1/quota_pb.js";
import { PROJECT_ID_FORMAT } from "../resource/id-format.js";
import { defineKind, textField, timeField } from "../resource/kind.js";

/**
 * Project quotas (Quantixkvm.quota.v1.Quota), one per project, its id the project's id:
 * limits set by administrators, `used` kept by the writes that create, resize and remove
 * a project's resources, in their transactions (the server's quota ledger).
 */
export const QUOTA_KIND = defineKind(QuotaSchema, {
  name: "quota",
  table: "quantix_quotas",
  fields: {
    project_id: textField((q) => q.projectId, { column: "project_id", filter: "eq" }),
    created_at: timeField((q) => q.createdAt, { column: "created_ms", order: true }),
  },
  orderBy: ["created_at"],
  projectScoped: true,
  idFormat: PROJECT_ID_FORMAT,
});
