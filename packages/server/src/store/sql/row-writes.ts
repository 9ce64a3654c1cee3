import { QuantixError, type Resource } from "@quantix/core";
import { columnsOf, columnTypesOf } from "./sql-columns.js";
import type { SqlCollection } from "./sql-collection.js";
import { translateSqlError } from "./sql-collection.js";
import type { Param, Queryable } from "./sql-driver.js";

/** One row write a locked commit decided (planLocked): the stored (frozen) object at `revision`, over `current`. */
export interface RowWrite {
  readonly coll: SqlCollection<Resource>;
  readonly type: "ADDED" | "MODIFIED" | "DELETED";
  readonly object: Resource;
  readonly current: Resource | undefined;
  readonly revision: bigint;
}

/**
 * Makes row writes (of one commit, or of every commit of a group-commit batch) and appends
 * their changes, in as few statements as it can: usually one. Writes of the same row are
 * folded into its final state (a quota charged by 64 CreateVMs is one UPDATE, conditional
 * on the version it had before the first); each table's conditional updates, deletes and
 * new rows are one UPDATE, DELETE or INSERT, and every change (each intermediate state
 * included) is one INSERT into quantix_changes; all of them are data-modifying CTEs of one
 * statement. Rows go as arrays, one parameter a column, read with unnest: the statement's
 * text depends on the tables and kinds of write it has, not on how many rows, so the
 * engine parses and plans a short statement rather than a VALUES list of every row
 * (issue 19: 60-71 µs a create for a batch of 40). A row whose writes do not fold (created
 * then deleted, deleted then created) is written write by write first. What the commit's
 * lock guarantees is checked as before: an update or delete that matches no row is an
 * internal error, and a taken id or unique key fails the statement (ALREADY_EXISTS naming
 * the object, read from the error's detail).
 */
export async function writeRows(tx: Queryable, writes: readonly RowWrite[]): Promise<void> {
  if (writes.length === 0) return;
  const bySlot = new Map<string, RowWrite[]>();
  for (const w of writes) {
    const slot = `${w.coll.kind.table}\u0000${w.object.id}`;
    const seq = bySlot.get(slot);
    if (seq) seq.push(w);
    else bySlot.set(slot, [w]);
  }
  const stmt = new Statement(tx);
  const inserts = new Map<SqlCollection<Resource>, RowWrite[]>();
  const conditional: { last: RowWrite; base: bigint }[] = [];
  for (const seq of bySlot.values()) {
    const first = seq[0]!;
    const last = seq[seq.length - 1]!;
    const middle = seq.slice(1, -1).every((w) => w.type === "MODIFIED");
    if (first.type === "ADDED" && (seq.length === 1 || (middle && last.type === "MODIFIED"))) {
      const list = inserts.get(last.coll);
      if (list) list.push(last);
      else inserts.set(last.coll, [last]);
    } else if (first.type !== "ADDED" && (seq.length === 1 || (first.type === "MODIFIED" && middle))) {
      conditional.push({ last, base: first.current!.resourceVersion });
    } else {
      // Does not fold: each write as its own statement, in order.
      for (const w of seq) await writeOneRow(tx, w);
    }
  }
  for (const { last, base } of conditional) stmt.conditional(last, base);
  for (const [coll, rows] of inserts) for (const w of rows) stmt.insert(coll, w);
  for (const w of writes) stmt.change(w);
  await stmt.run();
}

/** An element of an array parameter. */
type Element = string | number | boolean | null;

/** Rows of one table's write, column by column (each column becomes one array parameter). */
class Rows {
  readonly columns: Element[][];
  length = 0;

  /** `names` and their SQL types (of one element). */
  constructor(
    readonly names: readonly string[],
    readonly types: readonly string[],
  ) {
    this.columns = names.map(() => []);
  }

  push(row: readonly Element[]): void {
    for (let i = 0; i < row.length; i++) this.columns[i]!.push(row[i]!);
    this.length++;
  }
}

/** A column value as an array element: bigint as decimal text. */
function element(v: Param): Element {
  if (typeof v === "bigint") return v.toString();
  if (v === null || typeof v === "string" || typeof v === "number" || typeof v === "boolean") return v;
  throw new TypeError("a column value must be a scalar");
}

