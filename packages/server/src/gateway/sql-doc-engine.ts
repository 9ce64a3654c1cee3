import { QuantixError } from "@quantix/core";
import { WatchHub } from "../store/watch-hub.js";
import { CoalescedRun } from "../store/sql/coalesced-run.js";
import { big, type Param, type Queryable, type SqlDriver } from "../store/sql/sql-driver.js";
import { clockFromJson, clockToJson } from "./clock.js";
import type { DocChange, DocEngine, DocNode, DocNodeInfo, DocTx, NodeListQuery } from "./doc-engine.js";
import { tooMany } from "./memory-doc-engine.js";
import { BlobGone, INLINE_MAX_BYTES, type BlobStore } from "./blobs.js";

/** The channel a commit notifies (payload: the new version). */
export const DOC_CHANNEL = "quantix_dom_changes";
/** Changes read per query when following the history. */
const BATCH = 64;

/** A change's columns, without its diff. */
const CHANGE_COLUMNS = "version, node_id, type, created, diff_size, paths, clock, writer_clock, metadata, author, writer_id, committed_ms";
const NODE_COLUMNS = "node_id, version, created_version, created_ms, updated_ms, clock, metadata, size_bytes, since_checkpoint, since_checkpoint_bytes";
/** A value in its row, or a blob's ref. */
type Stored = { readonly inline: Uint8Array | null; readonly ref: string | null };

type ChangeRow = {
  version: unknown;
  node_id: Uint8Array;
  type: string;
  created: boolean;
  diff_size: unknown;
  diff?: Uint8Array | null;
  diff_ref?: string | null;
  paths: string[] | string;
  clock: Record<string, string> | string;
  writer_clock: Record<string, string> | string;
  metadata: Record<string, string> | string;
  author: string;
  writer_id: string;
  committed_ms: unknown;
};

type NodeRow = {
  node_id: Uint8Array;
  version: unknown;
  created_version: unknown;
  created_ms: unknown;
  updated_ms: unknown;
  clock: Record<string, string> | string;
  metadata: Record<string, string> | string;
  size_bytes: unknown;
  since_checkpoint: number;
  since_checkpoint_bytes: unknown;
  document?: Uint8Array | null;
  document_ref?: string | null;
};

const json = <T>(v: T | string): T => (typeof v === "string" ? (JSON.parse(v) as T) : v);
const bytes = (v: Uint8Array) => (v instanceof Uint8Array ? v : new Uint8Array(v as ArrayLike<number>));

function toChange(r: ChangeRow, diff: Uint8Array = new Uint8Array(0)): DocChange {
  return {
    version: big(r.version),
    nodeId: bytes(r.node_id),
    type: r.type === "DELETED" ? "DELETED" : "DIFF",
    diff,
    diffSize: Number(big(r.diff_size)),
    paths: json<string[]>(r.paths),
    clock: clockFromJson(json(r.clock)),
    writerClock: clockFromJson(json(r.writer_clock)),
    metadata: json<Record<string, string>>(r.metadata),
    author: r.author,
    writerId: r.writer_id,
    committedMs: Number(big(r.committed_ms)),
    created: r.created,
  };
}

function toNode(r: NodeRow, document: Uint8Array = new Uint8Array(0)): DocNode {
  return {
    nodeId: bytes(r.node_id),
    version: big(r.version),
    createdVersion: big(r.created_version),
    createdMs: Number(big(r.created_ms)),
    updatedMs: Number(big(r.updated_ms)),
    clock: clockFromJson(json(r.clock)),
    metadata: json<Record<string, string>>(r.metadata),
    document,
    sinceCheckpoint: r.since_checkpoint,
    sinceCheckpointBytes: Number(big(r.since_checkpoint_bytes)),
  };
}

function toInfo(r: NodeRow): DocNodeInfo {
  const n = toNode(r);
  return { nodeId: n.nodeId, version: n.version, createdVersion: n.createdVersion, createdMs: n.createdMs, updatedMs: n.updatedMs, clock: n.clock, metadata: n.metadata, sizeBytes: Number(big(r.size_bytes)) };
}

