import { clone, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { deepFreeze, notFound, PushIterable, QuantixError, type ListPage, type Order, type Cursor, type Repository, type WatchEvent, type WriteOptions } from "@quantix/core";
import { WatchHub, type WatchHubLimits } from "../watch-hub.js";
import type { ChangeTailer } from "./change-tailer.js";
import { CHANGES_CHANNEL } from "./change-tailer.js";
import type { Compactor } from "./compactor.js";
import { big, type Param, type SqlDriver } from "./sql-driver.js";

/** How a kind of object maps to its table. Column names here are constants, never input. */
export interface TableSpec<S extends DescMessage, Q> {
  /** The kind, as in messages and in quantix_changes.kind. */
  readonly kind: string;
  readonly table: string;
  readonly schema: S;
  readonly id: (o: MessageShape<S>) => string;
  /** The unique constraint on the natural key, and how to describe a clash with it. */
  readonly uniqueConstraint: string;
  readonly describeClash: (o: MessageShape<S>) => string;
  /** The indexed columns and their values (besides id, resource_version and data). */
  readonly columns: (o: MessageShape<S>) => Record<string, Param>;
  /** SQL conditions for a query, adding their parameters to `params` ($n placeholders). */
  readonly where: (q: Q, params: Param[]) => string[];
  /** The column and SQL type of an order field. */
  readonly orderColumn: (field: string) => { readonly column: string; readonly type: "text" | "bigint" };
  readonly pageOf: (q: Q) => { readonly order: Order<string>; readonly after?: Cursor | undefined; readonly limit: number; readonly countTotal?: boolean };
}

/** Conflicting writes retried before giving up with ABORTED (only without an expected version). */
const MAX_RETRIES = 10;

type Versioned = { resourceVersion: bigint };

/**
 * A Repository over one SQL table. Each write runs in one transaction that takes the next
 * revision from quantix_meta (locking it until commit), writes the row conditionally on
 * its resource_version (optimistic concurrency in SQL), appends to quantix_changes, and
 * notifies. Reads decode the protobuf bytes into deeply frozen objects, as the memory store
 * hands out. Watch reads older history from quantix_changes, then joins the live hub.
 */
export class SqlCollection<S extends DescMessage, Q> implements Repository<MessageShape<S>, Q> {
  readonly hub: WatchHub<MessageShape<S>>;

  constructor(
    private readonly spec: TableSpec<S, Q>,
    private readonly db: SqlDriver,
    private readonly tailer: ChangeTailer,
    private readonly compactor: Compactor,
    limits: WatchHubLimits,
  ) {
    this.hub = new WatchHub(spec.kind, () => tailer.revision, limits, tailer.revision);
    tailer.register(spec.kind, this.hub as WatchHub<unknown>, (data, version) => this.decode(data, version));
  }

  async create(obj: MessageShape<S>): Promise<MessageShape<S>> {
    const data = this.encode(obj);
    const cols = { id: this.spec.id(obj), ...this.spec.columns(obj) };
    const names = Object.keys(cols);
    const params: Param[] = [...Object.values(cols), data];
    const revision = await this.write(
      `row AS (INSERT INTO ${this.spec.table} (${names.join(", ")}, resource_version, data)
         SELECT ${names.map((_, i) => `$${i + 1}`).join(", ")}, rev.revision, $${names.length + 1} FROM rev RETURNING resource_version AS revision)`,
      params,
      "ADDED",
      `$${names.length + 1}`,
      ["NULL", "NULL"],
      obj,
    );
    // A create matches no row only by failing, so there is always a revision.
    return this.withVersion(obj, revision!);
  }

  async get(id: string): Promise<MessageShape<S> | undefined> {
    const { rows } = await this.db.query<{ data: Uint8Array; resource_version: unknown }>(`SELECT data, resource_version FROM ${this.spec.table} WHERE id = $1`, [id]);
    return rows[0] ? this.decode(rows[0].data, big(rows[0].resource_version)) : undefined;
  }

  async list(q: Q): Promise<ListPage<MessageShape<S>>> {
    const { order, after, limit, countTotal } = this.spec.pageOf(q);
    const params: Param[] = [];
    const conds = this.spec.where(q, params);
    const where = conds.length > 0 ? `WHERE ${conds.join(" AND ")}` : "";
    const { column, type } = this.spec.orderColumn(order.field);
    const dir = order.desc ? "DESC" : "ASC";
    // One statement, so the count, the page and the revision come from one snapshot.
    const p = [...params];
    const c = [...conds];
    if (after) {
      p.push(after.key as Param, after.id);
      c.push(`(${column}, id) ${order.desc ? "<" : ">"} ($${p.length - 1}::${type}, $${p.length}::text)`);
    }
    p.push(limit + 1);
    const sql = `SELECT m.revision, n.total, page.data, page.resource_version
      FROM quantix_meta m
      CROSS JOIN (${countTotal === false ? "SELECT -1 AS total" : `SELECT count(*) AS total FROM ${this.spec.table} ${where}`}) n
      LEFT JOIN LATERAL (SELECT data, resource_version FROM ${this.spec.table} ${c.length > 0 ? `WHERE ${c.join(" AND ")}` : ""}
                         ORDER BY ${column} ${dir}, id ${dir} LIMIT $${p.length}) page ON ${limit > 0 ? "true" : "false"}
      WHERE m.id = 1`;
    const { rows } = await this.db.query<{ revision: unknown; total: unknown; data: Uint8Array | null; resource_version: unknown }>(sql, p);
    const found = rows.filter((r) => r.data !== null);
    return {
      items: found.slice(0, limit).map((r) => this.decode(r.data!, big(r.resource_version))),
      totalCount: Number(big(rows[0]?.total ?? 0)),
      revision: big(rows[0]?.revision ?? 0),
      hasMore: found.length > limit,
    };
  }

  async update(id: string, mutate: (current: MessageShape<S>) => MessageShape<S> | undefined, options?: WriteOptions): Promise<MessageShape<S>> {
    for (let attempt = 0; ; attempt++) {
      const current = await this.mustGet(id);
      const version = this.versionOf(current);
      this.checkVersion(id, version, options);
      const next = mutate(clone(this.spec.schema, current));
      if (next === undefined) return current;
      if (this.spec.id(next) !== id) throw new QuantixError("internal", `${this.spec.kind} update changed the id`);
      const cols = this.spec.columns(next);
      const names = Object.keys(cols);
      const n = names.length;
      const revision = await this.write(
        `row AS (UPDATE ${this.spec.table} SET ${names.map((c, i) => `${c} = $${i + 1}`).join(", ")}, resource_version = rev.revision, data = $${n + 1}
           FROM rev WHERE id = $${n + 2} AND resource_version = $${n + 3} RETURNING rev.revision)`,
        [...Object.values(cols), this.encode(next), id, version, this.encode(current)],
        "MODIFIED",
        `$${n + 1}`,
        [`$${n + 4}`, `$${n + 3}::bigint`],
        next,
      );
      const stored = revision === undefined ? undefined : this.withVersion(next, revision);
      if (stored) return stored;
      // Someone wrote between our read and our write: read again (mutate is pure), or report
      // the conflict to a caller that asked for a specific version.
      if (options?.expectedVersion || attempt >= MAX_RETRIES) this.checkVersion(id, this.versionOf(await this.mustGet(id)), options, true);
    }
  }

  async delete(id: string, check?: (current: MessageShape<S>) => void, options?: WriteOptions): Promise<MessageShape<S>> {
    for (let attempt = 0; ; attempt++) {
      const current = await this.mustGet(id);
      const version = this.versionOf(current);
      this.checkVersion(id, version, options);
      check?.(clone(this.spec.schema, current));
      const revision = await this.write(
        `row AS (DELETE FROM ${this.spec.table} USING rev WHERE id = $1 AND resource_version = $2 RETURNING rev.revision)`,
        [id, version, this.encode(current)],
        "DELETED",
        "$3",
        ["NULL", "NULL"],
        current,
      );
      const last = revision === undefined ? undefined : this.withVersion(current, revision);
      if (last) return last;
      if (options?.expectedVersion || attempt >= MAX_RETRIES) this.checkVersion(id, this.versionOf(await this.mustGet(id)), options, true);
    }
  }

  watch(fromRevision: bigint, signal: AbortSignal): AsyncIterable<WatchEvent<MessageShape<S>>> {
    return new PushIterable<WatchEvent<MessageShape<S>>>((sink) => {
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
          await this.tailer.syncFrom(fromRevision);
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

  /** Changes of this kind in (after, through], at most HISTORY_PAGE; OUT_OF_RANGE if compacted. */
  private async history(after: bigint, through: bigint): Promise<WatchEvent<MessageShape<S>>[]> {
    return this.db.transaction(
      async (tx) => {
        const meta = await tx.query<{ compacted_revision: unknown }>("SELECT compacted_revision FROM quantix_meta WHERE id = 1");
        const compacted = big(meta.rows[0]?.compacted_revision ?? 0);
        if (after < compacted) {
          throw new QuantixError("out_of_range", `${this.spec.kind} watch: revision ${after} has been compacted (history starts after ${compacted}); list again and watch from the list's resource_version`);
        }
        const { rows } = await tx.query<{ revision: unknown; type: string; data: Uint8Array; previous: Uint8Array | null; previous_version: unknown }>(
          "SELECT revision, type, data, previous, previous_version FROM quantix_changes WHERE kind = $1 AND revision > $2 AND revision <= $3 ORDER BY revision LIMIT $4",
          [this.spec.kind, after, through, HISTORY_PAGE],
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

  /**
   * Runs one write as a single statement (one round trip, atomic): `rev` takes the next
   * revision from quantix_meta, locking it until commit, so revisions commit in order;
   * `rowCte` writes the object conditionally and returns the revision when it matched;
   * the change is appended to the history and notified. When the row did not match (a
   * conflict), the statement divides by zero on purpose so that it rolls back whole and
   * no revision is used: resolves to undefined.
   */
  private async write(
    rowCte: string,
    params: Param[],
    type: "ADDED" | "MODIFIED" | "DELETED",
    dataRef: string,
    [previousRef, previousVersionRef]: [string, string],
    subject: MessageShape<S>,
  ): Promise<bigint | undefined> {
    const p = params.length;
    const sql = `WITH rev AS (UPDATE quantix_meta SET revision = revision + 1 WHERE id = 1 RETURNING revision),
      ${rowCte},
      chg AS (INSERT INTO quantix_changes (revision, kind, type, data, previous, previous_version)
              SELECT revision, $${p + 1}, $${p + 2}, ${dataRef}, ${previousRef}, ${previousVersionRef} FROM row)
      SELECT (SELECT revision FROM row) AS revision,
             1 / (SELECT count(*)::int FROM row) AS matched,
             pg_notify($${p + 3}, (SELECT revision FROM row)::text) AS notified`;
    let revision: bigint;
    try {
      const { rows } = await this.db.query<{ revision: unknown }>(sql, [...params, this.spec.kind, type, CHANGES_CHANNEL]);
      revision = big(rows[0]!.revision);
    } catch (err) {
      if ((err as { code?: string }).code === "22012") return undefined;
      throw this.translate(err, subject);
    }
    await this.compactor.afterWrite();
    return revision;
  }

  private translate(err: unknown, subject: MessageShape<S>): unknown {
    const e = err as { code?: string; constraint?: string };
    if (e.code === "23505") {
      if (e.constraint === this.spec.uniqueConstraint) return new QuantixError("already_exists", this.spec.describeClash(subject));
      return new QuantixError("already_exists", `${this.spec.kind} '${this.spec.id(subject)}' already exists`);
    }
    return err;
  }

  /**
   * Stored bytes carry no resource_version (it is only known inside the writing
   * statement): it lives in its own column, and in the change's revision.
   */
  private encode(o: MessageShape<S>): Uint8Array {
    const copy = clone(this.spec.schema, o);
    (copy as unknown as Versioned).resourceVersion = 0n;
    return toBinary(this.spec.schema, copy);
  }

  private decode(data: Uint8Array, version: bigint): MessageShape<S> {
    const o = fromBinary(this.spec.schema, data);
    (o as unknown as Versioned).resourceVersion = version;
    return deepFreeze(o);
  }

  /** A frozen copy of `o` at `revision`. */
  private withVersion(o: MessageShape<S>, revision: bigint): MessageShape<S> {
    const copy = clone(this.spec.schema, o);
    (copy as unknown as Versioned).resourceVersion = revision;
    return deepFreeze(copy);
  }

  private versionOf(o: MessageShape<S>): bigint {
    return (o as unknown as Versioned).resourceVersion;
  }

  private async mustGet(id: string): Promise<MessageShape<S>> {
    const o = await this.get(id);
    if (!o) throw notFound(this.spec.kind, id);
    return o;
  }

  private checkVersion(id: string, actual: bigint, options?: WriteOptions, conflicted = false): void {
    const expected = options?.expectedVersion;
    if (expected !== undefined && expected !== 0n && expected !== actual) {
      throw new QuantixError("aborted", `${this.spec.kind} '${id}' was changed: resource_version is ${actual}, not ${expected}; read it again and retry`);
    }
    if (conflicted) throw new QuantixError("aborted", `${this.spec.kind} '${id}' is being changed by others; read it again and retry`);
  }
}

/** Rows of history read per query when a watcher resumes from before the hub's history. */
const HISTORY_PAGE = 1000;
