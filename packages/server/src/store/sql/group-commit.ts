import type { Clock, Kind, PlannedWrite, Resource } from "@quantix/core";
import type { CommittedChange } from "./change-tailer.js";
import { applyLocked, lockedCommit, planLocked, rowSlot, type LockedOp, type PlannedCommit, type RowCache } from "./locked-commit.js";
import { writeRows, type RowWrite } from "./row-writes.js";
import { CHANGES_CHANNEL } from "./change-tailer.js";
import { columnsOf } from "./sql-columns.js";
import type { SqlCollection } from "./sql-collection.js";
import { translateSqlError } from "./sql-collection.js";
import { big, type Param, type Queryable, type SqlDriver } from "./sql-driver.js";

/** Writes committed together at most (bounds a statement's parameters and a batch's latency). */
const MAX_BATCH = 256;

/** A write waiting for its commit; `outcome` is set by the batch that wrote it. */
interface JobBase {
  readonly resolve: (value: never) => void;
  readonly reject: (err: unknown) => void;
  /** What the write resolves to and the changes it made, or its own error. */
  outcome?: { value: unknown; changes: CommittedChange[] } | { error: unknown };
}

/** One planned single-object write (SqlCollection's create, update, delete). */
interface Single extends JobBase {
  readonly type: "single";
  readonly coll: SqlCollection<Resource>;
  readonly plan: PlannedWrite;
  /** The stored version an update or delete is conditional on. */
  readonly base: bigint | undefined;
}

/** The writes of one Store.commit: all or none. */
interface Commit extends JobBase {
  readonly type: "commit";
  readonly ops: readonly LockedOp[];
  readonly actor: string | undefined;
}

type Job = Single | Commit;

/** A batch found a create that cannot go in without failing: it is committed write by write instead. */
class NeedsSavepoints extends Error {}

/**
 * Group commit of the store's writes (ADR 0012). A write that arrives while nothing is
 * committing goes alone, as before: a single-object write is one statement (one round
 * trip, autocommit), a multi-object commit one transaction. Writes that arrive while a
 * commit is in flight wait, and the next round commits all of them (up to MAX_BATCH) in one
 * transaction with one COMMIT, one revision update and one notification. Every caller is
 * answered only once that COMMIT has returned, so an acknowledged write is as durable as
 * before.
 *
 * Each write keeps its own outcome. A batch first takes the revision lock, then checks the
 * single creates' ids and unique keys against the tables (and each other): when none is
 * taken, consecutive creates of a kind go in as one multi-row INSERT, and every single
 * update or delete is a statement conditional on its base version that simply matches no
 * row when it lost (its caller retries, as after a lost single write). A multi-object
 * commit runs under a savepoint: when it fails (a quota exceeded, a taken name) it is
 * rolled back alone. In the first pass the commits' row writes wait and are written
 * together (row-writes.ts: writes of one row folded, one statement for all) before any
 * single write and at the end of the batch. Revisions are handed out in arrival order to the writes that made a
 * change, so they stay gap-free and the change history in order. When a single create is
 * taken, or a single write's statement fails, the transaction is rolled back and the batch
 * runs again with a savepoint around each write: a failing write is rolled back alone and
 * its error goes to its caller only.
 */
export class GroupCommit {
  private readonly queue: Job[] = [];
  private draining = false;

  constructor(
    private readonly db: SqlDriver,
    private readonly collectionOf: (kind: Kind<Resource>) => SqlCollection<Resource>,
    private readonly clock: Clock,
    /**
     * Called after each commit, before any caller is answered, with the changes written in
     * revision order (the change tailer publishes them without reading them back).
     */
    private readonly committed: (changes: CommittedChange[]) => void,
    /** Called after each commit with the number of changes written (compaction). */
    private readonly afterCommit: (changes: number) => Promise<void>,
    /** Called inside a transaction, before its COMMIT, with the last revision it writes (ChangeTailer.expectOwn). */
    private readonly committing: (revision: bigint) => void = () => undefined,
    /** Called as each round starts (true) and once its callers are answered (false): ChangeTailer.ownRound. */
    private readonly round: (started: boolean) => void = () => undefined,
  ) {}

