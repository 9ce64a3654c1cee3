/**
 * The one seam between the SQL store and a database engine. The embedded store (PGlite:
 * PostgreSQL compiled to WebAssembly, in-process) and the PostgreSQL store (node-postgres)
 * speak the same dialect, so one schema, one set of migrations and one repository serve
 * both; only connection handling differs.
 */

/** A row as the driver returns it: column name to value. */
export type Row = Record<string, unknown>;

/** A query parameter. bigint is sent as text; arrays as PostgreSQL arrays. */
export type Param = string | number | boolean | null | Uint8Array | bigint | readonly (string | number | boolean | null)[];

/** How a statement is run. */
export interface QueryOptions {
  /**
   * The statement's text is one of few fixed ones that run again and again (a lone write of
   * a kind): the PostgreSQL driver prepares it once per connection, so that the server
   * parses it (and, once its plan cache settles on a generic plan, plans it) once, not per
   * call. Other engines ignore it.
   */
  readonly prepare?: boolean;
}

/** Something queries run on: the database, or one transaction. */
export interface Queryable {
  query<R extends Row = Row>(sql: string, params?: readonly Param[], options?: QueryOptions): Promise<{ rows: R[]; rowCount: number }>;
  /** Runs a script of several statements without parameters (migrations). */
  exec(sql: string): Promise<void>;
}

/** A database connection (pool) of one engine. */
export interface SqlDriver extends Queryable {
  /** "embedded" or "postgres". */
  readonly kind: "embedded" | "postgres";
  /**
   * Runs `fn` in one transaction on one connection: committed when it resolves, rolled back
   * when it throws. Isolation is READ COMMITTED unless `repeatableRead`.
   */
  transaction<T>(fn: (tx: Queryable) => Promise<T>, options?: { repeatableRead?: boolean }): Promise<T>;
  /**
   * Runs `fn` holding a session-level advisory lock on one connection (e.g. migrations):
   * two processes starting together take turns.
   */
  withAdvisoryLock<T>(key: bigint, fn: (conn: Queryable) => Promise<T>): Promise<T>;
  /**
   * LISTENs on a channel; `onNotify` gets each payload, `onLost` is called if the listening
   * connection drops. Resolves to an unlisten function.
   */
  listen(channel: string, onNotify: (payload: string) => void, onLost?: () => void): Promise<() => Promise<void>>;
  /**
   * Campaigns for a session-level advisory lock held for as long as this process lives:
   * `onChange(true)` once it is held, `onChange(false)` if its connection is lost. Resolves
   * to a function that gives it up.
   */
  campaign(key: bigint, onChange: (held: boolean) => void): () => Promise<void>;
  close(): Promise<void>;
}

/** Normalises a parameter for the wire: bigint as decimal text. */
export function toWire(p: Param): unknown {
  return typeof p === "bigint" ? p.toString() : p;
}

/** A bigint column value, whichever way the engine returned it (string, number or bigint). */
export function big(v: unknown): bigint {
  if (typeof v === "bigint") return v;
  if (typeof v === "number" || typeof v === "string") return BigInt(v);
  throw new TypeError(`expected an integer column, got ${typeof v}`);
}