/** Builds (and runs) the data-modifying CTEs of writeRows. */
class Statement {
  /** Conditional updates and deletes by table: each must match one row. */
  private updates = new Map<SqlCollection<Resource>, Rows>();
  private deletes = new Map<SqlCollection<Resource>, Rows>();
  private inserts = new Map<SqlCollection<Resource>, Rows>();
  private changes = new Rows(
    ["revision", "kind", "type", "at", "len", "previous_at", "previous_len", "previous_version"],
    ["bigint", "text", "text", "int", "int", "int", "int", "bigint"],
  );
  /** The objects this statement writes (to name the one a unique violation is about). */
  private objects: RowWrite[] = [];
  /** The encoded data of every object state this statement writes, back to back: sent as one bytea parameter. */
  private data: Uint8Array[] = [];
  private dataLength = 0;
  /** Each object's encoded data: where it starts in `data` (from 1) and its length. */
  private dataOfObject = new Map<Resource, readonly [number, number]>();
  /**
   * The same by table, id and the revision the row state was written at: a later write's
   * `current` is the stored copy of an earlier write's object (another object, the same
   * bytes), so a quota charged by 64 commits is encoded 65 times, not 128.
   */
  private dataOfState = new Map<string, readonly [number, number]>();

  constructor(private readonly tx: Queryable) {}

  private dataRef(o: Resource, coll: SqlCollection<Resource>, revision: bigint = o.resourceVersion): readonly [number, number] {
    let ref = this.dataOfObject.get(o);
    if (ref) return ref;
    const state = `${coll.kind.table}\u0000${o.id}\u0000${revision}`;
    ref = this.dataOfState.get(state);
    if (!ref) {
      const bytes = coll.encode(o);
      this.dataOfState.set(state, (ref = [this.dataLength + 1, bytes.length]));
      this.data.push(bytes);
      this.dataLength += bytes.length;
    }
    this.dataOfObject.set(o, ref);
    return ref;
  }

  private rowsOf(map: Map<SqlCollection<Resource>, Rows>, coll: SqlCollection<Resource>, names: () => string[]): Rows {
    let rows = map.get(coll);
    if (!rows) {
      const n = names();
      const types = columnTypesOf(coll.kind);
      map.set(coll, (rows = new Rows(n, n.map((c) => (c === "id" ? "text" : c === "at" || c === "len" ? "int" : c === "base" || c === "resource_version" ? "bigint" : types.get(c)!)))));
    }
    return rows;
  }

  conditional(w: RowWrite, base: bigint): void {
    this.objects.push(w);
    if (w.type === "MODIFIED") {
      const cols = columnsOf(w.coll.kind, w.object);
      const [at, len] = this.dataRef(w.object, w.coll, w.revision);
      this.rowsOf(this.updates, w.coll, () => ["id", "base", ...Object.keys(cols), "resource_version", "at", "len"]).push([
        w.object.id,
        base.toString(),
        ...Object.values(cols).map(element),
        w.revision.toString(),
        at,
        len,
      ]);
    } else {
      this.rowsOf(this.deletes, w.coll, () => ["id", "base"]).push([w.object.id, base.toString()]);
    }
  }

  insert(coll: SqlCollection<Resource>, w: RowWrite): void {
    const cols = columnsOf(coll.kind, w.object);
    const [at, len] = this.dataRef(w.object, coll, w.revision);
    this.rowsOf(this.inserts, coll, () => ["id", ...Object.keys(cols), "resource_version", "at", "len"]).push([
      w.object.id,
      ...Object.values(cols).map(element),
      w.revision.toString(),
      at,
      len,
    ]);
    this.objects.push(w);
  }

  change(w: RowWrite): void {
    const [at, len] = this.dataRef(w.object, w.coll, w.revision);
    const modified = w.type === "MODIFIED";
    const [previousAt, previousLen] = modified ? this.dataRef(w.current!, w.coll) : [null, null];
    this.changes.push([w.revision.toString(), w.coll.kind.name, w.type, at, len, previousAt, previousLen, modified ? w.current!.resourceVersion.toString() : null]);
  }

