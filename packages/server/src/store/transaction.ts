import { QuantixError, type Resource, type Store, type Transaction, type TxOp, type WriteOptions } from "@quantix/core";

/** Attempts of a transaction whose reads went stale before its commit. */
const MAX_ATTEMPTS = 20;

/**
 * Store.transact for any store: runs `fn` with a transaction that reads through the store
 * and stages writes, then commits them as one (Store.commit), each update and delete
 * conditional on the version of the object `fn` read. When one of them changed meanwhile
 * the commit is ABORTED and `fn` runs again on fresh reads; after MAX_ATTEMPTS, ABORTED.
 * Objects read are read-only snapshots: clone before changing one.
 */
export async function runTransaction<R>(store: Store, fn: (tx: Transaction) => Promise<R>, options?: Pick<WriteOptions, "actor">): Promise<{ result: R; written: Resource[] }> {
  for (let attempt = 1; ; attempt++) {
    const ops: TxOp[] = [];
    const tx: Transaction = {
      get: (kind, id) => store.of(kind).get(id),
      create: (kind, object) => void ops.push({ op: "create", kind: kind as never, object }),
      update: (kind, object) => void ops.push({ op: "update", kind: kind as never, object }),
      delete: (kind, object) => void ops.push({ op: "delete", kind: kind as never, object }),
    };
    const result = await fn(tx);
    if (ops.length === 0) return { result, written: [] };
    try {
      return { result, written: await store.commit(ops, options) };
    } catch (err) {
      if (!(err instanceof QuantixError && err.code === "aborted") || attempt >= MAX_ATTEMPTS) throw err;
    }
  }
}