/**
 * Documents in SQL (migration 16), on the embedded database or PostgreSQL. A write's
 * transaction locks quantix_dom_meta first, so writes (from every replica) take versions
 * and commit in order; each notifies DOC_CHANNEL, and every replica follows the change
 * table into its hub (woken by the notification, or by a poll as a safety net): a reader
 * that reads `version > last` never skips a change that commits later.
 */
export class SqlDocEngine implements DocEngine {
  readonly hub: WatchHub<DocChange>;
  private last: bigint;
  private timer: NodeJS.Timeout | undefined;
  private unlisten: (() => Promise<void>) | undefined;
  private readonly reader: CoalescedRun;

  private constructor(
    private readonly db: SqlDriver,
    private readonly blobs: BlobStore,
    start: bigint,
    private readonly pollMs: number,
    private readonly onError: (err: unknown) => void,
  ) {
    this.last = start;
    this.hub = new WatchHub<DocChange>("document", () => this.last, { historySize: 64, maxBacklog: 1000 }, start);
    this.reader = new CoalescedRun(async () => (await this.readBatch()) === BATCH, onError);
  }

  get kind(): string {
    return this.db.kind;
  }

  /** Opens the engine on a migrated database and starts following its changes. */
  static async open(db: SqlDriver, blobs: BlobStore, options: { pollMs?: number; onError?: (err: unknown) => void } = {}): Promise<SqlDocEngine> {
    const { rows } = await db.query<{ version: unknown }>("SELECT version FROM quantix_dom_meta WHERE id = 1");
    const engine = new SqlDocEngine(db, blobs, big(rows[0]?.version ?? 0), options.pollMs ?? 1000, options.onError ?? (() => undefined));
    await engine.start();
    return engine;
  }

  private async start(): Promise<void> {
    try {
      this.unlisten = await this.db.listen(DOC_CHANNEL, () => void this.kick(), () => (this.unlisten = undefined));
    } catch (err) {
      this.onError(err);
    }
    this.timer = setInterval(() => {
      if (!this.unlisten) void this.db.listen(DOC_CHANNEL, () => void this.kick(), () => (this.unlisten = undefined)).then((u) => (this.unlisten = u), this.onError);
      void this.kick();
    }, this.pollMs);
    this.timer.unref();
  }

  private kick(): Promise<void> {
    return this.reader.kick();
  }


  private async readBatch(): Promise<number> {
    const { rows: m } = await this.db.query<{ compacted_version: unknown }>("SELECT compacted_version FROM quantix_dom_meta WHERE id = 1");
    const compacted = big(m[0]?.compacted_version ?? 0);
    if (this.last < compacted) {
      // Cut off from the database for longer than the retention: the changes in between
      // are gone. Subscribers learn it (and start again); they never get a gap.
      const err = new QuantixError("out_of_range", `this replica's view of the document history fell behind the retention (it had version ${this.last}, history now starts after ${compacted}); subscribe again with include_snapshots`);
      this.hub.reset(compacted, err);
      this.last = compacted;
      this.onError(err);
    }
    const rows = await this.withDiffs(this.db, `SELECT ${CHANGE_COLUMNS}, diff, diff_ref FROM quantix_dom_changes WHERE version > $1 ORDER BY version LIMIT $2`, [this.last, BATCH]);
    for (const change of rows) {
      this.last = change.version;
      this.hub.publish({ type: "MODIFIED", object: change, revision: change.version });
    }
    return rows.length;
  }

  async syncLatest(): Promise<bigint> {
    const { rows } = await this.db.query<{ version: unknown }>("SELECT version FROM quantix_dom_meta WHERE id = 1");
    const latest = big(rows[0]?.version ?? 0);
    for (let i = 0; i < 3 && this.last < latest; i++) await this.kick();
    if (this.last < latest) throw new QuantixError("unavailable", `could not read the document history up to version ${latest}: ${String(this.reader.failure ?? "unknown error")}; retry`);
    return latest;
  }

