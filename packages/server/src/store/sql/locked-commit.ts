import { checkBase, notFound, planWrite, QuantixError, type Clock, type Kind, type Resource } from "@quantix/core";
import { CHANGES_CHANNEL, type CommittedChange } from "./change-tailer.js";
import { writeRows, type RowWrite } from "./row-writes.js";
import type { SqlCollection } from "./sql-collection.js";
import { big, type Queryable, type SqlDriver } from "./sql-driver.js";

/** One write of a locked commit. With `mutate`, the object is what mutate makes of the stored one. */
export interface LockedOp {
  readonly op: "create" | "update" | "delete";
  readonly kind: Kind<Resource>;
  readonly object: Resource;
  /** The version the write is conditional on; 0n or undefined: unconditional. */
  readonly base?: bigint | undefined;
  /** For update: computes the new state from the stored one (undefined: no change). For delete: a check that may throw. */
  readonly mutate?: ((current: Resource) => Resource | undefined) | undefined;
}

/**
 * Applies writes of any kinds in one database transaction that first locks quantix_meta
 * (FOR UPDATE): every other writer waits, so what is read here is what is overwritten,
 * and only an explicit base can be stale. Each write that changes something gets the
 * next revision, its row is written and its change appended; the revision moves once, by
 * exactly the number of changes (no gaps, which the change tailer relies on), and one
 * notification wakes every replica's tailer. All or nothing: any error rolls it back.
 */
export async function lockedCommit(
  db: SqlDriver,
  collectionOf: (kind: Kind<Resource>) => SqlCollection<Resource>,
  ops: readonly LockedOp[],
  actor: string | undefined,
  clock: Clock,
  committing: (revision: bigint) => void = () => undefined,
): Promise<{ out: Resource[]; changes: CommittedChange[] }> {
  return db.transaction(async (tx) => {
    const meta = await tx.query<{ revision: unknown }>("SELECT revision FROM quantix_meta WHERE id = 1 FOR UPDATE");
    const first = big(meta.rows[0]?.revision ?? 0);
    const applied = await applyLocked(tx, collectionOf, ops, actor, clock, first);
    if (applied.changes.length > 0) {
      const revision = first + BigInt(applied.changes.length);
      committing(revision);
      await tx.query(`WITH m AS (UPDATE quantix_meta SET revision = $1 WHERE id = 1 RETURNING revision) SELECT pg_notify($2, revision::text) FROM m`, [revision, CHANGES_CHANNEL]);
    }
    return applied;
  });
}

/**
 * The writes of one commit in transaction `tx`, which holds the revision lock and whose
 * last revision handed out is `revision`: what lockedCommit does between taking the lock
 * and moving the revision (a group commit runs several under savepoints). Returns each
 * op's resulting object and the changes written, in revision order from `revision` + 1.
 */
export async function applyLocked(...args: Parameters<typeof planLocked>): Promise<{ out: Resource[]; changes: CommittedChange[] }> {
  const [tx, , , , , , rows] = args;
  const planned = await planLocked(...args);
  await writeLocked(tx, planned, rows);
  return planned;
}

/** Rows a group commit has read or written in its transaction, by table and id (null: deleted). */
export type RowCache = Map<string, Resource | null>;

/** The key of a row in a RowCache. */
export const rowSlot = (kind: Kind<Resource>, id: string): string => `${kind.table}\u0000${id}`;

/** What planLocked decided: each op's result, and the writes to make. */
export interface PlannedCommit {
  readonly out: Resource[];
  readonly changes: CommittedChange[];
  readonly writes: RowWrite[];
  /** The rows as they will be once written. */
  readonly written: RowCache;
}

/**
 * Decides a commit's writes without writing anything: reads what each op needs (from
 * `rows` when the batch has it), runs its mutate and the kind's rules. A thrown error
 * (NOT_FOUND, ABORTED, a mutate's refusal) leaves the database as it was. A create does
 * not read: a taken id or unique key fails its INSERT.
 */
export async function planLocked(
  tx: Queryable,
  collectionOf: (kind: Kind<Resource>) => SqlCollection<Resource>,
  ops: readonly LockedOp[],
  actor: string | undefined,
  clock: Clock,
  revision: bigint,
  rows?: RowCache,
): Promise<PlannedCommit> {
  const written: RowCache = new Map();
  const out: Resource[] = [];
  const changes: CommittedChange[] = [];
  const writes: PlannedCommit["writes"] = [];
  const nowMs = clock.now();
  for (const op of ops) {
    const coll = collectionOf(op.kind);
    const slot = rowSlot(op.kind, op.object.id);
    const known = written.has(slot) ? written : rows?.has(slot) ? rows : undefined;
    let current = known ? (known.get(slot) ?? undefined) : undefined;
    if (!known && op.op !== "create") {
      current = await read(tx, coll, op.object.id);
      // Read under the lock: it stays true for the batch until a write of it (which updates `rows`).
      rows?.set(slot, current ?? null);
    }
    let object: Resource;
    if (op.op === "create") {
      object = coll.copy(op.object);
    } else {
      if (!current) throw notFound(op.kind.name, op.object.id);
      checkBase(op.kind, current, op.base);
      if (op.op === "delete") {
        op.mutate?.(coll.copy(current));
        object = coll.copy(current);
      } else if (op.mutate) {
        const next = op.mutate(coll.copy(current));
        if (next === undefined) {
          out.push(current);
          continue;
        }
        if (next.id !== current.id) throw new QuantixError("internal", `${op.kind.name} update changed the id`);
        object = next;
      } else {
        object = coll.copy(op.object);
      }
    }
    const plan = planWrite(op.kind, op.op, object, current, { base: op.base, actor, nowMs });
    if (!plan) {
      out.push(current!);
      continue;
    }
    revision += 1n;
    const stored = coll.withVersion(plan.object, revision, plan.type === "MODIFIED" ? current : undefined);
    // The row is written from the stored object (its revision known here): its bytes are encoded once, for the row and for its answer.
    writes.push({ coll, type: plan.type, object: stored, current, revision });
    written.set(slot, plan.type === "DELETED" ? null : stored);
    out.push(stored);
    changes.push({ kind: op.kind.name, type: plan.type, object: stored, previous: plan.type === "MODIFIED" ? current : undefined, revision });
  }
  return { out, changes, writes, written };
}

/** Makes the writes planLocked decided (rows and changes, row-writes.ts); then `rows` has them. */
export async function writeLocked(tx: Queryable, planned: PlannedCommit, rows?: RowCache): Promise<void> {
  await writeRows(tx, planned.writes);
  if (rows) for (const [slot, row] of planned.written) rows.set(slot, row);
}

async function read(tx: Queryable, coll: SqlCollection<Resource>, id: string): Promise<Resource | undefined> {
  const { rows } = await tx.query<{ data: Uint8Array; resource_version: unknown }>(`SELECT data, resource_version FROM ${coll.kind.table} WHERE id = $1`, [id]);
  return rows[0] ? coll.decode(rows[0].data, big(rows[0].resource_version)) : undefined;
}
