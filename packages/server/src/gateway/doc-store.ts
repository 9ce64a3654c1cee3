import { PushIterable, QuantixError, type PushSink, type WatchEvent } from "@quantix/core";
import { covers, mergeClocks, type VClock } from "./clock.js";
import type { DocChange, DocEngine, DocNode, DocNodeInfo, DocTx, NodeListQuery } from "./doc-engine.js";
import { applyDiff, EMPTY_DOCUMENT, parseDiff, pathsOverlap, type ParsedDiff } from "./diff.js";

/** What a write asks for. */
export interface DocWrite {
  readonly nodeId: Uint8Array;
  readonly diff: ParsedDiff;
  readonly diffBytes: Uint8Array;
  readonly clock: VClock;
  readonly writerId: string;
  readonly metadata: Readonly<Record<string, string>>;
  readonly author: string;
  /** Refuse a conflict (ABORTED) instead of applying it. */
  readonly rejectConflicts: boolean;
}

/** A path both a write and a concurrent change touched. */
export interface PathConflict {
  readonly path: string;
  readonly concurrentVersion: bigint;
}

/** What happened to a write. */
export interface WriteResult {
  readonly outcome: "APPLIED" | "MERGED" | "CONFLICT" | "DUPLICATE";
  readonly version: bigint;
  readonly clock: VClock;
  readonly concurrentVersions: readonly bigint[];
  readonly conflicts: readonly PathConflict[];
}

/** A node's document at a version. */
export interface Snapshot {
  readonly nodeId: Uint8Array;
  readonly version: bigint;
  readonly document: Uint8Array;
  readonly clock: VClock;
  readonly metadata: Readonly<Record<string, string>>;
  readonly updatedMs: number;
}

/** A watch's event: a change, a node's current document (SNAPSHOT), or SYNCED. */
export type DocEvent = { readonly type: "CHANGE"; readonly change: DocChange } | { readonly type: "SNAPSHOT"; readonly node: DocNode } | { readonly type: "SYNCED"; readonly version: bigint };

/** Which nodes a watch follows. */
export interface NodeFilter {
  readonly ids: readonly Uint8Array[];
  readonly prefix: Uint8Array;
}

/** The store's limits (docs/api/memory-gateway.md). */
export interface DocStoreLimits {
  /** Changes of a node a write's concurrency check reads back, at most. */
  readonly maxConcurrencyScan: number;
  /** A checkpoint (the whole document) is stored after this many diffs, or once the diffs since the last one add up to the document's size. */
  readonly checkpointEvery: number;
  /** Nodes a watch with include_snapshots may start with. */
  readonly maxSnapshotNodes: number;
  /** Versions listed in a response's concurrent_versions and conflicts, at most. */
  readonly maxReported: number;
}

export const DEFAULT_DOC_LIMITS: DocStoreLimits = { maxConcurrencyScan: 10_000, checkpointEvery: 32, maxSnapshotNodes: 10_000, maxReported: 100 };

const hex = (id: Uint8Array) => Buffer.from(id).toString("hex");
/** A node id for messages: printable as is, else hex. */
export function showId(id: Uint8Array): string {
  const s = Buffer.from(id).toString("utf8");
  return /^[\x20-\x7e]{1,256}$/.test(s) && !s.includes("'") ? `'${s}'` : `0x${hex(id)}`;
}

/**
 * The MemoryGateway's documents: the rules of writes (vector clocks, conflicts,
 * idempotent retries), reads at a version, lists and watches, over an engine that stores
 * them (doc-engine.ts). Writes are serialized per store by the engine.
 */
export class DocStore {
  constructor(
    readonly engine: DocEngine,
    private readonly now: () => number = Date.now,
    readonly limits: DocStoreLimits = DEFAULT_DOC_LIMITS,
  ) {}

