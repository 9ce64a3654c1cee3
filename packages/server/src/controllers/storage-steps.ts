import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { StoragePool } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { NODE_KIND, QuantixError, type Kind, type Resource, type Store } from "@quantix/core";
import type { NodeStorages } from "../storage/node-storages.js";
import { nodePoolType, poolNodes } from "./storage-pool-controller.js";

/**
 * What the volume, snapshot and image controllers share: where a volume lives, how a failed
 * node step becomes a condition's reason, and a status write that is a no-op when it
 * changes nothing.
 */

/** A failure of a step on the node, as a condition's reason: `${step}${Code}` (`CreateFailedPrecondition`) and the error's words. */
export function reasonOf(step: string, err: unknown, what = "volume"): { reason: string; message: string } {
  if (err instanceof QuantixError) {
    const code = err.code.split("_").map((w) => w[0]!.toUpperCase() + w.slice(1)).join("");
    return { reason: `${step}${code}`, message: err.message };
  }
  return { reason: `${step}Failed`, message: `the node failed to ${step.toLowerCase()} the ${what}` };
}

/** Whether a node step's failure may pass by itself (a node away, a timeout): tried again rather than recorded as final. */
export function transient(err: unknown): boolean {
  return err instanceof QuantixError && (err.code === "unavailable" || err.code === "deadline_exceeded");
}

/**
 * The node that holds (or will hold) a volume or an image's copy, with its pool set up
 * there: `pinned` (the volume's status.node_id, the copy's node) when set, else the first
 * node of the pool where the pool can be set up. A failure names every node's reason.
 */
export async function volumeNode(store: Store, storages: NodeStorages, pinned: string, pool: StoragePool): Promise<Node> {
  const shape = nodePoolType(pool);
  const candidates = pinned !== "" ? [await store.of(NODE_KIND).get(pinned)].filter((n): n is Node & Resource => n !== undefined) : await poolNodes(store, pool);
  if (candidates.length === 0) throw new QuantixError("unavailable", pinned !== "" ? `node '${pinned}' is not registered` : `no node reaches storage pool '${pool.id}'`);
  const why: string[] = [];
  for (const n of candidates) {
    try {
      await storages.of(n).ensurePool({ poolId: pool.id, ...shape });
      return n;
    } catch (err) {
      if (candidates.length === 1) throw err;
      why.push(`node '${n.id}': ${err instanceof QuantixError ? err.message : "failed to set the pool up"}`);
    }
  }
  throw new QuantixError("unavailable", `storage pool '${pool.id}' is available on no node (${why.join("; ")})`);
}

/**
 * Writes the status `change` makes to an object of `kind` as `actor` (nothing when it
 * changes nothing); undefined when the object is gone.
 */
export async function writeStatusOf<T extends Resource & { status?: unknown }>(store: Store, kind: Kind<T>, actor: string, id: string, change: (o: T) => void): Promise<T | undefined> {
  try {
    return await store.of(kind).update(
      id,
      (cur) => {
        const before = JSON.stringify(cur.status ?? {}, big);
        change(cur);
        return JSON.stringify(cur.status ?? {}, big) === before ? undefined : cur;
      },
      { actor },
    );
  } catch (err) {
    if (err instanceof QuantixError && err.code === "not_found") return undefined;
    throw err;
  }
}

function big(_k: string, v: unknown): unknown {
  return typeof v === "bigint" ? v.toString() : v;
}
