import { decodeBinary, encodeChecked, encodeFrozen } from "@quantix/core";
import {
  copyMessage,
  checkBase,
  deepFreeze,
  fieldOf,
  notFound,
  planWrite,
  PushIterable,
  QuantixError,
  shareUnchanged,
  type ChangeEvent,
  type Clock,
  type Collection,
  type Kind,
  type ListPage,
  type PlannedWrite,
  type Query,
  type Resource,
  type WatchEvent,
  type WriteOptions,
  whereFieldOf,
} from "@quantix/core";
import { WatchHub, type WatchHubLimits } from "../watch-hub.js";
import type { ChangeTailer } from "./change-tailer.js";
import { sqlType } from "./sql-columns.js";
import { DecodedObjects } from "./decoded-objects.js";
import { RecentObjects } from "./recent-objects.js";
import { RowQueue } from "./row-queue.js";
import { big, type Param, type SqlDriver } from "./sql-driver.js";

/**
 * Optimistic attempts of an update or delete before it takes the store's write lock (and
 * then cannot conflict). Writers of this process are queued per row (RowQueue), so only
 * another replica or a multi-object commit can make an attempt lose.
 */
const OPTIMISTIC_ATTEMPTS = 3;

/** How a collection reaches the rest of its store. */
export interface SqlCollectionContext {
  readonly db: SqlDriver;
  readonly tailer: ChangeTailer;
  /** The store's group commit (group-commit.ts): the object as stored, or undefined when `base` no longer matched. */
  readonly writes: { submit(coll: SqlCollection<Resource>, plan: PlannedWrite, base: bigint | undefined): Promise<Resource | undefined> };
  readonly clock: Clock;
  readonly limits: WatchHubLimits;
  /**
   * Whether gets may be served from the objects this collection's changes published last
   * (RecentObjects): only when no other process writes the database (the embedded one), so
   * that every change is published here before its writer is answered.
   */
  readonly recentGets: boolean;
  /** Applies writes under the store's write lock (SqlStore.commit): cannot lose to a concurrent writer. */
  readonly lockedCommit: (ops: { op: "create" | "update" | "delete"; kind: Kind<Resource>; object: Resource; base?: bigint | undefined; mutate?: (current: Resource) => Resource | undefined }[], actor: string | undefined) => Promise<Resource[]>;
}

/**
 * A Collection over one SQL table, described by the kind's declaration. A single write
 * goes through the store's group commit (group-commit.ts): alone it is one statement (one
 * round trip, atomic) that takes the next revision from quantix_meta (locking it until
 * commit), writes the row conditionally on its resource_version, appends to
 * quantix_changes and notifies; writes arriving while a commit is in flight share the next
 * transaction and COMMIT. Updates and deletes of one row from this process
 * run one at a time (RowQueue), so a hot row costs one connection, not the pool; one that
 * keeps losing to other replicas falls back to the store's write lock, so that a write
 * without an expected version never fails for contention. Reads decode the protobuf bytes into deeply frozen objects, as the
 * memory store hands out. Watch reads older history from quantix_changes, then joins the
 * live hub.
 */
export class SqlCollection<T extends Resource> implements Collection<T> {
  readonly hub: WatchHub<T>;
  /** This process's updates and deletes, one at a time per row. */
  readonly rows = new RowQueue();

  constructor(
    readonly kind: Kind<T>,
    private readonly c: SqlCollectionContext,
  ) {
    this.hub = new WatchHub(kind.name, () => c.tailer.revision, c.limits, c.tailer.revision);
    this.recent = c.recentGets ? new RecentObjects<T>() : undefined;
    const recent = this.recent;
    c.tailer.register(kind.name, this.hub as WatchHub<unknown>, (data, version) => this.decode(data, version), recent ? (type, object) => recent.seen(type, object as T | undefined) : undefined);
  }

  /** The objects the latest changes published (embedded store only: recentGets). */
  private readonly recent: RecentObjects<T> | undefined;

  /** The objects reads decoded last, reused while their rows are unchanged. */
  private readonly decoded = new DecodedObjects<T>();

  private get any(): Kind<Resource> {
    return this.kind as unknown as Kind<Resource>;
  }

  async create(obj: T, options?: WriteOptions): Promise<T> {
    const plan = planWrite(this.any, "create", this.copy(obj), undefined, { actor: options?.actor, nowMs: this.c.clock.now() })!;
    // A create matches no row only by failing, so there is always a stored object.
    return (await this.write(plan, undefined))!;
  }

