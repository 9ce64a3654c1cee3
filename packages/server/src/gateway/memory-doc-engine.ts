import { QuantixError } from "@quantix/core";
import { WatchHub } from "../store/watch-hub.js";
import type { DocChange, DocEngine, DocNode, DocNodeInfo, DocTx, NodeListQuery } from "./doc-engine.js";

const key = (id: Uint8Array) => Buffer.from(id).toString("hex");

/**
 * Documents in memory (QUANTIX_STORE=memory, tests): the same rules as the durable
 * engines, nothing survives the process. Transactions run one at a time; a failed one
 * leaves nothing behind (its writes are staged and applied on success).
 */
export class MemoryDocEngine implements DocEngine {
  readonly kind = "memory";
  readonly hub: WatchHub<DocChange>;
  private version = 0n;
  private compacted = 0n;
  private readonly nodes = new Map<string, DocNode>();
  /** Every change, in version order. */
  private readonly changes: DocChange[] = [];
  /** Per node (hex id): its changes' indexes into `changes`, and checkpoints by version. */
  private readonly byNode = new Map<string, number[]>();
  private readonly checkpoints = new Map<bigint, Uint8Array>();
  private queue: Promise<unknown> = Promise.resolve();

  constructor(hubLimits = { historySize: 256, maxBacklog: 1000 }) {
    this.hub = new WatchHub<DocChange>("document", () => this.version, hubLimits);
  }

  transact<R>(fn: (tx: DocTx) => Promise<R>): Promise<R> {
    const run = this.queue.then(() => this.run(fn));
    this.queue = run.catch(() => undefined);
    return run;
  }

  private async run<R>(fn: (tx: DocTx) => Promise<R>): Promise<R> {
    const put = new Map<string, DocNode | undefined>();
    const added: { change: DocChange; checkpoint: Uint8Array | undefined }[] = [];
    let next = this.version;
    const tx: DocTx = {
      node: async (id) => (put.has(key(id)) ? put.get(key(id)) : this.nodes.get(key(id))),
      changesNewestFirst: async (id, since, before, limit) => {
        const out: DocChange[] = [];
        const idx = this.byNode.get(key(id)) ?? [];
        for (let i = idx.length - 1; i >= 0 && out.length < limit; i--) {
          const c = this.changes[idx[i]!]!;
          if (c.version >= before) continue;
          if (c.version < since) break;
          out.push(c);
        }
        return out;
      },
      nextVersion: async () => ++next,
      putNode: async (node) => void put.set(key(node.nodeId), node),
      removeNode: async (id) => void put.set(key(id), undefined),
      addChange: async (change, checkpoint) => void added.push({ change, checkpoint }),
    };
    const result = await fn(tx);
    // Commit: nothing above can fail from here on.
    for (const [k, node] of put) {
      if (node) this.nodes.set(k, node);
      else this.nodes.delete(k);
    }
    for (const { change, checkpoint } of added) {
      const k = key(change.nodeId);
      const list = this.byNode.get(k) ?? [];
      list.push(this.changes.length);
      this.byNode.set(k, list);
      this.changes.push(change);
      if (checkpoint) this.checkpoints.set(change.version, checkpoint);
    }
    this.version = next;
    for (const { change } of added) this.hub.publish({ type: "MODIFIED", object: change, revision: change.version });
    return result;
  }

  async node(id: Uint8Array): Promise<DocNode | undefined> {
    return this.nodes.get(key(id));
  }

  private nodeChanges(id: Uint8Array): DocChange[] {
    return (this.byNode.get(key(id)) ?? []).map((i) => this.changes[i]!);
  }

  async lastChange(id: Uint8Array, version: bigint): Promise<DocChange | undefined> {
    const all = this.nodeChanges(id);
    for (let i = all.length - 1; i >= 0; i--) if (all[i]!.version <= version) return all[i];
    return undefined;
  }

  async rebuildFrom(id: Uint8Array, version: bigint): Promise<{ base: Uint8Array | undefined; diffs: Uint8Array[] }> {
    const all = this.nodeChanges(id).filter((c) => c.version <= version);
    const diffs: Uint8Array[] = [];
    for (let i = all.length - 1; i >= 0; i--) {
      const c = all[i]!;
      const cp = this.checkpoints.get(c.version);
      if (cp) return { base: cp, diffs: diffs.reverse() };
      diffs.push(c.diff);
      if (c.created) return { base: undefined, diffs: diffs.reverse() };
    }
    return { base: undefined, diffs: diffs.reverse() };
  }

