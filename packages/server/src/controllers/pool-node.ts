import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { StoragePool } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { NODE_KIND, QuantixError, type Resource, type Store } from "@quantix/core";
import type { NodeStorages } from "../storage/node-storages.js";
import { nodePoolType, poolNodes } from "./storage-pool-controller.js";

/**
 * The node that holds (or will hold) something of a pool, with the pool set up there:
 * `pinned` when given (the node a volume or copy is on), else the first node of the pool
 * where the pool can be set up. A failure names every node's reason.
 */
export async function nodeFor(deps: { store: Store; storages: NodeStorages }, pool: StoragePool, pinned: string): Promise<Node> {
  const shape = nodePoolType(pool);
  const candidates = pinned !== "" ? [await deps.store.of(NODE_KIND).get(pinned)].filter((n): n is Node & Resource => n !== undefined) : await poolNodes(deps.store, pool);
  if (candidates.length === 0) throw new QuantixError("unavailable", pinned !== "" ? `node '${pinned}' is not registered` : `no node reaches storage pool '${pool.id}'`);
  const why: string[] = [];
  for (const n of candidates) {
    try {
      await deps.storages.of(n).ensurePool({ poolId: pool.id, ...shape });
      return n;
    } catch (err) {
      if (candidates.length === 1) throw err;
      why.push(`node '${n.id}': ${err instanceof QuantixError ? err.message : "failed to set the pool up"}`);
    }
  }
  throw new QuantixError("unavailable", `storage pool '${pool.id}' is available on no node (${why.join("; ")})`);
}

/** A failure of a step on a node, as a condition's reason (`CreateFailedPrecondition`, `ImportUnavailable`) and message. */
export function reasonOf(step: string, err: unknown, what: string): { reason: string; message: string } {
  if (err instanceof QuantixError) {
    const code = err.code.split("_").map((w) => w[0]!.toUpperCase() + w.slice(1)).join("");
    return { reason: `${step}${code}`, message: err.message };
  }
  return { reason: `${step}Failed`, message: `the node failed to ${step.toLowerCase()} the ${what}` };
}
