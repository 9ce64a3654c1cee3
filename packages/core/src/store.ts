import type { Node, NodeStatus_Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { VirtualMachine, VmStatus_State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import type { Cursor, Order } from "./pagination.js";

/** The kind of a change. */
export type ChangeType = "ADDED" | "MODIFIED" | "DELETED";

/** One change to one object, at the store revision that made it. */
export interface ChangeEvent<T> {
  readonly type: ChangeType;
  /** The object after the change; for DELETED, its last state. */
  readonly object: T;
  /** For MODIFIED, the object before the change (so watchers can tell when it leaves a filter). */
  readonly previous?: T | undefined;
  readonly revision: bigint;
}

/**
 * Marks the end of the replayed history: every change up to `revision` (the store's
 * revision when the watch began) has been delivered; what follows is live.
 */
export interface SyncedEvent {
  readonly type: "SYNCED";
  readonly revision: bigint;
}

/** What a store watch yields. */
export type WatchEvent<T> = ChangeEvent<T> | SyncedEvent;

/** A page of a list, read at one revision. */
export interface ListPage<T> {
  readonly items: T[];
  /** How many objects match the filter in all; -1 when the query asked not to count. */
  readonly totalCount: number;
  /** The revision the page was read at; a watch from it misses nothing. */
  readonly revision: bigint;
  /** Whether more objects follow the last one. */
  readonly hasMore: boolean;
}

/** Options of a conditional write. */
export interface WriteOptions {
  /** Write only if the object's resource_version is still this one (else ABORTED). */
  readonly expectedVersion?: bigint;
}

/**
 * A collection of one kind of object, keyed by id, with a uniqueness key, revisions and
 * watch. Implementations: memory (tests, laptops), and the durable stores. Every
 * implementation passes store.contract.ts.
 *
 * Objects a repository returns (and yields from watch) are read-only snapshots: an
 * implementation may hand out deeply frozen objects shared between readers (the memory
 * store does), so callers clone before changing one. Input objects are copied.
 */
export interface Repository<T, Q> {
  /** Stores a new object; sets its resource_version. ALREADY_EXISTS when the unique key is taken. */
  create(obj: T): Promise<T>;
  /** The object, or undefined. */
  get(id: string): Promise<T | undefined>;
  /** A page of objects matching a query, in the query's order, after its cursor. */
  list(query: Q): Promise<ListPage<T>>;
  /**
   * Reads the object, passes a copy to `mutate`, and stores what it returns (a new
   * revision) unless it returns undefined (nothing to change: the current object comes
   * back). `mutate` must be pure: durable stores may call it again after a conflict.
   * NOT_FOUND if absent; ABORTED if `expectedVersion` is stale.
   */
  update(id: string, mutate: (current: T) => T | undefined, options?: WriteOptions): Promise<T>;
  /**
   * Deletes the object after `check` (which may throw to refuse) accepts its current
   * state. Returns the last state. NOT_FOUND if absent.
   */
  delete(id: string, check?: (current: T) => void, options?: WriteOptions): Promise<T>;
  /**
   * Every change after `fromRevision`, in revision order, then one SYNCED marker, then live changes, until
   * `signal` aborts. OUT_OF_RANGE when history no longer reaches back to it.
   */
  watch(fromRevision: bigint, signal: AbortSignal): AsyncIterable<WatchEvent<T>>;
}

/** A filter and page of VMs. */
export interface VmQuery {
  readonly projectId?: string;
  readonly labels?: Readonly<Record<string, string>>;
  readonly states?: readonly VmStatus_State[];
  readonly nodeId?: string;
  readonly order: Order<"name" | "created_at">;
  readonly after?: Cursor | undefined;
  /** At most this many items; 0 returns only the count. */
  readonly limit: number;
  /** false lets the store skip counting matches (a later page whose total is known): totalCount is then -1. */
  readonly countTotal?: boolean;
}

/** A filter and page of nodes. */
export interface NodeQuery {
  readonly labels?: Readonly<Record<string, string>>;
  readonly phases?: readonly NodeStatus_Phase[];
  readonly schedulableOnly?: boolean;
  readonly hostname?: string;
  readonly order: Order<"hostname" | "created_at">;
  readonly after?: Cursor | undefined;
  readonly limit: number;
  /** As VmQuery.countTotal. */
  readonly countTotal?: boolean;
}

/** The health of a store, for /_/health. */
export interface StoreHealth {
  readonly ok: boolean;
  /** "memory", "embedded" or "postgres". */
  readonly kind: string;
  readonly revision: string;
  readonly detail?: string;
}

/** All state of the control plane. One revision sequence orders every change of every kind. */
export interface Store {
  readonly vms: Repository<VirtualMachine, VmQuery>;
  readonly nodes: Repository<Node, NodeQuery>;
  /** The latest revision. */
  revision(): Promise<bigint>;
  health(): Promise<StoreHealth>;
  /**
   * Runs `seed` (the demo data) once in the life of the store: only when nothing was ever
   * written to it, never over a user's changes, and by one replica. Resolves to whether it ran.
   */
  seedOnce(seed: () => Promise<void>): Promise<boolean>;
  /**
   * Campaigns to be the one replica that runs controllers (reconciler, node monitor):
   * `onChange(true)` when this process leads, `onChange(false)` when it no longer does.
   * Resolves to a function that resigns. A store no other process shares leads at once.
   */
  lead(onChange: (leader: boolean) => void): () => Promise<void>;
  close(): Promise<void>;
}

/** The sort key of a VM for an order, as stored in page cursors. */
export function vmSortKey(vm: VirtualMachine, field: "name" | "created_at"): string | number {
  return field === "name" ? vm.name : timestampMillis(vm.createdAt);
}

/** The sort key of a node for an order. */
export function nodeSortKey(node: Node, field: "hostname" | "created_at"): string | number {
  return field === "hostname" ? node.hostname : timestampMillis(node.createdAt);
}

function timestampMillis(ts: { seconds: bigint; nanos: number } | undefined): number {
  return ts ? Number(ts.seconds) * 1000 + Math.floor(ts.nanos / 1e6) : 0;
}