  async listNodes(q: NodeListQuery): Promise<{ nodes: DocNodeInfo[]; total: number }> {
    const prefix = Buffer.from(q.prefix);
    const matching = [...this.nodes.values()].filter((n) => Buffer.from(n.nodeId).subarray(0, prefix.length).equals(prefix));
    const cmp = (a: DocNode, b: DocNode) => {
      const byKey = q.order === "updated_at" ? a.updatedMs - b.updatedMs : 0;
      const c = byKey !== 0 ? byKey : Buffer.compare(Buffer.from(a.nodeId), Buffer.from(b.nodeId));
      return q.desc ? -c : c;
    };
    matching.sort(cmp);
    const after = q.after;
    const rest = after ? matching.filter((n) => cmp(n, { ...n, updatedMs: after.updatedMs, nodeId: after.nodeId }) > 0) : matching;
    return { nodes: rest.slice(0, q.limit).map(info), total: matching.length };
  }

  async listVersions(id: Uint8Array, desc: boolean, after: bigint | undefined, limit: number): Promise<{ changes: DocChange[]; total: number }> {
    // A base kept at or below the mark is not a version one can read any more.
    const all = this.nodeChanges(id).filter((c) => c.version > this.compacted);
    const ordered = desc ? [...all].reverse() : all;
    const rest = after === undefined ? ordered : ordered.filter((c) => (desc ? c.version < after : c.version > after));
    return { changes: rest.slice(0, limit), total: all.length };
  }

  async changesAfter(after: bigint, through: bigint, limit: number): Promise<DocChange[]> {
    return this.changes.filter((c) => c.version > after && c.version <= through).slice(0, limit);
  }

  async snapshotNodes(match: (id: Uint8Array) => boolean, _sql: unknown, limit: number): Promise<{ version: bigint; nodes: DocNode[] }> {
    const nodes = [...this.nodes.values()].filter((n) => match(n.nodeId));
    if (nodes.length > limit) throw tooMany(nodes.length, limit);
    return { version: this.version, nodes };
  }

  async syncLatest(): Promise<bigint> {
    return this.version;
  }

  async compactedVersion(): Promise<bigint> {
    return this.compacted;
  }

  async compactionBases(after: bigint, through: bigint) {
    const nodes = new Map<string, DocChange>();
    for (const c of this.changes) if (c.version > after && c.version <= through) nodes.set(key(c.nodeId), c);
    return [...nodes.values()].map((c) => ({ nodeId: c.nodeId, version: c.version, type: c.type, hasCheckpoint: this.checkpoints.has(c.version) }));
  }

  async setCheckpoint(version: bigint, document: Uint8Array): Promise<void> {
    this.checkpoints.set(version, document);
  }

  compactTo(after: bigint, through: bigint, kept: readonly bigint[]): Promise<number> {
    return this.transact(async () => {
      if (this.compacted !== after) return -1;
      const keep = new Set(kept);
      const touched = new Set(this.changes.filter((c) => c.version > after && c.version <= through).map((c) => key(c.nodeId)));
      const before = this.changes.length;
      const left = this.changes.filter((c) => c.version > through || !touched.has(key(c.nodeId)) || keep.has(c.version));
      const staying = new Set(left);
      for (const c of this.changes) if (!staying.has(c)) this.checkpoints.delete(c.version);
      this.changes.splice(0, this.changes.length, ...left);
      this.byNode.clear();
      this.changes.forEach((c, i) => {
        const list = this.byNode.get(key(c.nodeId)) ?? [];
        list.push(i);
        this.byNode.set(key(c.nodeId), list);
      });
      this.compacted = through;
      return before - left.length;
    });
  }

  async close(): Promise<void> {}
}

/** A node's summary. */
export function info(n: DocNode): DocNodeInfo {
  return { nodeId: n.nodeId, version: n.version, createdVersion: n.createdVersion, createdMs: n.createdMs, updatedMs: n.updatedMs, clock: n.clock, metadata: n.metadata, sizeBytes: n.document.length };
}

/** FAILED_PRECONDITION for a watch that would start with too many snapshots. */
export function tooMany(count: number, limit: number): Error {
  return new QuantixError("failed_precondition", `${count} nodes match, more than the ${limit} a subscription may start with as snapshots; narrow node_ids or node_id_prefix, or list them (ListNodes) and subscribe with from_version`);
}
