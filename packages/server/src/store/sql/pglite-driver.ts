import type { PGlite, Transaction } from "@electric-sql/pglite";
import { openPglite } from "./pglite-options.js";
import { toWire, type Param, type Queryable, type Row, type SqlDriver } from "./sql-driver.js";

/**
 * How long statements may run back to back before the event loop gets a turn. PGlite runs
 * each statement synchronously in this thread and resolves it in a microtask, so a queue
 * of statements (the controllers' first passes over 10,000 VMs after a restart) never let
 * a timer, a socket or a listen callback run: the listener of a restarted control plane
 * opened only once that queue was empty (issue 19, 39 s at 10,000 VMs under load).
 */
export const PGLITE_SLICE_MS = 10;
let sliceStart = 0;
/** Set while a setImmediate is pending that marks the event loop's next turn. */
let turnPending = false;

/**
 * Waits for the event loop's next turn when statements (and the JS between them) have run
 * for PGLITE_SLICE_MS without one. A statement that finds no turn pending starts a slice and
 * schedules one: when it runs, the loop has been round (timers, sockets) since.
 */
function turn(): Promise<void> | undefined {
  const now = performance.now();
  if (!turnPending) {
    turnPending = true;
    sliceStart = now;
    setImmediate(() => (turnPending = false));
    return undefined;
  }
  if (now - sliceStart < PGLITE_SLICE_MS) return undefined;
  // Runs after the pending marker (setImmediate is first in, first out): the next statement starts a new slice.
  return new Promise((resolve) => setImmediate(resolve));
}

function wrap(db: PGlite | Transaction): Queryable {
  return {
    async query<R extends Row>(sql: string, params: readonly Param[] = []) {
      const t = turn();
      if (t) await t;
      const res = await db.query<R>(sql, params.map(toWire));
      return { rows: res.rows, rowCount: res.affectedRows ?? res.rows.length };
    },
    async exec(sql: string) {
      const t = turn();
      if (t) await t;
      await db.exec(sql);
    },
  };
}

/**
 * The embedded engine: PGlite in this process, its data in a directory. One process owns
 * the directory (see embedded-dir.ts); PGlite runs one statement at a time, so its
 * transactions are serialised by the engine itself and advisory locks are not needed.
 */
export class PgliteDriver implements SqlDriver {
  readonly kind = "embedded" as const;
  private readonly root: Queryable;

  private constructor(private readonly db: PGlite) {
    this.root = wrap(db);
  }

  /** Opens (creating when empty) the database in `dir`. */
  static async open(dir: string): Promise<PgliteDriver> {
    return new PgliteDriver(await openPglite(dir));
  }

  query<R extends Row = Row>(sql: string, params?: readonly Param[]) {
    return this.root.query<R>(sql, params);
  }

  exec(sql: string): Promise<void> {
    return this.root.exec(sql);
  }

  transaction<T>(fn: (tx: Queryable) => Promise<T>, options?: { repeatableRead?: boolean }): Promise<T> {
    return this.db.transaction(async (tx) => {
      if (options?.repeatableRead) await tx.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ");
      return fn(wrap(tx));
    });
  }

  withAdvisoryLock<T>(_key: bigint, fn: (conn: Queryable) => Promise<T>): Promise<T> {
    // One process owns an embedded database, and it starts once: there is no one to race.
    return fn(this.root);
  }

  listen(channel: string, onNotify: (payload: string) => void): Promise<() => Promise<void>> {
    return this.db.listen(channel, onNotify);
  }

  campaign(_key: bigint, onChange: (held: boolean) => void): () => Promise<void> {
    // The only process of an embedded database leads it.
    queueMicrotask(() => onChange(true));
    return async () => undefined;
  }

  async close(): Promise<void> {
    if (!this.db.closed) await this.db.close();
  }
}
