import { ALL_KINDS, QuantixError, systemClock, type Clock, type Kind, type Resource, type Store, type StoreHealth, type Transaction, type TxOp, type WriteOptions } from "@quantix/core";
import { runTransaction } from "../transaction.js";
import type { WatchHubLimits } from "../watch-hub.js";
import { ChangeTailer } from "./change-tailer.js";
import { Compactor } from "./compactor.js";
import { GroupCommit } from "./group-commit.js";
import type { LockedOp } from "./locked-commit.js";
import { SqlCollection } from "./sql-collection.js";
import { big, type SqlDriver } from "./sql-driver.js";

/**
 * Changes per kind a SQL store also keeps in memory by default. The table holds the whole
 * history (QUANTIX_HISTORY_REVISIONS, 100,000 by default); memory holds its newest part,
 * for the watchers that resume soon after they broke off. A heartbeat is a change of its
 * node: 1,000 agents make 100 a second, so this is the last 100 s of them, and a whole
 * history in memory held about 70 MiB of node versions (about 400 MiB before versions
 * shared their unchanged parts), which the database holds already.
 */
export const MEMORY_HISTORY = 10_000;

/** Tuning of a SQL store. */
export interface SqlStoreOptions {
  /** The kinds it keeps, each in its table (migrations.ts); default: every kind (ALL_KINDS). */
  readonly kinds?: readonly Kind<Resource>[];
  /** Revisions of change history kept for resuming watchers, in the database. */
  readonly historyRevisions: number;
  /**
   * The newest of those kept in memory as well, per kind (default: historyRevisions, at
   * most MEMORY_HISTORY): a watcher resuming from further back reads the table instead.
   */
  readonly memoryHistory?: number;
  /** Undelivered changes a slow watcher may accumulate. */
  readonly maxBacklog: number;
  /** How often the change tailer polls besides LISTEN/NOTIFY (a safety net). */
  readonly pollMs: number;
  readonly onError: (err: unknown) => void;
  /** Called once the store has closed its database (the embedded store releases its directory's lock). */
  readonly onClosed?: () => void;
  readonly clock?: Clock;
}

/**
 * The durable Store: each kind in its SQL table (described by its declaration), one
 * revision sequence, a change history followed by a tailer that feeds the same in-memory
 * watch hubs the memory store uses. The embedded (PGlite) and PostgreSQL engines share it
 * through SqlDriver.
 */
export class SqlStore implements Store {
  private readonly tailer: ChangeTailer;
  readonly compactor: Compactor;
  private readonly collections = new Map<Kind<Resource>, SqlCollection<Resource>>();
  private readonly clock: Clock;
  private readonly writes: GroupCommit;

  private constructor(
    readonly driver: SqlDriver,
    startRevision: bigint,
    private readonly options: SqlStoreOptions,
  ) {
    const limits: WatchHubLimits = { historySize: options.memoryHistory ?? Math.min(options.historyRevisions, MEMORY_HISTORY), maxBacklog: options.maxBacklog };
    this.clock = options.clock ?? systemClock;
    this.tailer = new ChangeTailer(driver, startRevision, options.pollMs, options.onError);
    this.compactor = new Compactor(driver, options.historyRevisions);
    this.writes = new GroupCommit(
      driver,
      (k) => this.of(k) as SqlCollection<Resource>,
      this.clock,
      (changes) => this.tailer.committed(changes),
      (n) => this.compactor.afterWrite(n),
      // Only the embedded database has no other writer (ChangeTailer.expectOwn).
      driver.kind === "embedded" ? (r) => this.tailer.expectOwn(r) : undefined,
      (started) => this.tailer.ownRound(started),
    );
    const context = {
      db: driver,
      tailer: this.tailer,
      writes: this.writes,
      clock: this.clock,
      limits,
      recentGets: driver.kind === "embedded",
      lockedCommit: (ops: LockedOp[], actor: string | undefined) => this.writes.commit(ops, actor),
    };
    for (const kind of options.kinds ?? ALL_KINDS) this.collections.set(kind, new SqlCollection(kind, context));
  }

  /** Opens a store on a migrated database and starts following its changes. */
  static async open(driver: SqlDriver, options: SqlStoreOptions): Promise<SqlStore> {
    const { rows } = await driver.query<{ revision: unknown }>("SELECT revision FROM quantix_meta WHERE id = 1");
    const store = new SqlStore(driver, big(rows[0]?.revision ?? 0), options);
    await store.tailer.start();
    return store;
  }

  of<T extends Resource>(kind: Kind<T>): SqlCollection<T> {
    const c = this.collections.get(kind as unknown as Kind<Resource>);
    if (!c) throw new QuantixError("internal", `kind ${kind.name} is not registered with this store`);
    return c as unknown as SqlCollection<T>;
  }

  commit(ops: readonly TxOp[], options?: Pick<WriteOptions, "actor">): Promise<Resource[]> {
    return this.writes.commit(
      ops.map((o) => ({ op: o.op, kind: o.kind, object: o.object, base: o.op === "create" ? undefined : o.object.resourceVersion, mutate: o.op === "update" ? o.mutate : undefined })),
      options?.actor,
    );
  }

  transact<R>(fn: (tx: Transaction) => Promise<R>, options?: Pick<WriteOptions, "actor">): Promise<{ result: R; written: Resource[] }> {
    return runTransaction(this, fn, options);
  }

  async revision(): Promise<bigint> {
    const { rows } = await this.driver.query<{ revision: unknown }>("SELECT revision FROM quantix_meta WHERE id = 1");
    return big(rows[0]?.revision ?? 0);
  }

  async clusterId(): Promise<string> {
    const { rows } = await this.driver.query<{ cluster_id: string }>("SELECT cluster_id FROM quantix_meta WHERE id = 1");
    return rows[0]!.cluster_id;
  }

  async health(): Promise<StoreHealth> {
    try {
      return { ok: true, kind: this.driver.kind, revision: (await this.revision()).toString() };
    } catch (err) {
      return { ok: false, kind: this.driver.kind, revision: this.tailer.revision.toString(), detail: `the database does not answer: ${(err as Error).message}` };
    }
  }

  /**
   * Runs `seed` once in the life of the database: only if nothing was ever written
   * (revision 0) and it has not run before. Replicas starting together take turns.
   */
  async seedOnce(seed: () => Promise<void>): Promise<boolean> {
    return this.driver.withAdvisoryLock(0x7175616e74697831n, async (conn) => {
      const { rows } = await conn.query<{ revision: unknown; demo_seeded: boolean }>("SELECT revision, demo_seeded FROM quantix_meta WHERE id = 1");
      if (rows[0]?.demo_seeded || big(rows[0]?.revision ?? 0) !== 0n) return false;
      await seed();
      await conn.query("UPDATE quantix_meta SET demo_seeded = true WHERE id = 1");
      return true;
    });
  }

  lead(onChange: (leader: boolean) => void): () => Promise<void> {
    return this.driver.campaign(0x7175616e7469786cn, onChange);
  }

  async close(): Promise<void> {
    await this.tailer.stop();
    await this.driver.close();
    this.options.onClosed?.();
  }
}