  /** Applies a diff (see the service comment of gateway.proto). */
  write(w: DocWrite): Promise<WriteResult> {
    return this.engine.transact(async (tx) => {
      const node = await tx.node(w.nodeId);
      const nodeClock: VClock = node?.clock ?? new Map();
      if (node && covers(nodeClock, w.clock)) {
        // A retry of a write already applied (or a clock the node has seen in full).
        return { outcome: "DUPLICATE", version: node.version, clock: nodeClock, concurrentVersions: [], conflicts: [] };
      }
      if (node && w.writerId !== "" && (w.clock.get(w.writerId) ?? 0n) <= (nodeClock.get(w.writerId) ?? 0n)) {
        const had = nodeClock.get(w.writerId) ?? 0n;
        throw new QuantixError("invalid_argument", `vector_clock: the writer '${w.writerId}' sent ${w.clock.get(w.writerId) ?? 0n} for itself, but node ${showId(w.nodeId)} has already seen ${had} of its writes and the clock is not a retry of one of them: a writer increments its own entry before each write (a clock never goes backwards)`, [
        { field: `vector_clock.entries[${JSON.stringify(w.writerId)}]`, reason: "OUT_OF_RANGE", description: `must be above ${had}, the count of this writer's writes the node has seen` },
        ]);
      }
      const concurrent = node ? await this.concurrentChanges(tx, node, w.clock) : [];
      const conflicts: PathConflict[] = [];
      for (const c of concurrent) {
        for (const p of w.diff.paths) {
          const hit = c.paths.find((q) => pathsOverlap(p, q));
          if (hit !== undefined) conflicts.push({ path: hit.length > p.length ? hit : p, concurrentVersion: c.version });
        }
      }
      const concurrentVersions = concurrent.map((c) => c.version).sort((a, b) => (a < b ? -1 : 1));
      if (conflicts.length > 0 && w.rejectConflicts) {
        const shown = conflicts.slice(0, 5).map((c) => `'${c.path}' (version ${c.concurrentVersion})`).join(", ");
        throw new QuantixError(
          "aborted",
          `write to node ${showId(w.nodeId)} conflicts with concurrent changes its vector clock has not seen, on ${shown}${conflicts.length > 5 ? ` and ${conflicts.length - 5} more` : ""}; nothing was applied: read the node (ReadSnapshot), merge, and write again with a clock that covers version ${concurrentVersions[concurrentVersions.length - 1]}`,
        );
      }
      const document = applyDiff(node?.document ?? EMPTY_DOCUMENT, w.diff);
      const version = await tx.nextVersion();
      const clock = mergeClocks(nodeClock, w.clock);
      const ms = this.now();
      const sinceCheckpoint = (node?.sinceCheckpoint ?? 0) + 1;
      const sinceBytes = (node?.sinceCheckpointBytes ?? 0) + w.diffBytes.length;
      // The first change rebuilds from the empty document; later ones from a checkpoint,
      // stored once enough diffs (or diff bytes) have piled up since the last.
      const checkpoint = node !== undefined && (sinceCheckpoint >= this.limits.checkpointEvery || sinceBytes >= document.length);
      const change: DocChange = {
        version,
        nodeId: w.nodeId,
        type: "DIFF",
        diff: w.diffBytes,
        paths: w.diff.paths,
        clock,
        writerClock: w.clock,
        metadata: w.metadata,
        author: w.author,
        writerId: w.writerId,
        committedMs: ms,
        created: node === undefined,
      };
      await tx.addChange(change, checkpoint ? document : undefined);
      await tx.putNode({
        nodeId: w.nodeId,
        version,
        createdVersion: node?.createdVersion ?? version,
        createdMs: node?.createdMs ?? ms,
        updatedMs: ms,
        clock,
        document,
        metadata: w.metadata,
        sinceCheckpoint: checkpoint || node === undefined ? 0 : sinceCheckpoint,
        sinceCheckpointBytes: checkpoint || node === undefined ? 0 : sinceBytes,
      });
      const outcome = conflicts.length > 0 ? "CONFLICT" : concurrent.length > 0 ? "MERGED" : "APPLIED";
      return {
        outcome,
        version,
        clock,
        concurrentVersions: concurrentVersions.slice(0, this.limits.maxReported),
        conflicts: conflicts.sort((a, b) => (a.concurrentVersion < b.concurrentVersion ? -1 : a.concurrentVersion > b.concurrentVersion ? 1 : a.path < b.path ? -1 : 1)).slice(0, this.limits.maxReported),
      };
    });
  }

  /**
   * The node's changes the write's clock has not seen. Read newest first; a change whose
   * node clock (the merge of every change up to it) the write covers ends the scan: the
   * write has seen it and everything before.
   */
  private async concurrentChanges(tx: DocTx, node: DocNode, clock: VClock): Promise<DocChange[]> {
    const out: DocChange[] = [];
    let before = node.version + 1n;
    let scanned = 0;
    for (;;) {
      const page = await tx.changesNewestFirst(node.nodeId, node.createdVersion, before, 256);
      for (const c of page) {
        if (covers(clock, c.clock)) return out;
        if (!covers(clock, c.writerClock)) out.push(c);
        if (++scanned >= this.limits.maxConcurrencyScan) {
          throw new QuantixError(
            "failed_precondition",
            `write to node ${showId(node.nodeId)}: its vector clock has not seen more than ${this.limits.maxConcurrencyScan} of the node's changes; read the node (ReadSnapshot) and write with its clock merged into yours`,
          );
        }
      }
      if (page.length < 256) return out;
      before = page[page.length - 1]!.version;
    }
  }

