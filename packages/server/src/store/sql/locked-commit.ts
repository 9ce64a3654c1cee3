import { checkBase, notFound, planWrite, QuantixError, type Clock, type Kind, type Resource } from "@quantix/core";
import { CHANGES_CHANNEL, type CommittedChange } from "./change-tailer.js";
import { columnsOf } from "./sql-columns.js";
import type { SqlCollection } from "./sql-collection.js";
import { translateSqlError } from "./sql-collection.js";
import { big, type Param, type Queryable, type SqlDriver } from "./sql-driver.js";

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
): Promise<{ out: Resource[]; changes: CommittedChange[] }> {
  return db.transaction(async (tx) => {
    const meta = await tx.query<{ revision: unknown }>("SELECT revision FROM quantix_meta WHERE id = 1 FOR UPDATE");
    const first = big(meta.rows[0]?.revision ?? 0);
    const applied = await applyLocked(tx, collectionOf, ops, actor, clock, first);
    if (applied.changes.length > 0) {
      const revision = first + BigInt(applied.changes.length);
      await tx.query("UPDATE quantix_meta SET revision = $1 WHERE id = 1", [revision]);
      await tx.query("SELECT pg_notify($1, $2)", [CHANGES_CHANNEL, revision.toString()]);
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
export async function applyLocked(
  tx: Queryable,
  collectionOf: (kind: Kind<Resource>) => SqlCollection<Resource>,
  ops: readonly LockedOp[],
  actor: string | undefined,
  clock: Clock,
  revision: bigint,
): Promise<{ out: Resource[]; changes: CommittedChange[] }> {
  const written = new Map<string, Resource | null>();
  const out: Resource[] = [];
  const changes: CommittedChange[] = [];
  const nowMs = clock.now();
  for (const op of ops) {
    const coll = collectionOf(op.kind);
    const slot = `${op.kind.table}\u0000${op.object.id}`;
    const current = written.has(slot) ? (written.get(slot) ?? undefined) : await read(tx, coll, op.object.id);
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
    try {
      await writeRow(tx, coll, plan.type, plan.object, current, revision);
    } catch (err) {
      throw translateSqlError(op.kind, err, plan.object);
    }
    await tx.query("INSERT INTO quantix_changes (revision, kind, type, data, previous, previous_version) VALUES ($1, $2, $3, $4, $5, $6)", [
      revision,
      op.kind.name,
      plan.type,
      coll.encode(plan.object),
      plan.type === "MODIFIED" ? coll.encode(current!) : null,
      plan.type === "MODIFIED" ? current!.resourceVersion : null,
    ]);
    const stored = coll.withVersion(plan.object, revision);
    written.set(slot, plan.type === "DELETED" ? null : stored);
    out.push(stored);
    changes.push({ kind: op.kind.name, type: plan.type, object: stored, previous: plan.type === "MODIFIED" ? current : undefined, revision });
  }
  return { out, changes };
}

async function read(tx: Queryable, coll: SqlCollection<Resource>, id: string): Promise<Resource | undefined> {
  const { rows } = await tx.query<{ data: Uint8Array; resource_version: unknown }>(`SELECT data, resource_version FROM ${coll.kind.table} WHERE id = $1`, [id]);
  return rows[0] ? coll.decode(rows[0].data, big(rows[0].resource_version)) : undefined;
}

async function writeRow(tx: Queryable, coll: SqlCollection<Resource>, type: "ADDED" | "MODIFIED" | "DELETED", o: Resource, current: Resource | undefined, revision: bigint): Promise<void> {
  const t = coll.kind.table;
  if (type === "ADDED") {
    const cols = { id: o.id, ...columnsOf(coll.kind, o), resource_version: revision, data: coll.encode(o) };
    const names = Object.keys(cols);
    await tx.query(`INSERT INTO ${t} (${names.join(", ")}) VALUES (${names.map((_, i) => `$${i + 1}`).join(", ")})`, Object.values(cols) as Param[]);
    return;
  }
  if (type === "MODIFIED") {
    const cols = { ...columnsOf(coll.kind, o), resource_version: revision, data: coll.encode(o) };
    const names = Object.keys(cols);
    const n = names.length;
    const res = await tx.query(`UPDATE ${t} SET ${names.map((c, i) => `${c} = $${i + 1}`).join(", ")} WHERE id = $${n + 1} AND resource_version = $${n + 2}`, [
      ...(Object.values(cols) as Param[]),
      o.id,
      current!.resourceVersion,
    ]);
    if (res.rowCount !== 1) throw new QuantixError("internal", `${coll.kind.name} '${o.id}' changed under the store's write lock`);
    return;
  }
  const res = await tx.query(`DELETE FROM ${t} WHERE id = $1 AND resource_version = $2`, [o.id, current!.resourceVersion]);
  if (res.rowCount !== 1) throw new QuantixError("internal", `${coll.kind.name} '${o.id}' changed under the store's write lock`);
}
