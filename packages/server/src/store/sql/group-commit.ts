import type { PlannedWrite, Resource } from "@quantix/core";
import type { CommittedChange } from "./change-tailer.js";
import { CHANGES_CHANNEL } from "./change-tailer.js";
import { columnsOf } from "./sql-columns.js";
import type { SqlCollection } from "./sql-collection.js";
import { translateSqlError } from "./sql-collection.js";
import { big, type Param, type Queryable, type SqlDriver } from "./sql-driver.js";

/** Writes committed together at most (bounds a statement's parameters and a batch's latency). */
const MAX_BATCH = 256;

/** One planned single-object write waiting for its commit. */
interface Pending {
  readonly coll: SqlCollection<Resource>;
  readonly plan: PlannedWrite;
  /** The stored version an update or delete is conditional on. */
  readonly base: bigint | undefined;
  readonly resolve: (stored: Resource | undefined) => void;
  readonly reject: (err: unknown) => void;
  /** Set by a batch: the revision written, undefined when the row did not match, or the write's own error. */
  outcome?: { revision: bigint | undefined } | { error: unknown };
}

/** A batch found a create that cannot go in without failing: it is committed write by write instead. */
class NeedsSavepoints extends Error {}

/**
 * Group commit of single-object writes (ADR 0012). A write that arrives while nothing is
 * committing goes alone, as today: one statement, one round trip, autocommit. Writes that
 * arrive while a commit is in flight wait, and the next round commits all of them (up to
 * MAX_BATCH) in one transaction with one COMMIT, one revision update and one
 * notification. Every caller is answered only once that COMMIT has returned, so an
 * acknowledged write is as durable as before.
 *
 * Each write keeps its own outcome. A batch first takes the revision lock, then checks the
 * creates' ids and unique keys against the table (and each other): when none is taken,
 * consecutive creates of a kind go in as one multi-row INSERT, and every update or delete
 * is a statement conditional on its base version that simply matches no row when it lost
 * (its caller retries, as after a lost single write). Revisions are handed out in arrival
 * order to the writes that matched, so they stay gap-free and the change history in
 * order. When a create is taken, or any statement fails, the transaction is rolled back
 * and the batch runs again with a savepoint around each write: a failing write is rolled
 * back alone and its error goes to its caller only.
 */
export class GroupCommit {
  private readonly queue: Pending[] = [];
  private draining = false;

  constructor(
    private readonly db: SqlDriver,
    /**
     * Called after each commit, before any caller is answered, with the changes written in
     * revision order (the change tailer publishes them without reading them back).
     */
    private readonly committed: (changes: CommittedChange[]) => void,
    /** Called after each commit with the number of changes written (compaction). */
    private readonly afterCommit: (changes: number) => Promise<void>,
  ) {}

  /** Commits one write: resolves to the object as stored, or undefined when its base no longer matched. */
  submit(coll: SqlCollection<Resource>, plan: PlannedWrite, base: bigint | undefined): Promise<Resource | undefined> {
    return new Promise((resolve, reject) => {
      this.queue.push({ coll, plan, base, resolve, reject });
      if (!this.draining) void this.drain();
    });
  }

