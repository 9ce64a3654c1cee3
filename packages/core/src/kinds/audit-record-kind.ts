import { AuditRecordSchema } from "@quantix/api/gen/Quantixkvm/audit/v1/audit_pb.js";
import { defineKind, textField, timeField } from "../resource/kind.js";

/** The audit trail (Quantixkvm.audit.v1.AuditRecord): one record per mutating call, written by the control plane, kept for a bounded time. */
export const AUDIT_RECORD_KIND = defineKind(AuditRecordSchema, {
  name: "audit record",
  table: "quantix_audit_records",
  fields: {
    principal_id: textField((r) => r.principal?.id ?? "", { column: "principal_id", filter: "eq" }),
    principal_kind: textField((r) => r.principal?.kind ?? "", { column: "principal_kind", filter: "eq" }),
    procedure: textField((r) => r.procedure, { column: "procedure", filter: "eq" }),
    project_id: textField((r) => r.projectId, { column: "project_id", filter: "eq" }),
    code: textField((r) => r.code, { column: "code", filter: "in" }),
    time: timeField((r) => r.time, { column: "time_ms", order: true }),
  },
  orderBy: ["time"],
  projectScoped: true,
});