  async transact<R>(fn: (tx: DocTx) => Promise<R>): Promise<R> {
    const afterCommit: (() => Promise<void>)[] = [];
    const out = await this.db.transaction(async (q) => {
      const { rows } = await q.query<{ version: unknown }>("SELECT version FROM quantix_dom_meta WHERE id = 1 FOR UPDATE");
      const start = big(rows[0]?.version ?? 0);
      let next = start;
      const result = await fn(this.tx(q, () => ++next, afterCommit));
      if (next > start) {
        await q.query("UPDATE quantix_dom_meta SET version = $1 WHERE id = 1", [next]);
        await q.query("SELECT pg_notify($1, $2)", [DOC_CHANNEL, next.toString()]);
      }
      return { result, wrote: next > start };
    });
    // Blobs no row references any more (files) go once the commit has made that true.
    for (const f of afterCommit) await f().catch(this.onError);
    // This replica's own writes reach its watchers without waiting for the notification.
    if (out.wrote) void this.kick();
    return out.result;
  }

  /** Keeps a value in its row, or (large) as a blob. */
  private async store(q: Queryable, value: Uint8Array): Promise<Stored> {
    return value.length <= INLINE_MAX_BYTES ? { inline: value, ref: null } : { inline: null, ref: await this.blobs.put(q, value) };
  }

  private async load(q: Queryable, inline: Uint8Array | null | undefined, ref: string | null | undefined): Promise<Uint8Array> {
    if (ref) return this.blobs.get(q, ref);
    return inline ? bytes(inline) : new Uint8Array(0);
  }

  /** Drops a blob that no row references any more. */
  private async release(q: Queryable, ref: string | null | undefined, afterCommit: (() => Promise<void>)[]): Promise<void> {
    if (!ref) return;
    const { rows } = await q.query(
      `SELECT 1 WHERE EXISTS (SELECT 1 FROM quantix_dom_nodes WHERE document_ref = $1) OR EXISTS (SELECT 1 FROM quantix_dom_changes WHERE diff_ref = $1) OR EXISTS (SELECT 1 FROM quantix_dom_changes WHERE checkpoint_ref = $1)`,
      [ref],
    );
    if (rows.length > 0) return;
    const later = await this.blobs.drop(q, ref);
    if (later) afterCommit.push(later);
  }

  /** Changes of a query that selects CHANGE_COLUMNS, diff and diff_ref, with their diffs. */
  private async withDiffs(q: Queryable, sql: string, params: Param[]): Promise<DocChange[]> {
    const { rows } = await q.query<ChangeRow>(sql, params);
    const out: DocChange[] = [];
    for (const r of rows) out.push(toChange(r, await this.load(q, r.diff, r.diff_ref)));
    return out;
  }