  private async drain(): Promise<void> {
    this.draining = true;
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, MAX_BATCH);
        if (batch.length === 1) await this.alone(batch[0]!);
        else await this.together(batch);
      }
    } finally {
      this.draining = false;
    }
  }

  private async alone(w: Pending): Promise<void> {
    let revision: bigint | undefined;
    try {
      revision = await writeAlone(this.db, w.coll, w.plan, w.base);
    } catch (err) {
      w.reject(err);
      return;
    }
    if (revision === undefined) {
      w.resolve(undefined);
      return;
    }
    const [change] = this.changesOf([{ w, revision }]);
    this.committed([change!]);
    await this.afterCommit(1).catch(() => undefined);
    w.resolve(change!.object as Resource);
  }

  /** The stored objects of committed writes, as changes. */
  private changesOf(done: readonly { w: Pending; revision: bigint }[]): CommittedChange[] {
    return done.map(({ w, revision }) => ({
      kind: w.coll.kind.name,
      type: w.plan.type,
      object: w.coll.withVersion(w.plan.object, revision),
      previous: w.plan.type === "MODIFIED" ? w.plan.previous : undefined,
      revision,
    }));
  }

  private async together(batch: Pending[]): Promise<void> {
    try {
      try {
        await this.db.transaction((tx) => this.apply(tx, batch, false));
      } catch (err) {
        if (!(err instanceof NeedsSavepoints) && isUnavailable(err)) throw err;
        for (const w of batch) delete w.outcome;
        await this.db.transaction((tx) => this.apply(tx, batch, true));
      }
    } catch (err) {
      for (const w of batch) w.reject(err);
      return;
    }
    const done: { w: Pending; revision: bigint }[] = [];
    for (const w of batch) if (w.outcome && "revision" in w.outcome && w.outcome.revision !== undefined) done.push({ w, revision: w.outcome.revision });
    done.sort((a, b) => (a.revision < b.revision ? -1 : 1));
    const changes = this.changesOf(done);
    if (changes.length > 0) {
      this.committed(changes);
      await this.afterCommit(changes.length).catch(() => undefined);
    }
    const stored = new Map(done.map(({ w }, i) => [w, changes[i]!.object as Resource]));
    for (const w of batch) {
      const o = w.outcome!;
      if ("error" in o) w.reject(o.error);
      else w.resolve(stored.get(w));
    }
  }

  /** Writes the batch in transaction `tx`: in arrival order, each under a savepoint when `careful`. */
  private async apply(tx: Queryable, batch: Pending[], careful: boolean): Promise<void> {
    const meta = await tx.query<{ revision: unknown }>("SELECT revision FROM quantix_meta WHERE id = 1 FOR UPDATE");
    const first = big(meta.rows[0]?.revision ?? 0);
    let revision = first;
    if (!careful) await checkCreates(tx, batch);
    for (let i = 0; i < batch.length; ) {
      const w = batch[i]!;
      if (!careful && w.plan.type === "ADDED") {
        // A run of creates of one kind: one statement.
        let j = i + 1;
        while (j < batch.length && batch[j]!.plan.type === "ADDED" && batch[j]!.coll === w.coll) j++;
        const run = batch.slice(i, j);
        await insertRows(tx, w.coll, run.map((r) => r.plan.object), revision + 1n);
        for (const r of run) r.outcome = { revision: ++revision };
        i = j;
        continue;
      }
      i++;
      if (!careful) {
        const matched = await writeOne(tx, w, revision + 1n);
        w.outcome = { revision: matched ? ++revision : undefined };
        continue;
      }
      await tx.query("SAVEPOINT quantix_write");
      try {
        const matched = w.plan.type === "ADDED" ? (await insertRows(tx, w.coll, [w.plan.object], revision + 1n), true) : await writeOne(tx, w, revision + 1n);
        await tx.query("RELEASE SAVEPOINT quantix_write");
        w.outcome = { revision: matched ? ++revision : undefined };
      } catch (err) {
        if (isUnavailable(err)) throw err;
        await tx.query("ROLLBACK TO SAVEPOINT quantix_write");
        w.outcome = { error: translateSqlError(w.coll.kind as never, err, w.plan.object) };
      }
    }
    if (revision > first) {
      await tx.query(`WITH m AS (UPDATE quantix_meta SET revision = $1 WHERE id = 1 RETURNING revision) SELECT pg_notify($2, revision::text) FROM m`, [revision, CHANGES_CHANNEL]);
    }
  }
}

function isUnavailable(err: unknown): boolean {
  return (err as { code?: unknown }).code === "unavailable";
}

/**
 * Throws NeedsSavepoints when a create of the batch would fail: its id or unique key is
 * stored already, or an earlier create of the batch has it. (Read under the revision lock,
 * which every writer takes, so nothing changes before the batch's own statements run.)
 */
async function checkCreates(tx: Queryable, batch: readonly Pending[]): Promise<void> {
  const byColl = new Map<SqlCollection<Resource>, Resource[]>();
  for (const w of batch) if (w.plan.type === "ADDED") byColl.set(w.coll, [...(byColl.get(w.coll) ?? []), w.plan.object]);
  for (const [coll, objects] of byColl) {
    const ids = new Set<string>();
    const keys = new Set<string>();
    for (const o of objects) {
      const key = coll.kind.unique?.key(o);
      if (ids.has(o.id) || (key !== undefined && keys.has(key))) throw new NeedsSavepoints();
      ids.add(o.id);
      if (key !== undefined) keys.add(key);
    }
    const { rows } = await tx.query(`SELECT 1 FROM ${coll.kind.table} WHERE id = ANY($1::text[]) OR unique_key = ANY($2::text[]) LIMIT 1`, [[...ids], [...keys]]);
    if (rows.length > 0) throw new NeedsSavepoints();
  }
}

/** Inserts new objects of one kind with revisions from `revision` on, and their ADDED changes. */
async function insertRows(tx: Queryable, coll: SqlCollection<Resource>, objects: readonly Resource[], revision: bigint): Promise<void> {
  const params: Param[] = [];
  const $ = (v: Param) => `$${params.push(v)}`;
  const kindName = $(coll.kind.name);
  let names: string[] = [];
  const rows: string[] = [];
  const changes: string[] = [];
  objects.forEach((o, i) => {
    const cols = { id: o.id, ...columnsOf(coll.kind as never, o) };
    names = Object.keys(cols);
    const rev = $(revision + BigInt(i));
    const data = $(coll.encode(o));
    rows.push(`(${Object.values(cols).map((v) => $(v)).join(", ")}, ${rev}::bigint, ${data}::bytea)`);
    changes.push(`(${rev}::bigint, ${kindName}::text, 'ADDED', ${data}::bytea, NULL::bytea, NULL::bigint)`);
  });
  await tx.query(
    `WITH row AS (INSERT INTO ${coll.kind.table} (${names.join(", ")}, resource_version, data) VALUES ${rows.join(", ")})
     INSERT INTO quantix_changes (revision, kind, type, data, previous, previous_version) VALUES ${changes.join(", ")}`,
    params,
  );
}

