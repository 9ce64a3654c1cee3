import { MigrationSchema, MigrationStatus_Phase as Phase, type Migration } from "@quantix/api/gen/Quantixkvm/compute/v1/migration_pb.js";
import { defineKind, intField, textField, timeField } from "../resource/kind.js";

/** Whether a migration has reached a final phase (succeeded, failed or cancelled). */
export function migrationFinished(m: Migration): boolean {
  const p = m.status?.phase ?? Phase.UNSPECIFIED;
  return p === Phase.SUCCEEDED || p === Phase.FAILED || p === Phase.CANCELLED;
}

/**
 * Live migrations (Quantixkvm.compute.v1.Migration). The unique key allows one unfinished
 * migration per VM: two MigrateVM calls racing on any replicas cannot both create one.
 */
export const MIGRATION_KIND = defineKind(MigrationSchema, {
  name: "migration",
  table: "quantix_migrations",
  fields: {
    project_id: textField((m) => m.projectId, { column: "project_id", filter: "eq" }),
    vm_id: textField((m) => m.vmId, { column: "vm_id", filter: "eq" }),
    phase: intField((m) => m.status?.phase ?? 0, { column: "phase", filter: "in" }),
    created_at: timeField((m) => m.createdAt, { column: "created_ms", order: true }),
  },
  orderBy: ["created_at"],
  unique: {
    key: (m) => (migrationFinished(m) ? `done/${m.id}` : `active/${m.vmId}`),
    describe: (m) => `VM '${m.vmId}' is already being migrated; wait for that migration to end, or cancel it (CancelMigration)`,
  },
  projectScoped: true,
});
