import { SnapshotSchema, SnapshotState } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_pb.js";
import { defineKind, intField, textField, timeField } from "../resource/kind.js";

/** The finalizer every snapshot carries until the snapshot controller has removed it from its node. */
export const SNAPSHOT_FINALIZER = "quantix.io/snapshot";

/** The component that alone writes a snapshot's status after its create (STYLE rule 2). */
export const SNAPSHOT_CONTROLLER = "snapshot-controller";

/** status.progress_percent of a snapshot whose parent the controller has recorded and which its node is taking. */
export const SNAPSHOT_TAKING_PERCENT = 10;

/** Snapshots (Quantixkvm.storage.v1.Snapshot) of a volume or a whole VM. */
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
  orderBy: ["created_at", "name"],
  labels: (s) => s.labels,
  // Unique among the snapshots of one volume or VM (the contract's rule).
  unique: {
    key: (s) => `${s.spec?.target.case ?? ""}/${s.spec?.target.value ?? ""}/${s.name}`,
    describe: (s) => `a snapshot named '${s.name}' already exists for ${s.spec?.target.case === "vmId" ? "VM" : "volume"} '${s.spec?.target.value ?? ""}'`,
  },
  projectScoped: true,
  finalizers: [SNAPSHOT_FINALIZER],
  owned: [{ path: "status", value: (s) => s.status, owners: [SNAPSHOT_CONTROLLER] }],
  // A snapshot no node has started to take (CREATING, its parent not recorded yet:
  // progress below 10) exists nowhere: nothing to wait for.
  pendingFinalizers: (s) => {
    const state = s.status?.state ?? SnapshotState.UNSPECIFIED;
    const untouched = state === SnapshotState.UNSPECIFIED || (state === SnapshotState.CREATING && (s.status?.progressPercent ?? 0) < SNAPSHOT_TAKING_PERCENT);
    return untouched ? [] : [SNAPSHOT_FINALIZER];
  },
});