  /** The node's document, at its latest version (0n) or as of `version`. */
  async read(nodeId: Uint8Array, version: bigint): Promise<Snapshot> {
    if (version === 0n) {
      const node = await this.engine.node(nodeId);
      if (!node) throw new QuantixError("not_found", `node ${showId(nodeId)} not found`);
      return { nodeId, version: node.version, document: node.document, clock: node.clock, metadata: node.metadata, updatedMs: node.updatedMs };
    }
    const compacted = await this.engine.compactedVersion();
    if (version <= compacted) throw new QuantixError("out_of_range", `version ${version} has been compacted: history starts after version ${compacted}; read the latest version (version 0)`);
    const last = await this.engine.lastChange(nodeId, version);
    if (!last) throw new QuantixError("not_found", `node ${showId(nodeId)} did not exist at version ${version}`);
    if (last.type === "DELETED") throw new QuantixError("not_found", `node ${showId(nodeId)} was deleted at version ${last.version} (at or before version ${version})`);
    const { base, diffs } = await this.engine.rebuildFrom(nodeId, version);
    let document = base ?? EMPTY_DOCUMENT;
    for (const d of diffs) document = applyDiff(document, parseDiff(d));
    return { nodeId, version: last.version, document, clock: last.clock, metadata: last.metadata, updatedMs: last.committedMs };
  }

  /** Deletes a node (a DELETED change); ABORTED when `expectedVersion` (non-zero) is stale. */
  delete(nodeId: Uint8Array, expectedVersion: bigint, metadata: Readonly<Record<string, string>>, author: string): Promise<bigint> {
    return this.engine.transact(async (tx) => {
      const node = await tx.node(nodeId);
      if (!node) throw new QuantixError("not_found", `node ${showId(nodeId)} not found`);
      if (expectedVersion !== 0n && node.version !== expectedVersion) {
        throw new QuantixError("aborted", `node ${showId(nodeId)} is at version ${node.version}, not the expected ${expectedVersion}: it changed since you read it; read it again and decide`);
      }
      const version = await tx.nextVersion();
      await tx.addChange(
        { version, nodeId, type: "DELETED", diff: new Uint8Array(0), paths: [], clock: node.clock, writerClock: new Map(), metadata, author, writerId: "", committedMs: this.now(), created: false },
        undefined,
      );
      await tx.removeNode(nodeId);
      return version;
    });
  }

  /**
   * Compacts the history to keep the last `keep` versions (at most `batch` more versions
   * per call): each node that changed in the compacted range keeps one change at or below
   * it, holding its document (reads after the mark rebuild from it); every other change
   * in the range goes, and with it the blobs no row references. Returns the changes removed.
   */
  async compact(keep: bigint, batch = 10_000n): Promise<number> {
    const latest = await this.engine.syncLatest();
    const after = await this.engine.compactedVersion();
    let through = latest - keep;
    if (through <= after) return 0;
    if (through > after + batch) through = after + batch;
    const bases = await this.engine.compactionBases(after, through);
    for (const b of bases) {
      if (b.type !== "DIFF" || b.hasCheckpoint) continue;
      // One document at a time: the reads of a large history do not all sit in memory.
      const { document } = await this.read(b.nodeId, b.version);
      await this.engine.setCheckpoint(b.version, document);
    }
    return Math.max(0, await this.engine.compactTo(after, through, bases.filter((b) => b.type === "DIFF").map((b) => b.version)));
  }

  listNodes(q: NodeListQuery): Promise<{ nodes: DocNodeInfo[]; total: number }> {
    return this.engine.listNodes(q);
  }

  async listVersions(nodeId: Uint8Array, desc: boolean, after: bigint | undefined, limit: number): Promise<{ changes: DocChange[]; total: number }> {
    const out = await this.engine.listVersions(nodeId, desc, after, limit);
    if (out.total === 0) throw new QuantixError("not_found", `node ${showId(nodeId)} has no history: it was never written (or its history was compacted)`);
    return out;
  }

