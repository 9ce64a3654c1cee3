import type { WatchHub } from "../store/watch-hub.js";
import type { VClock } from "./clock.js";

/**
 * The seam between the MemoryGateway's document store (doc-store.ts: the rules of writes,
 * reads and watches) and where documents live: memory (memory-doc-engine.ts) or SQL, on
 * the embedded database or PostgreSQL (sql-doc-engine.ts). An engine stores; it decides
 * nothing.
 */

/** One committed change of a node, as history keeps it and watchers receive it. */
export interface DocChange {
  /** The store-wide version it committed at (one counter for every node, +1 per change). */
  readonly version: bigint;
  readonly nodeId: Uint8Array;
  readonly type: "DIFF" | "DELETED";
  /** The diff as written (BSON); empty for DELETED. */
  readonly diff: Uint8Array;
  /** The paths the diff changes (for conflict detection); empty for DELETED. */
  readonly paths: readonly string[];
  /** The node's clock after the change. */
  readonly clock: VClock;
  /** The write's own clock (empty for DELETED). */
  readonly writerClock: VClock;
  readonly metadata: Readonly<Record<string, string>>;
  /** Who made it (the caller's name). */
  readonly author: string;
  /** The writer id the write gave, or "". */
  readonly writerId: string;
  readonly committedMs: number;
  /** Whether this change created the node (its history starts here, from the empty document). */
  readonly created: boolean;
  /** The diff's size, when a listing left `diff` out. */
  readonly diffSize?: number;
}

/** A live node: its current document and what its last change left. */
export interface DocNode {
  readonly nodeId: Uint8Array;
  /** The version of its last change. */
  readonly version: bigint;
  /** The version of the change that created it. */
  readonly createdVersion: bigint;
  readonly createdMs: number;
  readonly updatedMs: number;
  readonly clock: VClock;
  /** The document, BSON. */
  readonly document: Uint8Array;
  /** The metadata of its last change. */
  readonly metadata: Readonly<Record<string, string>>;
  /** Diffs since its last checkpoint (a change that stores the whole document), and their bytes. */
  readonly sinceCheckpoint: number;
  readonly sinceCheckpointBytes: number;
}

/** A node's summary, without its document (ListNodes). */
export type DocNodeInfo = Omit<DocNode, "document" | "sinceCheckpoint" | "sinceCheckpointBytes"> & { readonly sizeBytes: number };

/** What a transaction reads and writes. Engines run one transaction at a time (per store): what it reads stays current until it commits. */
export interface DocTx {
  node(nodeId: Uint8Array): Promise<DocNode | undefined>;
  /** The node's changes at or after `sinceVersion`, newest first, at most `limit`, older than `beforeVersion`. */
  changesNewestFirst(nodeId: Uint8Array, sinceVersion: bigint, beforeVersion: bigint, limit: number): Promise<DocChange[]>;
  /** Takes the next version. */
  nextVersion(): Promise<bigint>;
  putNode(node: DocNode): Promise<void>;
  removeNode(nodeId: Uint8Array): Promise<void>;
  /** Appends a change; `checkpoint` is the whole document after it, kept for reads at older versions. */
  addChange(change: DocChange, checkpoint: Uint8Array | undefined): Promise<void>;
}

/** How nodes are listed: after a cursor, in an order. */
export interface NodeListQuery {
  readonly prefix: Uint8Array;
  readonly order: "node_id" | "updated_at";
  readonly desc: boolean;
  /** The last item of the previous page: its sort key (updated ms, or the id) and id. */
  readonly after: { readonly updatedMs: number; readonly nodeId: Uint8Array } | undefined;
  readonly limit: number;
  /** Whether to count every match. */
  readonly count: boolean;
}

export interface DocEngine {
  /** "memory", "embedded" or "postgres". */
  readonly kind: string;
  /** Committed changes, in version order, from every writer of the store (every replica's). */
  readonly hub: WatchHub<DocChange>;
  /** Runs `fn` as one transaction, serialized with every other; its changes reach the hub after it commits. */
  transact<R>(fn: (tx: DocTx) => Promise<R>): Promise<R>;
  /** The live node, read without a lock. */
  node(nodeId: Uint8Array): Promise<DocNode | undefined>;
  /** The node's last change at or before `version`. */
  lastChange(nodeId: Uint8Array, version: bigint): Promise<DocChange | undefined>;
  /**
   * What rebuilds the node's document at `version` (its last change at or before it being a
   * DIFF): the checkpoint (or the empty document, from its creation) and the diffs after it.
   */
  rebuildFrom(nodeId: Uint8Array, version: bigint): Promise<{ base: Uint8Array | undefined; diffs: Uint8Array[] }>;
  listNodes(q: NodeListQuery): Promise<{ nodes: DocNodeInfo[]; total: number }>;
  /** A node's changes after a version (in the order asked), and how many it has in all. */
  listVersions(nodeId: Uint8Array, desc: boolean, after: bigint | undefined, limit: number): Promise<{ changes: DocChange[]; total: number }>;
  /** Changes after `after` and at most `through`, oldest first, at most `limit` (a watch's replay). */
  changesAfter(after: bigint, through: bigint, limit: number): Promise<DocChange[]>;
  /** Every live node matching, and the version they were read at, in one snapshot. */
  snapshotNodes(match: (nodeId: Uint8Array) => boolean, sql: { ids: Uint8Array[]; prefix: Uint8Array | undefined }, limit: number): Promise<{ version: bigint; nodes: DocNode[] }>;
  /** The latest committed version, as the database has it (waits until the hub has published it). */
  syncLatest(): Promise<bigint>;
  /** Changes at or below this version are gone. */
  compactedVersion(): Promise<bigint>;
  /**
   * What a compaction from `after` (the current mark) to `through` keeps: for each node
   * that changed in between, its last change at or below `through` (the base its reads
   * after `through` rebuild from), and whether that change holds its document already.
   */
  compactionBases(after: bigint, through: bigint): Promise<{ nodeId: Uint8Array; version: bigint; type: "DIFF" | "DELETED"; hasCheckpoint: boolean }[]>;
  /** Stores the whole document after a change on it (a checkpoint: always valid to add). */
  setCheckpoint(version: bigint, document: Uint8Array): Promise<void>;
  /**
   * Deletes the changes at or below `through` of the nodes that changed after `after`,
   * except the `kept` bases, and moves the mark to `through`. Does nothing (returns -1)
   * when the mark is no longer `after` (another replica compacted meanwhile).
   */
  compactTo(after: bigint, through: bigint, kept: readonly bigint[]): Promise<number>;
  close(): Promise<void>;
}