  async get(id: string): Promise<T | undefined> {
    const known = this.recent?.get(id);
    if (known) return known;
    const { rows } = await this.c.db.query<{ hex: string; resource_version: unknown }>(`SELECT encode(data, 'hex') AS hex, resource_version FROM ${this.kind.table} WHERE id = $1`, [id], PREPARED);
    return rows[0] ? this.decodeRow(id, rows[0].hex, rows[0].resource_version) : undefined;
  }

  async list(q: Query): Promise<ListPage<T>> {
    const { order, after, limit, countTotal } = q;
    const params: Param[] = [];
    const conds = this.conditions(q, params);
    const where = conds.length > 0 ? `WHERE ${conds.join(" AND ")}` : "";
    const f = fieldOf(this.kind, order.field);
    const dir = order.desc ? "DESC" : "ASC";
    const p = [...params];
    const c = [...conds];
    if (after) {
      p.push(after.key as Param, after.id);
      c.push(`(${f.column}, id) ${order.desc ? "<" : ">"} ($${p.length - 1}::${sqlType(f.type)}, $${p.length}::text)`);
    }
    p.push(limit + 1);
    const page = `FROM ${this.kind.table} ${c.length > 0 ? `WHERE ${c.join(" AND ")}` : ""} ORDER BY ${f.column} ${dir}, id ${dir} LIMIT $${p.length}`;
    const total = countTotal === false ? "-1" : `(SELECT count(*) FROM ${this.kind.table} ${where})`;
    // One statement, so the count, the page and the revision come from one snapshot: the
    // page's rows, each with the revision and the count (subqueries evaluated once; no
    // count column when it is not asked for). The bytes are read as hex text, which the
    // decoded objects compare as they are (DecodedObjects.get).
    let rows: ListRow[] = [];
    if (limit > 0) {
      const counted = countTotal === false ? "" : `${total} AS total, `;
      ({ rows } = await this.c.db.query<ListRow>(`SELECT (SELECT m.revision FROM quantix_meta m WHERE m.id = 1) AS revision, ${counted}id, encode(data, 'hex') AS hex, resource_version ${page}`, p, PREPARED));
    }
    if (rows.length === 0) {
      // No rows to carry the revision and the count: the statement that returns them whatever the page.
      ({ rows } = await this.c.db.query<ListRow>(
        `SELECT m.revision, n.total, page.id, page.hex, page.resource_version
         FROM quantix_meta m
         CROSS JOIN (SELECT ${total} AS total) n
         LEFT JOIN LATERAL (SELECT id, encode(data, 'hex') AS hex, resource_version ${page}) page ON ${limit > 0 ? "true" : "false"}
         WHERE m.id = 1`,
        p,
      ));
    }
    const found = rows.filter((r) => r.hex !== null);
    return {
      items: found.slice(0, limit).map((r) => this.decodeRow(r.id!, r.hex!, r.resource_version)),
      totalCount: Number(big(rows[0]?.total ?? -1)),
      revision: big(rows[0]?.revision ?? 0),
      hasMore: found.length > limit,
    };
  }

  update(id: string, mutate: (current: T) => T | undefined, options?: WriteOptions): Promise<T> {
    return this.rows.run(id, () => this.updateNow(id, mutate, options));
  }

  private async updateNow(id: string, mutate: (current: T) => T | undefined, options?: WriteOptions): Promise<T> {
    for (let attempt = 1; attempt <= OPTIMISTIC_ATTEMPTS; attempt++) {
      const current = await this.mustGet(id);
      checkBase(this.any, current, options?.expectedVersion);
      const next = mutate(this.copy(current));
      if (next === undefined) return current;
      if (next.id !== id) throw new QuantixError("internal", `${this.kind.name} update changed the id`);
      const plan = planWrite(this.any, "update", next, current, { actor: options?.actor, nowMs: this.c.clock.now() })!;
      const stored = await this.write(plan, current.resourceVersion);
      if (stored) return stored;
    }
    // Others keep writing this object between our read and our write: take the lock.
    const [stored] = await this.c.lockedCommit([{ op: "update", kind: this.any, object: { id, resourceVersion: options?.expectedVersion ?? 0n }, base: options?.expectedVersion, mutate: mutate as (c: Resource) => Resource | undefined }], options?.actor);
    return stored as T;
  }

