import { clone, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { deepFreeze, notFound, PushIterable, QuantixError, type ListPage, type Order, type Cursor, type Repository, type WatchEvent, type WriteOptions } from "@quantix/core";
import { WatchHub, type WatchHubLimits } from "../watch-hub.js";
import type { ChangeTailer } from "./change-tailer.js";
import { CHANGES_CHANNEL } from "./change-tailer.js";
import type { Compactor } from "./compactor.js";
import { big, type Param, type Queryable, type SqlDriver } from "./sql-driver.js";

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
  readonly pageOf: (q: Q) => { readonly order: Order<string>; readonly after?: Cursor | undefined; readonly limit: number };
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
    tailer.register(spec.kind, this.hub as WatchHub<unknown>, (data) => this.decode(data));
  }

  async create(obj: MessageShape<S>): Promise<MessageShape<S>> {
    const stored = await this.write(async (tx, revision) => {
      const next = this.withVersion(obj, revision);
      const cols = { id: this.spec.id(obj), ...this.spec.columns(next), resource_version: revision, data: toBinary(this.spec.schema, next) };
      const names = Object.keys(cols);
      await tx.query(`INSERT INTO ${this.spec.table} (${names.join(", ")}) VALUES (${names.map((_, i) => `$${i + 1}`).join(", ")})`, Object.values(cols));
      await this.record(tx, revision, "ADDED", cols.data, null);
      return next;
    }, obj);
    // A create matches no row only by failing, so there is always a result.
    return stored!;
  }

  async get(id: string): Promise<MessageShape<S> | undefined> {
    const { rows } = await this.db.query<{ data: Uint8Array }>(`SELECT data FROM ${this.spec.table} WHERE id = $1`, [id]);
    return rows[0] ? this.decode(rows[0].data) : undefined;
  }

  async list(q: Q): Promise<ListPage<MessageShape<S>>> {
    const { order, after, limit } = this.spec.pageOf(q);
    const params: Param[] = [];
    const conds = this.spec.where(q, params);
    const where = conds.length > 0 ? `WHERE ${conds.join(" AND ")}` : "";
    const { column, type } = this.spec.orderColumn(order.field);
    const dir = order.desc ? "DESC" : "ASC";
    return this.db.transaction(
      async (tx) => {
        const meta = await tx.query<{ revision: unknown }>("SELECT revision FROM quantix_meta WHERE id = 1");
        const count = await tx.query<{ n: unknown }>(`SELECT count(*) AS n FROM ${this.spec.table} ${where}`, params);
        let items: MessageShape<S>[] = [];
        let hasMore = false;
        if (limit > 0) {
          const p = [...params];
          const c = [...conds];
          if (after) {
            p.push(after.key as Param, after.id);
            c.push(`(${column}, id) ${order.desc ? "<" : ">"} ($${p.length - 1}::${type}, $${p.length}::text)`);
          }
          p.push(limit + 1);
          const sql = `SELECT data FROM ${this.spec.table} ${c.length > 0 ? `WHERE ${c.join(" AND ")}` : ""} ORDER BY ${column} ${dir}, id ${dir} LIMIT $${p.length}`;
          const { rows } = await tx.query<{ data: Uint8Array }>(sql, p);
          hasMore = rows.length > limit;
          items = rows.slice(0, limit).map((r) => this.decode(r.data));
        }
        return { items, totalCount: Number(big(count.rows[0]?.n ?? 0)), revision: big(meta.rows[0]?.revision ?? 0), hasMore };
      },
      { repeatableRead: true },
    );
  }

  async update(id: string, mutate: (current: MessageShape<S>) => MessageShape<S> | undefined, options?: WriteOptions): Promise<MessageShape<S>> {
    for (let attempt = 0; ; attempt++) {
      const current = await this.mustGet(id);
      const version = this.versionOf(current);
      this.checkVersion(id, version, options);
      const next = mutate(clone(this.spec.schema, current));
      if (next === undefined) return current;
      if (this.spec.id(next) !== id) throw new QuantixError("internal", `${this.spec.kind} update changed the id`);
      const stored = await this.write(async (tx, revision) => {
        const out = this.withVersion(next, revision);
        const cols = { ...this.spec.columns(out), resource_version: revision, data: toBinary(this.spec.schema, out) };
        const names = Object.keys(cols);
        const values = Object.values(cols);
        const res = await tx.query(
          `UPDATE ${this.spec.table} SET ${names.map((n, i) => `${n} = $${i + 1}`).join(", ")} WHERE id = $${names.length + 1} AND resource_version = $${names.length + 2}`,
          [...values, id, version],
        );
        if (res.rowCount === 0) return undefined;
        await this.record(tx, revision, "MODIFIED", cols.data, toBinary(this.spec.schema, current));
        return out;
      }, next);
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
      const last = await this.write(async (tx, revision) => {
        const res = await tx.query(`DELETE FROM ${this.spec.table} WHERE id = $1 AND resource_version = $2`, [id, version]);
        if (res.rowCount === 0) return undefined;
        const out = this.withVersion(current, revision);
        await this.record(tx, revision, "DELETED", toBinary(this.spec.schema, out), null);
        return out;
      }, current);
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
            const page = await this.history(cursor, this.hub.oldestResumable);
            if (page.length > 0) sink.push(page);
            cursor = page.length === HISTORY_PAGE ? page[page.length - 1]!.revision : this.hub.oldestResumable;
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
        const { rows } = await tx.query<{ revision: unknown; type: string; data: Uint8Array; previous: Uint8Array | null }>(
          "SELECT revision, type, data, previous FROM quantix_changes WHERE kind = $1 AND revision > $2 AND revision <= $3 ORDER BY revision LIMIT $4",
          [this.spec.kind, after, through, HISTORY_PAGE],
        );
        return rows.map((r) => ({
          type: r.type as "ADDED" | "MODIFIED" | "DELETED",
          object: this.decode(r.data),
          previous: r.previous ? this.decode(r.previous) : undefined,
          revision: big(r.revision),
        }));
      },
      { repeatableRead: true },
    );
  }

  /**
   * Runs one write transaction with the next revision. `body` returns undefined when its
   * conditional write matched no row (a conflict): the transaction then rolls back, so the
   * revision is not used.
   */
  private async write<T>(body: (tx: Queryable, revision: bigint) => Promise<T | undefined>, subject: MessageShape<S>): Promise<T | undefined> {
    let result: T | undefined;
    try {
      await this.db.transaction(async (tx) => {
        const { rows } = await tx.query<{ revision: unknown }>("UPDATE quantix_meta SET revision = revision + 1 WHERE id = 1 RETURNING revision");
        const revision = big(rows[0]!.revision);
        result = await body(tx, revision);
        if (result === undefined) throw ROLLBACK;
        await tx.query("SELECT pg_notify($1, $2)", [CHANGES_CHANNEL, revision]);
      });
    } catch (err) {
      if (err === ROLLBACK) return undefined;
      throw this.translate(err, subject);
    }
    void this.tailer.kick();
    await this.compactor.afterWrite();
    return result === undefined ? undefined : deepFreeze(result);
  }

  private async record(tx: Queryable, revision: bigint, type: string, data: Uint8Array, previous: Uint8Array | null): Promise<void> {
    await tx.query("INSERT INTO quantix_changes (revision, kind, type, data, previous) VALUES ($1, $2, $3, $4, $5)", [revision, this.spec.kind, type, data, previous]);
  }

  private translate(err: unknown, subject: MessageShape<S>): unknown {
    const e = err as { code?: string; constraint?: string };
    if (e.code === "23505") {
      if (e.constraint === this.spec.uniqueConstraint) return new QuantixError("already_exists", this.spec.describeClash(subject));
      return new QuantixError("already_exists", `${this.spec.kind} '${this.spec.id(subject)}' already exists`);
    }
    return err;
  }

  private decode(data: Uint8Array): MessageShape<S> {
    return deepFreeze(fromBinary(this.spec.schema, data));
  }

  private withVersion(o: MessageShape<S>, revision: bigint): MessageShape<S> {
    const copy = clone(this.spec.schema, o);
    (copy as unknown as Versioned).resourceVersion = revision;
    return copy;
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

/** Thrown inside a transaction to roll it back after a conflict (not an error). */
const ROLLBACK = Symbol("rollback");