  /** Runs what has been added (nothing when empty). */
  async run(): Promise<void> {
    const params: Param[] = [];
    const $ = (v: Param) => `$${params.push(v)}`;
    /** Each column of some rows as one array parameter. */
    const arrays = (rows: Rows) => rows.columns.map((c, i) => `${$(c)}::${rows.types[i]!}[]`);
    /** `unnest(...) AS u(...)` of some rows. */
    const unnest = (rows: Rows, refs = arrays(rows)) => `unnest(${refs.join(", ")}) AS u(${rows.names.join(", ")})`;
    /**
     * Which rows of table `t` some conditional writes are about: by their ids (the first
     * column), as an index lookup. Joined with the unnest alone, the planner may hash the
     * whole table (a sequential scan per batch, on a table of any size).
     */
    const byId = (t: string, refs: string[]) => `${t}.id = ANY(${refs[0]!}) AND ${t}.id = u.id AND ${t}.resource_version = u.base`;
    /** The one parameter of all rows' data (only when a row has some: a statement of deletes has none). */
    let blob: string | undefined;
    /** A row's encoded data, or NULL (its start is NULL). */
    const data = (at: string, len: string) => `substr(${(blob ??= `${$(concat(this.data, this.dataLength))}::bytea`)}, u.${at}, u.${len})`;
    const ctes: string[] = [];
    const matched: string[] = [];
    let expected = 0;
    for (const [coll, rows] of this.updates) {
      const t = coll.kind.table;
      const name = `w${ctes.length}`;
      const sets = rows.names.slice(2, -2).map((c) => `${c} = u.${c}`);
      const refs = arrays(rows);
      ctes.push(`${name} AS (UPDATE ${t} SET ${sets.join(", ")}, data = ${data("at", "len")} FROM ${unnest(rows, refs)} WHERE ${byId(t, refs)} RETURNING 1)`);
      matched.push(name);
      expected += rows.length;
    }
    for (const [coll, rows] of this.deletes) {
      const t = coll.kind.table;
      const name = `w${ctes.length}`;
      const refs = arrays(rows);
      ctes.push(`${name} AS (DELETE FROM ${t} USING ${unnest(rows, refs)} WHERE ${byId(t, refs)} RETURNING 1)`);
      matched.push(name);
      expected += rows.length;
    }
    for (const [coll, rows] of this.inserts) {
      const cols = rows.names.slice(0, -2);
      ctes.push(`i${ctes.length} AS (INSERT INTO ${coll.kind.table} (${cols.join(", ")}, data) SELECT ${cols.map((c) => `u.${c}`).join(", ")}, ${data("at", "len")} FROM ${unnest(rows)})`);
    }
    if (this.changes.length > 0) {
      ctes.push(
        `c${ctes.length} AS (INSERT INTO quantix_changes (revision, kind, type, data, previous, previous_version) SELECT u.revision, u.kind, u.type, ${data("at", "len")}, ${data("previous_at", "previous_len")}, u.previous_version FROM ${unnest(this.changes)})`,
      );
    }
    if (ctes.length === 0) return;
    const count = matched.length > 0 ? matched.map((m) => `(SELECT count(*) FROM ${m})`).join(" + ") : "0";
    const sql = `WITH ${ctes.join(",\n")}\nSELECT (${count})::int AS matched`;
    let n: number;
    try {
      const { rows } = await this.tx.query<{ matched: unknown }>(sql, params);
      n = Number(rows[0]?.matched ?? 0);
    } catch (err) {
      throw translated(err, this.objects);
    }
    if (n !== expected) {
      const w = this.objects[0]!;
      throw new QuantixError("internal", `${w.coll.kind.name} rows changed under the store's write lock (${n} of ${expected} matched)`);
    }
  }
}

/** Byte arrays back to back in one. */
function concat(parts: readonly Uint8Array[], length: number): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(length);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** A unique violation as ALREADY_EXISTS naming the object it is about (from the error's detail). */
function translated(err: unknown, objects: readonly RowWrite[]): unknown {
  const e = err as { code?: string; constraint?: string; table?: string; detail?: string };
  if (e.code !== "23505") return err;
  const m = /^Key \((\w+)\)=\((.*)\) already exists/.exec(e.detail ?? "");
  const ofTable = objects.filter((w) => w.type !== "DELETED" && (e.table === undefined || w.coll.kind.table === e.table || e.constraint?.startsWith(`${w.coll.kind.table}_`)));
  const subject =
    (m && ofTable.find((w) => (m[1] === "id" ? w.object.id : w.coll.kind.unique?.key(w.object)) === m[2])) ?? ofTable[0] ?? objects[0];
  return subject ? translateSqlError(subject.coll.kind, err, subject.object) : err;
}

/** One write as its own statements (a row whose writes do not fold). */
async function writeOneRow(tx: Queryable, w: RowWrite): Promise<void> {
  const stmt = new Statement(tx);
  if (w.type === "ADDED") stmt.insert(w.coll, w);
  else stmt.conditional(w, w.current!.resourceVersion);
  await stmt.run();
}