  private tx(q: Queryable, next: () => bigint, afterCommit: (() => Promise<void>)[]): DocTx {
    return {
      node: (id) => this.readNode(q, id),
      changesNewestFirst: async (id, since, before, limit) => {
        const { rows } = await q.query<ChangeRow>(
          `SELECT ${CHANGE_COLUMNS} FROM quantix_dom_changes WHERE node_id = $1 AND version >= $2 AND version < $3 ORDER BY version DESC LIMIT $4`,
          [id, since, before, limit],
        );
        return rows.map((r) => toChange(r));
      },
      nextVersion: async () => next(),
      putNode: async (n) => {
        const { rows: was } = await q.query<{ document_ref: string | null }>("SELECT document_ref FROM quantix_dom_nodes WHERE node_id = $1", [n.nodeId]);
        const doc = await this.store(q, n.document);
        await q.query(
          `INSERT INTO quantix_dom_nodes (${NODE_COLUMNS}, document, document_ref) VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10, $11, $12)
           ON CONFLICT (node_id) DO UPDATE SET version = EXCLUDED.version, created_version = EXCLUDED.created_version, created_ms = EXCLUDED.created_ms,
             updated_ms = EXCLUDED.updated_ms, clock = EXCLUDED.clock, metadata = EXCLUDED.metadata, size_bytes = EXCLUDED.size_bytes,
             since_checkpoint = EXCLUDED.since_checkpoint, since_checkpoint_bytes = EXCLUDED.since_checkpoint_bytes, document = EXCLUDED.document, document_ref = EXCLUDED.document_ref`,
          [n.nodeId, n.version, n.createdVersion, n.createdMs, n.updatedMs, clockToJson(n.clock), JSON.stringify(n.metadata), n.document.length, n.sinceCheckpoint, n.sinceCheckpointBytes, doc.inline, doc.ref],
        );
        if (was[0]?.document_ref && was[0].document_ref !== doc.ref) await this.release(q, was[0].document_ref, afterCommit);
      },
      removeNode: async (id) => {
        const { rows } = await q.query<{ document_ref: string | null }>("DELETE FROM quantix_dom_nodes WHERE node_id = $1 RETURNING document_ref", [id]);
        await this.release(q, rows[0]?.document_ref, afterCommit);
      },
      addChange: async (c, checkpoint) => {
        const diff = await this.store(q, c.diff);
        const cp = checkpoint ? await this.store(q, checkpoint) : { inline: null, ref: null };
        const params: Param[] = [c.version, c.nodeId, c.type, c.created, diff.inline, diff.ref, c.diff.length, JSON.stringify(c.paths), clockToJson(c.clock), clockToJson(c.writerClock), JSON.stringify(c.metadata), c.author, c.writerId, c.committedMs, cp.inline, cp.ref];
        await q.query(
          `INSERT INTO quantix_dom_changes (version, node_id, type, created, diff, diff_ref, diff_size, paths, clock, writer_clock, metadata, author, writer_id, committed_ms, checkpoint, checkpoint_ref)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::jsonb, $10::jsonb, $11::jsonb, $12, $13, $14, $15, $16)`,
          params,
        );
      },
    };
  }

  private async readNode(q: Queryable, id: Uint8Array): Promise<DocNode | undefined> {
    const { rows } = await q.query<NodeRow>(`SELECT ${NODE_COLUMNS}, document, document_ref FROM quantix_dom_nodes WHERE node_id = $1`, [id]);
    return rows[0] ? toNode(rows[0], await this.load(q, rows[0].document, rows[0].document_ref)) : undefined;
  }

