import { createHash } from "node:crypto";
import { QuantixError } from "@quantix/core";
import pg from "pg";
import { toWire, type Param, type Queryable, type QueryOptions, type Row, type SqlDriver } from "./sql-driver.js";

type Conn = pg.Pool | pg.PoolClient | pg.Client;

/** Connection-level SQLSTATE classes and socket errors: the server is gone or going, not the query wrong. */
const UNREACHABLE = /^(08|57P0[1-3]|53300)/;
const SOCKET = new Set(["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTFOUND", "EHOSTUNREACH"]);

/**
 * A database that cannot be reached is UNAVAILABLE (retryable) for the client, not an
 * internal error; the cause stays for the log.
 */
function unavailable(err: unknown): unknown {
  const e = err as { code?: string; message?: string };
  const lost = (e.code && (UNREACHABLE.test(e.code) || SOCKET.has(e.code))) || /Connection terminated|timeout exceeded when trying to connect/i.test(e.message ?? "");
  return lost ? new QuantixError("unavailable", "the database is unavailable; retry shortly", [], { cause: err }) : err;
}

/** Prepared statements' names by text (at most MAX_PREPARED texts are prepared; others run unnamed). */
const prepared = new Map<string, string>();
const MAX_PREPARED = 1000;

/** The name a statement is prepared under: a digest of its text, so every connection agrees. */
function statementName(sql: string): string | undefined {
  let name = prepared.get(sql);
  if (name === undefined && prepared.size < MAX_PREPARED) prepared.set(sql, (name = `quantix_${createHash("sha1").update(sql).digest("hex").slice(0, 24)}`));
  return name;
}

function wrap(c: Conn): Queryable {
  return {
    async query<R extends Row>(sql: string, params: readonly Param[] = [], options?: QueryOptions) {
      try {
        const values = params.map(toWire);
        const name = options?.prepare ? statementName(sql) : undefined;
        const res = await (name ? c.query<R>({ name, text: sql, values }) : c.query<R>(sql, values));
        return { rows: res.rows, rowCount: res.rowCount ?? res.rows.length };
      } catch (err) {
        throw unavailable(err);
      }
    },
    async exec(sql: string) {
      try {
        await c.query(sql);
      } catch (err) {
        throw unavailable(err);
      }
    },
  };
}

/** Limits of the connection pool to a PostgreSQL server. */
export interface PgLimits {
  /** Connections in the pool. */
  readonly maxConnections: number;
  /** How long to wait for a new connection to the server before failing. */
  readonly connectTimeoutMs: number;
  /** How long a statement or transaction may wait for one of the pool's connections to be free (default 60 s). */
  readonly queueTimeoutMs?: number;
  /** Longest a single statement may run. */
  readonly statementTimeoutMs: number;
}

/**
 * Turns for the pool's connections, first come first served. node-postgres's pool applies
 * its connect timeout to a request waiting in its queue as well, so a burst of work (ten
 * thousand watchers opening at once, each reading its snapshot) failed as "the database is
 * unavailable" after 10 s although the database answered every statement; here the wait
 * for a free connection is bounded on its own, and says what it was.
 */
class PoolTurns {
  private busy = 0;
  private readonly waiting: { go: () => void; timer: NodeJS.Timeout }[] = [];

  constructor(
    private readonly size: number,
    private readonly timeoutMs: number,
  ) {}

  take(): Promise<void> {
    if (this.busy < this.size) {
      this.busy++;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const w = {
        go: () => {
          clearTimeout(w.timer);
          resolve();
        },
        timer: setTimeout(() => {
          this.waiting.splice(this.waiting.indexOf(w), 1);
          reject(new QuantixError("unavailable", `all ${this.size} connections to the database stayed busy for ${this.timeoutMs / 1000} s; retry, or raise QUANTIX_PG_MAX_CONNECTIONS (and the server's max_connections) if this load is normal`));
        }, this.timeoutMs),
      };
      this.waiting.push(w);
    });
  }

  give(): void {
    const next = this.waiting.shift();
    if (next) next.go();
    else this.busy--;
  }
}

/** A Queryable that takes a turn for each statement. */
function turnTaking(q: Queryable, turns: PoolTurns): Queryable {
  return {
    async query<R extends Row>(sql: string, params?: readonly Param[], options?: QueryOptions) {
      await turns.take();
      try {
        return await q.query<R>(sql, params, options);
      } finally {
        turns.give();
      }
    },
    async exec(sql: string) {
      await turns.take();
      try {
        await q.exec(sql);
      } finally {
        turns.give();
      }
    },
  };
}

/**
 * A PostgreSQL server through node-postgres: a pool for queries and transactions, and one
 * dedicated connection for LISTEN (notifications arrive only on the connection that
 * listens). int8 columns come back as strings and are read with big().
 */
export class PgDriver implements SqlDriver {
  readonly kind = "postgres" as const;
  private listener: pg.Client | undefined;
  private readonly root: Queryable;
  private readonly turns: PoolTurns;

  private constructor(
    private readonly pool: pg.Pool,
    private readonly url: string,
    private readonly limits: PgLimits,
  ) {
    this.turns = new PoolTurns(limits.maxConnections, limits.queueTimeoutMs ?? 60_000);
    this.root = turnTaking(wrap(pool), this.turns);
  }

