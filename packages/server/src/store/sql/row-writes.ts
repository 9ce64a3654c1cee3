import { QuantixError, type Resource } from "@quantix/core";
import { columnsOf } from "./sql-columns.js";
import type { SqlCollection } from "./sql-collection.js";
import { translateSqlError } from "./sql-collection.js";
import type { Param, Queryable } from "./sql-driver.js";

/** One row write a locked commit decided (planLocked): the object at `revision`, over `current`. */
export interface RowWrite {
  readonly coll: SqlCollection<Resource>;
  readonly type: "ADDED" | "MODIFIED" | "DELETED";
  readonly object: Resource;
  readonly current: Resource | undefined;
  readonly revision: bigint;
}

/**
 * Parameters per statement at most: PostgreSQL's protocol allows 65,535, and a statement of
 * a few thousand rows is already past the point where fewer round trips pay.
 */
const MAX_PARAMS = 20_000;

/**
 * Makes row writes (of one commit, or of every commit of a group-commit batch) and appends
 * their changes, in as few statements as it can: usually one. Writes of the same row are
 * folded into its final state (a quota charged by 64 CreateVMs is one UPDATE, conditional
 * on the version it had before the first), each table's new rows are one multi-row INSERT,
 * and every change (each intermediate state included) is one multi-row INSERT into
 * quantix_changes; all of them are data-modifying CTEs of one statement. A row whose
 * writes do not fold (created then deleted, deleted then created) is written write by
 * write first. What the commit's lock guarantees is checked as before: an update or delete
 * that matches no row is an internal error, and a taken id or unique key fails the
 * statement (ALREADY_EXISTS naming the object, read from the error's detail).
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
  for (const { last, base } of conditional) await stmt.conditional(last, base);
  for (const [coll, rows] of inserts) for (const w of rows) await stmt.insert(coll, w);
  for (const w of writes) await stmt.change(w);
  await stmt.run();
}

/** Builds (and runs, when full) the data-modifying CTEs of writeRows. */
class Statement {
  private params: Param[] = [];
  private ctes: string[] = [];
  /** Conditional writes in this statement: each must match one row. */
  private matched: string[] = [];
  private inserts = new Map<SqlCollection<Resource>, { names: string[]; rows: string[] }>();
  private changes: string[] = [];
  /** The objects this statement writes (to name the one a unique violation is about). */
  private objects: RowWrite[] = [];
  /** Each object's encoded data in this statement, written once as a parameter. */
  private dataOfObject = new Map<Resource, string>();

  constructor(private readonly tx: Queryable) {}

  private $(v: Param): string {
    return `$${this.params.push(v)}`;
  }

  /**
   * Values that recur in a statement (a kind's name, a change type, a revision written to
   * its row and to its change, or read back as the next change's previous version), each
   * sent once: a batch of 64 CreateVMs repeated them in about 500 parameters.
   */
  private shared = new Map<string | bigint, string>();

  private once(v: string | bigint): string {
    let ref = this.shared.get(v);
    if (!ref) this.shared.set(v, (ref = this.$(v)));
    return ref;
  }

  /**
   * Each row state's encoded data in this statement, by table, id and the revision it was
   * written at: a later write's `current` is the stored copy of an earlier write's object
   * (another object, the same bytes), so a quota charged by 64 commits is encoded 65 times, not 128.
   */
  private dataOfState = new Map<string, string>();

  private dataRef(o: Resource, coll: SqlCollection<Resource>, revision: bigint = o.resourceVersion): string {
    let ref = this.dataOfObject.get(o);
    if (ref) return ref;
    const state = `${coll.kind.table}\u0000${o.id}\u0000${revision}`;
    ref = this.dataOfState.get(state);
    if (!ref) this.dataOfState.set(state, (ref = `${this.$(coll.encode(o))}::bytea`));
    this.dataOfObject.set(o, ref);
    return ref;
  }

  private async room(n: number): Promise<void> {
    if (this.params.length > 0 && this.params.length + n > MAX_PARAMS) await this.run();
  }

