import { SnapshotSchema } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_pb.js";
import { defineKind, intField, textField, timeField } from "../resource/kind.js";

/** Snapshots (Quantixkvm.storage.v1.Snapshot) of a volume or a whole VM. The service is not built yet. */
export const SNAPSHOT_KIND = defineKind(SnapshotSchema, {
  name: "snapshot",
  table: "quantix_snapshots",
  fields: {
    project_id: textField((s) => s.projectId, { column: "project_id", filter: "eq" }),
    name: textField((s) => s.name, { column: "name", filter: "eq", order: true }),
    state: intField((s) => s.status?.state ?? 0, { column: "state", filter: "in" }),
    volume_id: textField((s) => (s.spec?.target.case === "volumeId" ? s.spec.target.value : ""), { column: "volume_id", filter: "eq" }),
    vm_id: textField((s) => (s.spec?.target.case === "vmId" ? s.spec.target.value : ""), { column: "vm_id", filter: "eq" }),
    created_at: timeField((s) => s.createdAt, { column: "created_ms", order: true }),
  },
  orderBy: ["name", "created_at"],
  labels: (s) => s.labels,
  // Unique among the snapshots of one volume or VM (the contract's rule).
  unique: {
    key: (s) => `${s.spec?.target.case ?? ""}/${s.spec?.target.value ?? ""}/${s.name}`,
    describe: (s) => `a snapshot named '${s.name}' already exists for ${s.spec?.target.case === "vmId" ? "VM" : "volume"} '${s.spec?.target.value ?? ""}'`,
  },
  projectScoped: true,
});