  async node(id: Uint8Array): Promise<DocNode | undefined> {
    // The row and its blob from one snapshot; a blob file replaced meanwhile is read again.
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.db.transaction((q) => this.readNode(q, id), { repeatableRead: true });
      } catch (err) {
        if (!(err instanceof BlobGone) || attempt >= 4) throw err;
      }
    }
  }

  async lastChange(id: Uint8Array, version: bigint): Promise<DocChange | undefined> {
    const { rows } = await this.db.query<ChangeRow>(`SELECT ${CHANGE_COLUMNS} FROM quantix_dom_changes WHERE node_id = $1 AND version <= $2 ORDER BY version DESC LIMIT 1`, [id, version]);
    return rows[0] ? toChange(rows[0]) : undefined;
  }

  rebuildFrom(id: Uint8Array, version: bigint): Promise<{ base: Uint8Array | undefined; diffs: Uint8Array[] }> {
    // One snapshot: the nearest checkpoint (or creation) and the diffs after it.
    return this.db.transaction(
      async (q) => {
        const { rows: start } = await q.query<{ version: unknown; created: boolean; checkpoint: Uint8Array | null; checkpoint_ref: string | null }>(
          `SELECT version, created, checkpoint, checkpoint_ref FROM quantix_dom_changes WHERE node_id = $1 AND version <= $2 AND (checkpoint IS NOT NULL OR checkpoint_ref IS NOT NULL OR created) ORDER BY version DESC LIMIT 1`,
          [id, version],
        );
        const from = start[0];
        if (!from) return { base: undefined, diffs: [] };
        const hasCheckpoint = from.checkpoint !== null || from.checkpoint_ref !== null;
        const base = hasCheckpoint ? await this.load(q, from.checkpoint, from.checkpoint_ref) : undefined;
        // From a checkpoint: the diffs after it; from a creation: its own diff too.
        const { rows } = await q.query<{ diff: Uint8Array | null; diff_ref: string | null }>(
          `SELECT diff, diff_ref FROM quantix_dom_changes WHERE node_id = $1 AND version ${hasCheckpoint ? ">" : ">="} $2 AND version <= $3 AND type = 'DIFF' ORDER BY version`,
          [id, big(from.version), version],
        );
        const diffs: Uint8Array[] = [];
        for (const r of rows) diffs.push(await this.load(q, r.diff, r.diff_ref));
        return { base, diffs };
      },
      { repeatableRead: true },
    );
  }

  async listNodes(q: NodeListQuery): Promise<{ nodes: DocNodeInfo[]; total: number }> {
    const params: Param[] = [];
    const where: string[] = [];
    if (q.prefix.length > 0) {
      params.push(q.prefix);
      // substring on bytea: the first bytes equal the prefix.
      where.push(`substring(node_id from 1 for ${q.prefix.length}) = $${params.length}`);
    }
    const total = q.count ? Number(big((await this.db.query<{ n: unknown }>(`SELECT count(*) AS n FROM quantix_dom_nodes ${where.length ? `WHERE ${where.join(" AND ")}` : ""}`, params)).rows[0]?.n ?? 0)) : -1;
    const cmp = q.desc ? "<" : ">";
    const dir = q.desc ? "DESC" : "ASC";
    const page = [...where];
    const pageParams = [...params];
    if (q.after) {
      if (q.order === "updated_at") {
        pageParams.push(q.after.updatedMs, q.after.nodeId);
        page.push(`(updated_ms, node_id) ${cmp} ($${pageParams.length - 1}, $${pageParams.length})`);
      } else {
        pageParams.push(q.after.nodeId);
        page.push(`node_id ${cmp} $${pageParams.length}`);
      }
    }
    pageParams.push(q.limit);
    const order = q.order === "updated_at" ? `updated_ms ${dir}, node_id ${dir}` : `node_id ${dir}`;
    const { rows } = await this.db.query<NodeRow>(`SELECT ${NODE_COLUMNS} FROM quantix_dom_nodes ${page.length ? `WHERE ${page.join(" AND ")}` : ""} ORDER BY ${order} LIMIT $${pageParams.length}`, pageParams);
    return { nodes: rows.map(toInfo), total };
  }

  async listVersions(id: Uint8Array, desc: boolean, after: bigint | undefined, limit: number): Promise<{ changes: DocChange[]; total: number }> {
    // A base kept at or below the mark is not a version one can read any more.
    const { rows: n } = await this.db.query<{ n: unknown }>("SELECT count(*) AS n FROM quantix_dom_changes WHERE node_id = $1 AND version > (SELECT compacted_version FROM quantix_dom_meta WHERE id = 1)", [id]);
    const params: Param[] = [id];
    let cond = "";
    if (after !== undefined) {
      params.push(after);
      cond = `AND version ${desc ? "<" : ">"} $2`;
    }
    params.push(limit);
    const { rows } = await this.db.query<ChangeRow>(`SELECT ${CHANGE_COLUMNS} FROM quantix_dom_changes WHERE node_id = $1 AND version > (SELECT compacted_version FROM quantix_dom_meta WHERE id = 1) ${cond} ORDER BY version ${desc ? "DESC" : "ASC"} LIMIT $${params.length}`, params);
    return { changes: rows.map((r) => toChange(r)), total: Number(big(n[0]?.n ?? 0)) };
  }

  changesAfter(after: bigint, through: bigint, limit: number): Promise<DocChange[]> {
    return this.db.transaction((q) => this.withDiffs(q, `SELECT ${CHANGE_COLUMNS}, diff, diff_ref FROM quantix_dom_changes WHERE version > $1 AND version <= $2 ORDER BY version LIMIT $3`, [after, through, limit]), { repeatableRead: true });
  }

  snapshotNodes(match: (id: Uint8Array) => boolean, sql: { ids: Uint8Array[]; prefix: Uint8Array | undefined }, limit: number): Promise<{ version: bigint; nodes: DocNode[] }> {
    return this.db.transaction(
      async (q) => {
        const { rows: m } = await q.query<{ version: unknown }>("SELECT version FROM quantix_dom_meta WHERE id = 1");
        const where: string[] = [];
        const params: Param[] = [];
        if (sql.prefix) {
          params.push(sql.prefix);
          where.push(`substring(node_id from 1 for ${sql.prefix.length}) = $1`);
        }
        for (const id of sql.ids) {
          params.push(id);
          where.push(`node_id = $${params.length}`);
        }
        params.push(limit + 1);
        const { rows } = await q.query<NodeRow>(`SELECT ${NODE_COLUMNS}, document, document_ref FROM quantix_dom_nodes ${where.length ? `WHERE ${where.join(" OR ")}` : ""} ORDER BY node_id LIMIT $${params.length}`, params);
        if (rows.length > limit) throw tooMany(rows.length, limit);
        const nodes: DocNode[] = [];
        for (const r of rows) if (match(bytes(r.node_id))) nodes.push(toNode(r, await this.load(q, r.document, r.document_ref)));
        return { version: big(m[0]?.version ?? 0), nodes };
      },
      { repeatableRead: true },
    );
  }

  async compactionBases(after: bigint, through: bigint) {
    const { rows } = await this.db.query<{ node_id: Uint8Array; version: unknown; type: string; has_checkpoint: boolean }>(
      `SELECT DISTINCT ON (node_id) node_id, version, type, (checkpoint IS NOT NULL OR checkpoint_ref IS NOT NULL) AS has_checkpoint
       FROM quantix_dom_changes WHERE version > $1 AND version <= $2 ORDER BY node_id, version DESC`,
      [after, through],
    );
    return rows.map((r) => ({ nodeId: bytes(r.node_id), version: big(r.version), type: r.type === "DELETED" ? ("DELETED" as const) : ("DIFF" as const), hasCheckpoint: r.has_checkpoint }));
  }

  async setCheckpoint(version: bigint, document: Uint8Array): Promise<void> {
    await this.db.transaction(async (q) => {
      const cp = await this.store(q, document);
      await q.query("UPDATE quantix_dom_changes SET checkpoint = $2, checkpoint_ref = $3 WHERE version = $1 AND checkpoint IS NULL AND checkpoint_ref IS NULL", [version, cp.inline, cp.ref]);
    });
  }

  async compactTo(after: bigint, through: bigint, kept: readonly bigint[]): Promise<number> {
    const afterCommit: (() => Promise<void>)[] = [];
    const removed = await this.db.transaction(async (q) => {
      const { rows: m } = await q.query<{ compacted_version: unknown }>("SELECT compacted_version FROM quantix_dom_meta WHERE id = 1 FOR UPDATE");
      if (big(m[0]?.compacted_version ?? 0) !== after) return -1;
      const { rows: gone } = await q.query<{ diff_ref: string | null; checkpoint_ref: string | null }>(
        `DELETE FROM quantix_dom_changes c WHERE c.version <= $2
           AND c.node_id IN (SELECT node_id FROM quantix_dom_changes WHERE version > $1 AND version <= $2)
           AND NOT (c.version = ANY($3::bigint[]))
         RETURNING c.diff_ref, c.checkpoint_ref`,
        [after, through, kept.map(String)],
      );
      const refs = new Set<string>();
      for (const g of gone) for (const r of [g.diff_ref, g.checkpoint_ref]) if (r) refs.add(r);
      for (const r of refs) await this.release(q, r, afterCommit);
      await q.query("UPDATE quantix_dom_meta SET compacted_version = $1 WHERE id = 1", [through]);
      return gone.length;
    });
    for (const f of afterCommit) await f().catch(this.onError);
    return removed;
  }

  async compactedVersion(): Promise<bigint> {
    const { rows } = await this.db.query<{ v: unknown }>("SELECT compacted_version AS v FROM quantix_dom_meta WHERE id = 1");
    return big(rows[0]?.v ?? 0);
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.reader.current;
    await this.unlisten?.();
    this.unlisten = undefined;
  }
}