  /**
   * The changes to matching nodes after `from` (or, with snapshots, each node's current
   * document), SYNCED, then live changes, until `signal` aborts. OUT_OF_RANGE when the
   * history no longer reaches back to `from` or it is newer than the store. The history is
   * read a page at a time as the consumer takes it (a subscriber resuming far behind is
   * not cut off for the backlog it asked for); live changes come from the hub, and a
   * consumer more than the hub's backlog of them behind is ended (RESOURCE_EXHAUSTED).
   */
  watch(filter: NodeFilter, from: bigint, snapshots: boolean, signal: AbortSignal): AsyncIterable<DocEvent> {
    const ids = new Set(filter.ids.map(hex));
    const prefix = Buffer.from(filter.prefix);
    const any = ids.size === 0 && prefix.length === 0;
    const match = (id: Uint8Array) => any || ids.has(hex(id)) || (prefix.length > 0 && id.length >= prefix.length && Buffer.from(id.buffer, id.byteOffset, prefix.length).equals(prefix));
    // New changes only: nothing to read back, so the hub pushes them (one write reaching
    // ten thousand subscribers does not wake ten thousand generators).
    return from === 0n && !snapshots ? this.live(match, signal) : this.replayThenLive(filter, match, any, prefix, from, snapshots, signal);
  }

  private live(match: (id: Uint8Array) => boolean, signal: AbortSignal): PushIterable<DocEvent> {
    const engine = this.engine;
    return new PushIterable<DocEvent>((sink) => {
      let unsubscribe: (() => void) | undefined;
      let done = signal.aborted;
      const onAbort = () => {
        done = true;
        unsubscribe?.();
        sink.end();
      };
      signal.addEventListener("abort", onAbort, { once: true });
      const relay: PushSink<WatchEvent<DocChange>> = {
        push(events) {
          const out: DocEvent[] = [];
          for (const e of events) {
            if (e.type === "SYNCED") out.push({ type: "SYNCED", version: e.revision });
            else if (match(e.object.nodeId)) out.push({ type: "CHANGE", change: e.object });
          }
          if (out.length > 0) sink.push(out);
        },
        fail: (err) => sink.fail(err),
        end: () => sink.end(),
      };
      void engine.syncLatest().then(
        (latest) => {
          if (done) return;
          try {
            unsubscribe = engine.hub.subscribe(latest, relay);
          } catch (err) {
            sink.fail(err);
          }
        },
        (err: unknown) => sink.fail(err),
      );
      return () => {
        done = true;
        unsubscribe?.();
        signal.removeEventListener("abort", onAbort);
      };
    }, engine.hub.maxBacklog);
  }

  private async *replayThenLive(filter: NodeFilter, match: (id: Uint8Array) => boolean, any: boolean, prefix: Buffer, from: bigint, snapshots: boolean, signal: AbortSignal): AsyncGenerator<DocEvent> {
    const engine = this.engine;
    const latest = await engine.syncLatest();
    if (from > latest) throw new QuantixError("out_of_range", `from_version ${from} is newer than the store's latest version ${latest}`);
    let cursor = from;
    if (from === 0n) {
      if (snapshots) {
        const snap = await engine.snapshotNodes(match, { ids: filter.ids as Uint8Array[], prefix: any ? undefined : prefix.length > 0 ? filter.prefix : undefined }, this.limits.maxSnapshotNodes);
        for (const node of snap.nodes) yield { type: "SNAPSHOT", node };
        cursor = snap.version;
      } else {
        cursor = latest;
      }
    } else {
      const compacted = await engine.compactedVersion();
      if (from < compacted) throw new QuantixError("out_of_range", `from_version ${from} has been compacted: history starts after version ${compacted}; start again with include_snapshots (or ReadSnapshot each node) and resume from the version it gives`);
    }
    for (;;) {
      if (signal.aborted) return;
      // History older than the hub's is read from the engine, a page at a time.
      if (cursor < engine.hub.oldestResumable) {
        const through = engine.hub.oldestResumable;
        const page = await engine.changesAfter(cursor, through, 256);
        for (const change of page) if (match(change.nodeId)) yield { type: "CHANGE", change };
        cursor = page.length === 256 ? page[page.length - 1]!.version : through;
        continue;
      }
      let started = false;
      try {
        for await (const e of engine.hub.watch(cursor, signal)) {
          started = true;
          if (e.type === "SYNCED") yield { type: "SYNCED", version: e.revision };
          else if (match(e.object.nodeId)) yield { type: "CHANGE", change: e.object };
        }
        return;
      } catch (err) {
        // The hub moved on while the last page was read: read on.
        if (!started && err instanceof QuantixError && err.code === "out_of_range" && cursor < engine.hub.oldestResumable) continue;
        throw err;
      }
    }
  }
}