  /** Commits one write: resolves to the object as stored, or undefined when its base no longer matched. */
  submit(coll: SqlCollection<Resource>, plan: PlannedWrite, base: bigint | undefined): Promise<Resource | undefined> {
    return new Promise((resolve, reject) => this.enqueue({ type: "single", coll, plan, base, resolve: resolve as (v: never) => void, reject }));
  }

  /** Commits writes of any kinds as one (lockedCommit's rules): resolves to each op's resulting object. */
  commit(ops: readonly LockedOp[], actor: string | undefined): Promise<Resource[]> {
    return new Promise((resolve, reject) => this.enqueue({ type: "commit", ops, actor, resolve: resolve as (v: never) => void, reject }));
  }

  private enqueue(job: Job): void {
    this.queue.push(job);
    if (this.draining) return;
    this.draining = true;
    // The first write waits one turn of the event loop: the requests that arrived with it
    // (one socket read carries many) then join its batch. Without this turn the embedded
    // engine, whose statements complete without yielding to the event loop, committed
    // every request before the next was even read: batches of one.
    setImmediate(() => void this.drain());
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const batch = this.queue.splice(0, MAX_BATCH);
        this.round(true);
        try {
          await (batch.length === 1 ? this.alone(batch[0]!) : this.together(batch));
        } finally {
          this.round(false);
        }
      }
    } finally {
      this.draining = false;
    }
  }

  private async alone(job: Job): Promise<void> {
    try {
      if (job.type === "commit") {
        const { out, changes } = await lockedCommit(this.db, this.collectionOf, job.ops, job.actor, this.clock, this.committing);
        job.outcome = { value: out, changes };
      } else {
        const revision = await writeAlone(this.db, job.coll, job.plan, job.base);
        job.outcome = revision === undefined ? { value: undefined, changes: [] } : singleDone(job, revision);
      }
    } catch (err) {
      job.outcome = { error: err };
    }
    await this.answer([job]);
  }

  private async together(batch: Job[]): Promise<void> {
    try {
      try {
        await this.db.transaction((tx) => this.apply(tx, batch, false));
      } catch (err) {
        if (!(err instanceof NeedsSavepoints) && isUnavailable(err)) throw err;
        for (const job of batch) delete job.outcome;
        await this.db.transaction((tx) => this.apply(tx, batch, true));
      }
    } catch (err) {
      for (const job of batch) job.outcome = { error: err };
    }
    await this.answer(batch);
  }

  /** Publishes what the batch wrote, then answers each caller. */
  private async answer(batch: readonly Job[]): Promise<void> {
    const changes: CommittedChange[] = [];
    for (const job of batch) if (job.outcome && "changes" in job.outcome) changes.push(...job.outcome.changes);
    if (changes.length > 0) {
      changes.sort((a, b) => (a.revision < b.revision ? -1 : 1));
      this.committed(changes);
      await this.afterCommit(changes.length).catch(() => undefined);
    }
    for (const job of batch) {
      const o = job.outcome!;
      if ("error" in o) job.reject(o.error);
      else job.resolve(o.value as never);
    }
  }

  /** Writes the batch in transaction `tx`: in arrival order, each single write under a savepoint when `careful`. */
  private async apply(tx: Queryable, batch: Job[], careful: boolean): Promise<void> {
    const meta = await tx.query<{ revision: unknown }>("SELECT revision FROM quantix_meta WHERE id = 1 FOR UPDATE");
    const first = big(meta.rows[0]?.revision ?? 0);
    let revision = first;
    if (!careful) await checkCreates(tx, batch);
    // Rows the batch's multi-object commits read and wrote: a quota charged by every CreateVM
    // of the batch is read once. A single write drops its row from it (it writes past it).
    const rows: RowCache = new Map();
    // The planned writes of the commits so far, not yet written: made before any single write, and at the end.
    const pending: RowWrite[] = [];
    for (let i = 0; i < batch.length; ) {
      const job = batch[i]!;
      if (job.type === "single") {
        rows.delete(rowSlot(job.coll.kind as never, job.plan.object.id));
        if (!careful) await writeRows(tx, pending.splice(0));
      }
      if (job.type === "commit" && !careful) {
        // Planned first (its reads, mutates and rules: a failure there writes nothing and is
        // this commit's alone), then written; a failing statement fails the batch, which then
        // runs again with savepoints.
        i++;
        let planned: PlannedCommit;
        try {
          planned = await planLocked(tx, this.collectionOf, job.ops, job.actor, this.clock, revision, rows);
        } catch (err) {
          if (isUnavailable(err)) throw err;
          job.outcome = { error: err };
          continue;
        }
        // Written with the rest of the batch's commits (row-writes.ts folds them): later
        // commits plan against `rows`, which has these writes already.
        pending.push(...planned.writes);
        for (const [slot, row] of planned.written) rows.set(slot, row);
        job.outcome = { value: planned.out, changes: planned.changes };
        revision += BigInt(planned.changes.length);
        continue;
      }
      if (job.type === "single" && !careful && job.plan.type === "ADDED") {
        // A run of single creates of one kind: one statement.
        let j = i + 1;
        while (j < batch.length && isCreateOf(batch[j]!, job.coll)) j++;
        const run = batch.slice(i, j) as Single[];
        await insertRows(tx, job.coll, run.map((r) => r.plan.object), revision + 1n);
        for (const r of run) r.outcome = singleDone(r, ++revision);
        i = j;
        continue;
      }
      i++;
      if (job.type === "single" && !careful) {
        const matched = await writeOne(tx, job, revision + 1n);
        job.outcome = matched ? singleDone(job, ++revision) : { value: undefined, changes: [] };
        continue;
      }
      await tx.query("SAVEPOINT quantix_write");
      try {
        if (job.type === "commit") {
          const { out, changes } = await applyLocked(tx, this.collectionOf, job.ops, job.actor, this.clock, revision, rows);
          job.outcome = { value: out, changes };
          revision += BigInt(changes.length);
        } else {
          const matched = job.plan.type === "ADDED" ? (await insertRows(tx, job.coll, [job.plan.object], revision + 1n), true) : await writeOne(tx, job, revision + 1n);
          job.outcome = matched ? singleDone(job, ++revision) : { value: undefined, changes: [] };
        }
        await tx.query("RELEASE SAVEPOINT quantix_write");
      } catch (err) {
        if (isUnavailable(err)) throw err;
        await tx.query("ROLLBACK TO SAVEPOINT quantix_write");
        job.outcome = { error: job.type === "single" ? translateSqlError(job.coll.kind as never, err, job.plan.object) : err };
      }
    }
    await writeRows(tx, pending.splice(0));
    if (revision > first) {
      this.committing(revision);
      await tx.query(`WITH m AS (UPDATE quantix_meta SET revision = $1 WHERE id = 1 RETURNING revision) SELECT pg_notify($2, revision::text) FROM m`, [revision, CHANGES_CHANNEL]);
    }
  }
}