  delete(id: string, check?: (current: T) => void, options?: WriteOptions): Promise<T> {
    return this.rows.run(id, () => this.deleteNow(id, check, options));
  }

  private async deleteNow(id: string, check?: (current: T) => void, options?: WriteOptions): Promise<T> {
    for (let attempt = 1; attempt <= OPTIMISTIC_ATTEMPTS; attempt++) {
      const current = await this.mustGet(id);
      checkBase(this.any, current, options?.expectedVersion);
      check?.(this.copy(current));
      const plan = planWrite(this.any, "delete", this.copy(current), current, { actor: options?.actor, nowMs: this.c.clock.now() });
      if (!plan) return current;
      const stored = await this.write(plan, current.resourceVersion);
      if (stored) return stored;
    }
    const [stored] = await this.c.lockedCommit(
      [{ op: "delete", kind: this.any, object: { id, resourceVersion: options?.expectedVersion ?? 0n }, base: options?.expectedVersion, mutate: (cur) => (check?.(this.copy(cur as T)), cur) }],
      options?.actor,
    );
    return stored as T;
  }

  watch(fromRevision: bigint, signal: AbortSignal): AsyncIterable<WatchEvent<T>> {
    return new PushIterable<WatchEvent<T>>((sink) => {
      let unsubscribe: (() => void) | undefined;
      let done = signal.aborted;
      const onAbort = () => {
        done = true;
        unsubscribe?.();
        sink.end();
      };
      signal.addEventListener("abort", onAbort, { once: true });
      void (async () => {
        try {
          await this.c.tailer.syncFrom(fromRevision);
          let cursor = fromRevision;
          // History older than the hub's is read from the table, a page at a time.
          while (!done && cursor < this.hub.oldestResumable) {
            // The hub may compact further while the page is read: continue from the bound
            // this page was read up to, never from a newer one (that would skip revisions).
            const through = this.hub.oldestResumable;
            const page = await this.history(cursor, through);
            if (page.length > 0) sink.push(page);
            cursor = page.length === HISTORY_PAGE ? page[page.length - 1]!.revision : through;
          }
          if (!done) unsubscribe = this.hub.subscribe(cursor, sink);
        } catch (err) {
          sink.fail(err);
        }
      })();
      return () => {
        done = true;
        unsubscribe?.();
        signal.removeEventListener("abort", onAbort);
      };
    }, this.hub.maxBacklog);
  }

  changesOf(id: string, listener: (event: ChangeEvent<T> | undefined) => void): () => void {
    return this.hub.changesOf(id, listener);
  }

  /** A private, changeable copy of an object (copyMessage: encode checks a caller's object as it is stored). */
  copy(o: T): T {
    return copyMessage(o);
  }

  /**
   * An object's bytes as a row or a change stores them. A new state written by a single
   * write is encoded before its revision is known (the statement takes it), so its bytes
   * carry no resource_version: it lives in its own column, and in the change's revision,
   * which decode sets. A stored object (frozen, at its revision: a locked commit's new
   * states, and every previous state) is encoded whole, once (encodeFrozen): its answer
   * and its watch events send those same bytes.
   */
  encode(o: Resource): Uint8Array {
    // What a caller wrote is checked (every string valid UTF-16, every field of its type)
    // before it is stored, as protobuf-es's clone checks it; the bytes are its toBinary's (ADR 0014).
    return Object.isFrozen(o) ? encodeFrozen(this.kind.schema, o) : encodeChecked(this.kind.schema, o, "resourceVersion");
  }

  decode(data: Uint8Array, version: bigint): T {
    const o = decodeBinary(this.kind.schema, data) as unknown as T;
    o.resourceVersion = version;
    return deepFreeze(o);
  }

  /** A row read (list, get) as its object: the one decoded before while the row is unchanged (DecodedObjects). */
  private decodeRow(id: string, data: string, version: unknown): T {
    return this.decoded.get(id, data, big(version), (d, v) => this.decode(d, v));
  }

  /** A frozen copy of `o` at `revision`, sharing what it did not change with `previous` (the version it replaces). */
  withVersion(o: T, revision: bigint, previous?: Resource): T {
    const copy = this.copy(o);
    copy.resourceVersion = revision;
    // The change history keeps both versions: what did not change is kept once.
    if (previous) shareUnchanged(copy, previous);
    return deepFreeze(copy);
  }

