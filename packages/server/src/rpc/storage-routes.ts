import { create } from "@bufbuild/protobuf";
import { EmptySchema } from "@bufbuild/protobuf/wkt";
import { StoragePoolService } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import { VolumeService } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import { QuantixError, STORAGE_POOL_KIND, VOLUME_KIND, type Store } from "@quantix/core";
import type { Route } from "@quantix/rpc";
import { resourceRoute } from "../resources/resource-routes.js";
import type { StoragePoolService as Pools } from "../services/storage-pool-service.js";
import type { VolumeService as Volumes } from "../services/volume-service.js";
import { budgetOf } from "./budget.js";

/**
 * Quantixkvm.storage.v1.StoragePoolService: Get, List and Watch are the pool kind's
 * generic reads; the writes have the pool's rules. RefreshStoragePool is not built yet
 * (the controller measures every pool each minute).
 */
export function storagePoolServiceRoute(store: Store, pools: Pools, defaultDeadlineMs: number): Route {
  return resourceRoute(StoragePoolService, STORAGE_POOL_KIND as never, store, {
    impl: {
      createStoragePool: (req) => pools.create(req),
      updateStoragePool: (req) => pools.update(req),
      deleteStoragePool: async (req, ctx) => {
        await pools.delete(req, budgetOf(ctx, defaultDeadlineMs));
        return create(EmptySchema);
      },
      refreshStoragePool: () => {
        throw new QuantixError("unimplemented", "RefreshStoragePool is not built yet: the storage pool controller measures every pool each minute (status.last_refreshed_at)");
      },
    },
    filters: {
      // Reaching a pool is node_ids (empty: every node) and node_selector together, which no index answers yet.
      node_id: (value) => {
        if (value !== "") throw new QuantixError("unimplemented", "ListStoragePools.node_id is not supported yet: list every pool and read spec.node_ids and status.nodes");
        return {};
      },
    },
  });
}

/**
 * Quantixkvm.storage.v1.VolumeService: Get, List and Watch are the volume kind's generic
 * reads; Create, Update, Delete, Resize, Clone, Attach and Detach have the volume's
 * rules. Migrate is not built yet (UNIMPLEMENTED saying so).
 */
export function volumeServiceRoute(store: Store, volumes: Volumes, defaultDeadlineMs: number): Route {
  return resourceRoute(VolumeService, VOLUME_KIND as never, store, {
    impl: {
      createVolume: (req) => volumes.create(req),
      updateVolume: (req) => volumes.update(req),
      deleteVolume: async (req, ctx) => {
        await volumes.delete(req, budgetOf(ctx, defaultDeadlineMs));
        return create(EmptySchema);
      },
      resizeVolume: (req) => volumes.resize(req),
      cloneVolume: (req) => volumes.cloneVolume(req),
      attachVolume: (req) => volumes.attach(req),
      detachVolume: (req) => volumes.detach(req),
      migrateVolume: () => {
        throw new QuantixError("unimplemented", "MigrateVolume is not built yet (issue 13)");
      },
    },
    filters: {
      bootable_only: (value) => (value === true ? { bootable: true } : {}),
    },
  });
}