/** An update or delete at `revision`, conditional on its base version: false when the row did not match. */
async function writeOne(tx: Queryable, w: Pending, revision: bigint): Promise<boolean> {
  const { coll, plan } = w;
  const t = coll.kind.table;
  const params: Param[] = [];
  const $ = (v: Param) => `$${params.push(v)}`;
  const rev = $(revision);
  const data = $(coll.encode(plan.object));
  const base = $(w.base!);
  let row: string;
  let previous = "NULL::bytea, NULL::bigint";
  if (plan.type === "MODIFIED") {
    const sets = Object.entries(columnsOf(coll.kind as never, plan.object)).map(([c, v]) => `${c} = ${$(v)}`);
    row = `UPDATE ${t} SET ${sets.join(", ")}, resource_version = ${rev}::bigint, data = ${data}::bytea WHERE id = ${$(plan.object.id)} AND resource_version = ${base}::bigint RETURNING 1`;
    previous = `${$(coll.encode(plan.previous!))}::bytea, ${base}::bigint`;
  } else {
    row = `DELETE FROM ${t} WHERE id = ${$(plan.object.id)} AND resource_version = ${base}::bigint RETURNING 1`;
  }
  const { rowCount } = await tx.query(
    `WITH row AS (${row})
     INSERT INTO quantix_changes (revision, kind, type, data, previous, previous_version)
     SELECT ${rev}::bigint, ${$(coll.kind.name)}::text, ${$(plan.type)}::text, ${data}::bytea, ${previous} FROM row`,
    params,
  );
  return rowCount === 1;
}

/**
 * One write as a single statement (one round trip, atomic): `rev` takes the next revision
 * from quantix_meta, locking it until commit, so revisions commit in order; `row` writes
 * the object, conditionally on `base` for an existing one, and returns the revision when
 * it matched; the change is appended to the history and notified. When the row did not
 * match (a conflict), the statement divides by zero on purpose so that it rolls back whole
 * and no revision is used: resolves to undefined.
 */
async function writeAlone(db: SqlDriver, coll: SqlCollection<Resource>, plan: PlannedWrite, base: bigint | undefined): Promise<bigint | undefined> {
  const t = coll.kind.table;
  const params: Param[] = [];
  const $ = (v: Param) => `$${params.push(v)}`;
  let rowCte: string;
  let dataRef: string;
  let previous = ["NULL", "NULL"];
  if (plan.type === "ADDED") {
    const cols = { id: plan.object.id, ...columnsOf(coll.kind as never, plan.object) };
    const values = Object.values(cols).map((v) => $(v));
    dataRef = $(coll.encode(plan.object));
    rowCte = `row AS (INSERT INTO ${t} (${Object.keys(cols).join(", ")}, resource_version, data)
       SELECT ${values.join(", ")}, rev.revision, ${dataRef} FROM rev RETURNING resource_version AS revision)`;
  } else if (plan.type === "MODIFIED") {
    const cols = columnsOf(coll.kind as never, plan.object);
    const sets = Object.entries(cols).map(([c, v]) => `${c} = ${$(v)}`);
    dataRef = $(coll.encode(plan.object));
    const version = $(base!);
    rowCte = `row AS (UPDATE ${t} SET ${sets.join(", ")}, resource_version = rev.revision, data = ${dataRef}
       FROM rev WHERE id = ${$(plan.object.id)} AND resource_version = ${version} RETURNING rev.revision)`;
    previous = [$(coll.encode(plan.previous!)), `${version}::bigint`];
  } else {
    rowCte = `row AS (DELETE FROM ${t} USING rev WHERE id = ${$(plan.object.id)} AND resource_version = ${$(base!)} RETURNING rev.revision)`;
    dataRef = $(coll.encode(plan.object));
  }
  const sql = `WITH rev AS (UPDATE quantix_meta SET revision = revision + 1 WHERE id = 1 RETURNING revision),
    ${rowCte},
    chg AS (INSERT INTO quantix_changes (revision, kind, type, data, previous, previous_version)
            SELECT revision, ${$(coll.kind.name)}, ${$(plan.type)}, ${dataRef}, ${previous[0]}, ${previous[1]} FROM row)
    SELECT (SELECT revision FROM row) AS revision,
           1 / (SELECT count(*)::int FROM row) AS matched,
           pg_notify(${$(CHANGES_CHANNEL)}, (SELECT revision FROM row)::text) AS notified`;
  try {
    const { rows } = await db.query<{ revision: unknown }>(sql, params);
    return big(rows[0]!.revision);
  } catch (err) {
    if ((err as { code?: string }).code === "22012") return undefined;
    throw translateSqlError(coll.kind as never, err, plan.object);
  }
}
