import { PGlite, type Transaction } from "@electric-sql/pglite";
import { initDatabase, pgliteOptions } from "./pglite-options.js";
import { toWire, type Param, type Queryable, type Row, type SqlDriver } from "./sql-driver.js";

function wrap(db: PGlite | Transaction): Queryable {
  return {
    async query<R extends Row>(sql: string, params: readonly Param[] = []) {
      const res = await db.query<R>(sql, params.map(toWire));
      return { rows: res.rows, rowCount: res.affectedRows ?? res.rows.length };
    },
    async exec(sql: string) {
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
    await initDatabase(dir);
    const db = await PGlite.create(dir, pgliteOptions());
    return new PgliteDriver(db);
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
