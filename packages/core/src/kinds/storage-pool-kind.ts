import { StoragePoolSchema } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { defineKind, intField, textField, timeField } from "../resource/kind.js";

/** The component that alone writes a pool's status after its create (STYLE rule 2). */
export const STORAGE_POOL_CONTROLLER = "storage-pool-controller";

/** The finalizer every pool carries until the pool controller has removed it from its nodes. */
export const POOL_FINALIZER = "quantix.io/pool";

/** Storage pools (Quantixkvm.storage.v1.StoragePool): cluster-wide, managed by operators. */
export const STORAGE_POOL_KIND = defineKind(StoragePoolSchema, {
  name: "storage pool",
  table: "quantix_storage_pools",
  fields: {
    name: textField((p) => p.name, { column: "name", filter: "eq", order: true }),
    type: intField((p) => p.spec?.type ?? 0, { column: "type", filter: "in" }),
    state: intField((p) => p.status?.state ?? 0, { column: "state", filter: "in" }),
    created_at: timeField((p) => p.createdAt, { column: "created_ms", order: true }),
  },
  orderBy: ["name", "created_at"],
  labels: (p) => p.labels,
  unique: { key: (p) => p.name, describe: (p) => `a storage pool named '${p.name}' already exists` },
  projectScoped: false,
  owned: [{ path: "status", value: (p) => p.status, owners: [STORAGE_POOL_CONTROLLER] }],
  finalizers: [POOL_FINALIZER],
  // A pool no node has reported on was set up nowhere: nothing to remove.
  pendingFinalizers: (p) => ((p.status?.nodes.length ?? 0) > 0 ? [POOL_FINALIZER] : []),
});