function isCreateOf(job: Job, coll: SqlCollection<Resource>): boolean {
  return job.type === "single" && job.plan.type === "ADDED" && job.coll === coll;
}

/** The outcome of a single write stored at `revision`. */
function singleDone(job: Single, revision: bigint): { value: Resource; changes: CommittedChange[] } {
  const object = job.coll.withVersion(job.plan.object, revision, job.plan.type === "MODIFIED" ? job.plan.previous : undefined);
  return { value: object, changes: [{ kind: job.coll.kind.name, type: job.plan.type, object, previous: job.plan.type === "MODIFIED" ? job.plan.previous : undefined, revision }] };
}

function isUnavailable(err: unknown): boolean {
  return (err as { code?: unknown }).code === "unavailable";
}

/**
 * Throws NeedsSavepoints when a create of the batch would fail: its id or unique key is
 * stored already, or an earlier create of the batch has it. (Read under the revision lock,
 * which every writer takes, so nothing changes before the batch's own statements run.)
 */
async function checkCreates(tx: Queryable, batch: readonly Job[]): Promise<void> {
  const byColl = new Map<SqlCollection<Resource>, Resource[]>();
  for (const w of batch) if (w.type === "single" && w.plan.type === "ADDED") byColl.set(w.coll, [...(byColl.get(w.coll) ?? []), w.plan.object]);
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
async function writeOne(tx: Queryable, w: Single, revision: bigint): Promise<boolean> {
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
    // One text per kind and write type: parsed and planned once per connection, not per write.
    const { rows } = await db.query<{ revision: unknown }>(sql, params, { prepare: true });
    return big(rows[0]!.revision);
  } catch (err) {
    if ((err as { code?: string }).code === "22012") return undefined;
    throw translateSqlError(coll.kind as never, err, plan.object);
  }
}
