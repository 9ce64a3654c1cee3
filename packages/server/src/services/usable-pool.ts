import { StoragePoolType, type StoragePool } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { notFound, QuantixError, SERVED_POOL_TYPES, STORAGE_POOL_KIND, type Store } from "@quantix/core";
import { defaultPool } from "./storage-pool-service.js";

/**
 * The pool a new volume or image goes into (`id`, or the default pool when empty), if
 * something new may be placed in it: NOT_FOUND naming it; FAILED_PRECONDITION while it
 * is being deleted, disabled, or of a type whose volumes the control plane cannot make.
 */
export async function usablePool(store: Store, id: string): Promise<StoragePool> {
  if (id === "") return usablePool(store, (await defaultPool(store)).id);
  const pool = await store.of(STORAGE_POOL_KIND).get(id);
  if (!pool) throw notFound("storage pool", id);
  const type = pool.spec?.type ?? StoragePoolType.UNSPECIFIED;
  if (pool.deletionRequestedAt) throw new QuantixError("failed_precondition", `storage pool '${id}' is being deleted`);
  if (pool.spec?.disabled) throw new QuantixError("failed_precondition", `storage pool '${id}' is disabled: nothing new is placed in it`);
  if (!SERVED_POOL_TYPES.has(type)) throw new QuantixError("failed_precondition", `storage pool '${id}' is of type ${StoragePoolType[type]}, whose volumes the control plane cannot create yet (LOCAL_DIR and SHARED_DIR are served)`);
  return pool;
}
