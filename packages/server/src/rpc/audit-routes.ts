import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { AuditService } from "@quantix/api/gen/Quantixkvm/audit/v1/audit_service_pb.js";
import { AUDIT_RECORD_KIND, type Resource, type Store } from "@quantix/core";
import type { Route } from "@quantix/rpc";
import type { Retained } from "../events/retention.js";
import { resourceRoute } from "../resources/index.js";

/**
 * Quantixkvm.audit.v1.AuditService: ListAuditRecords (filters by principal, procedure,
 * project, codes and a time range; keyset pages) and WatchAuditRecords (resumes from a
 * resource version), the generic reads of the audit record kind. Nothing writes records
 * but the audit interceptor.
 */
export function auditServiceRoute(store: Store): Route {
  return resourceRoute(AuditService, AUDIT_RECORD_KIND as never, store);
}

/** Audit records are kept QUANTIX_AUDIT_RETENTION_SEC (EventRetention with these). */
export const AUDIT_RETAINED: Retained<Resource> = {
  kind: AUDIT_RECORD_KIND as never,
  field: "time",
  time: (r) => (r as unknown as { time?: Timestamp }).time,
  actor: "audit-retention",
  what: "audit records",
};