  async conditional(w: RowWrite, base: bigint): Promise<void> {
    const cols = w.type === "MODIFIED" ? Object.entries(columnsOf(w.coll.kind, w.object)) : [];
    await this.room(cols.length + 5);
    const t = w.coll.kind.table;
    const name = `w${this.ctes.length}`;
    this.objects.push(w);
    if (w.type === "MODIFIED") {
      const sets = cols.map(([c, v]) => `${c} = ${this.$(v)}`);
      this.ctes.push(
        `${name} AS (UPDATE ${t} SET ${sets.join(", ")}, resource_version = ${this.once(w.revision)}::bigint, data = ${this.dataRef(w.object, w.coll, w.revision)} WHERE id = ${this.$(w.object.id)} AND resource_version = ${this.$(base)}::bigint RETURNING 1)`,
      );
    } else {
      this.ctes.push(`${name} AS (DELETE FROM ${t} WHERE id = ${this.$(w.object.id)} AND resource_version = ${this.$(base)}::bigint RETURNING 1)`);
    }
    this.matched.push(name);
  }

  async insert(coll: SqlCollection<Resource>, w: RowWrite): Promise<void> {
    const cols = { id: w.object.id, ...columnsOf(coll.kind, w.object) };
    await this.room(Object.keys(cols).length + 2);
    const values = Object.values(cols).map((v) => this.$(v));
    let table = this.inserts.get(coll);
    if (!table) this.inserts.set(coll, (table = { names: Object.keys(cols), rows: [] }));
    table.rows.push(`(${values.join(", ")}, ${this.once(w.revision)}::bigint, ${this.dataRef(w.object, coll, w.revision)})`);
    this.objects.push(w);
  }

  async change(w: RowWrite): Promise<void> {
    await this.room(7);
    const modified = w.type === "MODIFIED";
    const previous = modified ? `${this.dataRef(w.current!, w.coll)}, ${this.once(w.current!.resourceVersion)}::bigint` : "NULL::bytea, NULL::bigint";
    this.changes.push(`(${this.once(w.revision)}::bigint, ${this.once(w.coll.kind.name)}::text, ${this.once(w.type)}::text, ${this.dataRef(w.object, w.coll, w.revision)}, ${previous})`);
  }

  /** Runs what has been added (nothing when empty) and starts afresh. */
  async run(): Promise<void> {
    const ctes = [...this.ctes];
    for (const [coll, { names, rows }] of this.inserts) {
      ctes.push(`i${ctes.length} AS (INSERT INTO ${coll.kind.table} (${names.join(", ")}, resource_version, data) VALUES ${rows.join(", ")})`);
    }
    if (this.changes.length > 0) {
      ctes.push(`c${ctes.length} AS (INSERT INTO quantix_changes (revision, kind, type, data, previous, previous_version) VALUES ${this.changes.join(", ")})`);
    }
    if (ctes.length === 0) return;
    const count = this.matched.length > 0 ? this.matched.map((m) => `(SELECT count(*) FROM ${m})`).join(" + ") : "0";
    const sql = `WITH ${ctes.join(",\n")}\nSELECT (${count})::int AS matched`;
    const params = this.params;
    const objects = this.objects;
    const expected = this.matched.length;
    this.params = [];
    this.ctes = [];
    this.matched = [];
    this.inserts = new Map();
    this.changes = [];
    this.objects = [];
    this.dataOfObject = new Map();
    this.dataOfState = new Map();
    this.shared = new Map();
    let matched: number;
    try {
      const { rows } = await this.tx.query<{ matched: unknown }>(sql, params);
      matched = Number(rows[0]?.matched ?? 0);
    } catch (err) {
      throw translated(err, objects);
    }
    if (matched !== expected) {
      const w = objects[0]!;
      throw new QuantixError("internal", `${w.coll.kind.name} rows changed under the store's write lock (${matched} of ${expected} matched)`);
    }
  }
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
  if (w.type === "ADDED") await stmt.insert(w.coll, w);
  else await stmt.conditional(w, w.current!.resourceVersion);
  await stmt.run();
}