  /** Connects (and checks the connection with one round trip). */
  static async open(url: string, limits: PgLimits): Promise<PgDriver> {
    const pool = new pg.Pool({
      connectionString: url,
      max: limits.maxConnections,
      connectionTimeoutMillis: limits.connectTimeoutMs,
      statement_timeout: limits.statementTimeoutMs,
      application_name: "quantix",
    });
    // An idle client that loses its server emits 'error' on the pool; the next query reconnects.
    pool.on("error", () => undefined);
    try {
      await pool.query("SELECT 1");
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw err;
    }
    return new PgDriver(pool, url, limits);
  }

  query<R extends Row = Row>(sql: string, params?: readonly Param[], options?: QueryOptions) {
    return this.root.query<R>(sql, params, options);
  }

  exec(sql: string): Promise<void> {
    return this.root.exec(sql);
  }

  async transaction<T>(fn: (tx: Queryable) => Promise<T>, options?: { repeatableRead?: boolean }): Promise<T> {
    const client = await this.checkout();
    let broken: Error | undefined;
    try {
      await client.query(options?.repeatableRead ? "BEGIN ISOLATION LEVEL REPEATABLE READ" : "BEGIN");
      const result = await fn(wrap(client));
      await client.query("COMMIT");
      return result;
    } catch (err) {
      await client.query("ROLLBACK").catch((e: unknown) => (broken = e as Error));
      throw unavailable(err);
    } finally {
      // A connection whose ROLLBACK failed is not given back to the pool.
      client.release(broken);
    }
  }

  /**
   * A pooled connection with an 'error' listener: node-postgres emits 'error' on a checked-out
   * client when the server goes away, and an unlistened 'error' would end the process.
   */
  private async checkout(): Promise<pg.PoolClient> {
    await this.turns.take();
    let client: pg.PoolClient;
    try {
      client = await this.pool.connect();
    } catch (err) {
      this.turns.give();
      throw unavailable(err);
    }
    if (client.listenerCount("error") === 0) client.on("error", () => undefined);
    // The turn ends when the connection goes back to the pool (or is dropped).
    const release = client.release.bind(client);
    let given = false;
    client.release = (err?: Error | boolean) => {
      if (!given) {
        given = true;
        this.turns.give();
      }
      return release(err);
    };
    return client;
  }

  async withAdvisoryLock<T>(key: bigint, fn: (conn: Queryable) => Promise<T>): Promise<T> {
    const client = await this.checkout();
    let broken: Error | undefined;
    try {
      await wrap(client).query("SELECT pg_advisory_lock($1)", [key]);
      try {
        return await fn(wrap(client));
      } finally {
        await client.query("SELECT pg_advisory_unlock($1)", [key.toString()]).catch((e: unknown) => (broken = e as Error));
      }
    } finally {
      client.release(broken);
    }
  }

  async listen(channel: string, onNotify: (payload: string) => void, onLost?: () => void): Promise<() => Promise<void>> {
    if (!/^[a-z_][a-z0-9_]*$/.test(channel)) throw new Error(`invalid channel name ${channel}`);
    const client = new pg.Client({ connectionString: this.url, connectionTimeoutMillis: this.limits.connectTimeoutMs, application_name: "quantix-listen" });
    // A lost LISTEN connection is reported, and re-established by the tailer's next poll.
    const lost = () => {
      if (this.listener !== client) return;
      this.listener = undefined;
      onLost?.();
    };
    client.on("error", lost);
    client.on("end", lost);
    await client.connect();
    client.on("notification", (msg) => {
      if (msg.channel === channel) onNotify(msg.payload ?? "");
    });
    await client.query(`LISTEN ${channel}`);
    this.listener = client;
    return async () => {
      this.listener = undefined;
      await client.end().catch(() => undefined);
    };
  }

  campaign(key: bigint, onChange: (held: boolean) => void): () => Promise<void> {
    let client: pg.Client | undefined;
    let held = false;
    let stopped = false;
    const drop = () => {
      client = undefined;
      if (held) {
        held = false;
        onChange(false);
      }
    };
    const tick = async () => {
      if (stopped || held) return;
      try {
        if (!client) {
          const c = new pg.Client({ connectionString: this.url, connectionTimeoutMillis: this.limits.connectTimeoutMs, application_name: "quantix-leader" });
          c.on("error", () => (client === c ? drop() : undefined));
          c.on("end", () => (client === c ? drop() : undefined));
          await c.connect();
          client = c;
        }
        const { rows } = await client.query<{ ok: boolean }>("SELECT pg_try_advisory_lock($1) AS ok", [key.toString()]);
        if (rows[0]?.ok && !stopped) {
          held = true;
          onChange(true);
        }
      } catch {
        const c = client;
        drop();
        await c?.end().catch(() => undefined);
      }
    };
    void tick();
    const timer = setInterval(() => void tick(), 1000);
    timer.unref();
    return async () => {
      stopped = true;
      clearInterval(timer);
      const c = client;
      client = undefined;
      await c?.end().catch(() => undefined);
    };
  }

  async close(): Promise<void> {
    await this.listener?.end().catch(() => undefined);
    await this.pool.end();
  }
}