  /** SQL conditions of a query's filter, adding their parameters to `params` ($n placeholders). */
  private conditions(q: Query, params: Param[]): string[] {
    const out: string[] = [];
    for (const name in q.where ?? {}) {
      const f = whereFieldOf(this.kind, name);
      const want = q.where![name]!;
      if (Array.isArray(want)) out.push(`${f.column} = ANY($${params.push(want as (string | number)[])}::${sqlType(f.type)}[])`);
      else out.push(`${f.column} = $${params.push(want as Param)}`);
    }
    for (const name in q.range ?? {}) {
      const f = fieldOf(this.kind, name);
      const r = q.range![name]!;
      if (r.min !== undefined) out.push(`${f.column} >= $${params.push(r.min)}`);
      if (r.max !== undefined) out.push(`${f.column} < $${params.push(r.max)}`);
    }
    if (q.labels && Object.keys(q.labels).length > 0) {
      // labels @> {...} (all must match), served by the GIN index.
      if (!this.kind.labels) out.push("false");
      else out.push(`labels @> $${params.push(JSON.stringify(q.labels))}::jsonb`);
    }
    return out;
  }

  /** Commits one planned write (group-commit.ts): the object as stored, or undefined when `base` no longer matched. */
  private async write(plan: PlannedWrite, base: bigint | undefined): Promise<T | undefined> {
    return (await this.c.writes.submit(this as unknown as SqlCollection<Resource>, plan, base)) as T | undefined;
  }

  /** Changes of this kind in (after, through], at most HISTORY_PAGE; OUT_OF_RANGE if compacted. */
  private async history(after: bigint, through: bigint): Promise<WatchEvent<T>[]> {
    return this.c.db.transaction(
      async (tx) => {
        const meta = await tx.query<{ compacted_revision: unknown }>("SELECT compacted_revision FROM quantix_meta WHERE id = 1");
        const compacted = big(meta.rows[0]?.compacted_revision ?? 0);
        if (after < compacted) {
          throw new QuantixError("out_of_range", `${this.kind.name} watch: revision ${after} has been compacted (history starts after ${compacted}); list again and watch from the list's resource_version`);
        }
        const { rows } = await tx.query<{ revision: unknown; type: string; data: Uint8Array; previous: Uint8Array | null; previous_version: unknown }>(
          "SELECT revision, type, data, previous, previous_version FROM quantix_changes WHERE kind = $1 AND revision > $2 AND revision <= $3 ORDER BY revision LIMIT $4",
          [this.kind.name, after, through, HISTORY_PAGE],
        );
        return rows.map((r) => ({
          type: r.type as "ADDED" | "MODIFIED" | "DELETED",
          object: this.decode(r.data, big(r.revision)),
          previous: r.previous ? this.decode(r.previous, big(r.previous_version)) : undefined,
          revision: big(r.revision),
        }));
      },
      { repeatableRead: true },
    );
  }

  private async mustGet(id: string): Promise<T> {
    const o = await this.get(id);
    if (!o) throw notFound(this.kind.name, id);
    return o;
  }
}

/** A unique violation as ALREADY_EXISTS in the kind's words; anything else unchanged. */
export function translateSqlError(kind: Kind<Resource>, err: unknown, subject: Resource): unknown {
  const e = err as { code?: string; constraint?: string };
  if (e.code === "23505") {
    if (kind.unique && e.constraint === `${kind.table}_unique_key`) return new QuantixError("already_exists", kind.unique.describe(subject));
    return new QuantixError("already_exists", `${kind.name} '${subject.id}' already exists`);
  }
  return err;
}

/** A row of a page statement (SqlCollection.list); the page's columns are null when it has no rows. */
interface ListRow extends Record<string, unknown> {
  revision: unknown;
  /** Absent when the count was not asked for. */
  total?: unknown;
  id: string | null;
  /** The stored bytes in hex. */
  hex: string | null;
  resource_version: unknown;
}

/**
 * Gets and pages: few statement texts (per kind, filter, order and cursor), run again and
 * again. Parsed and planned once per connection: with decoded objects reused, planning
 * the page statement was a large part of a page's database time.
 */
const PREPARED = { prepare: true } as const;

/** Rows of history read per query when a watcher resumes from before the hub's history. */
const HISTORY_PAGE = 1000;
