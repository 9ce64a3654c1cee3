import type { Store } from "@quantix/core";
import { QuantixError } from "@quantix/core";
import { redactUrl, type StoreConfig, type StoreTuning } from "../config.js";
import type { Logger } from "@quantix/rpc";
import { openDataDir } from "./embedded-dir.js";
import { MemoryStore } from "./memory-store.js";
import { migrate, SCHEMA_VERSION } from "./sql/migrations.js";
import { PgDriver } from "./sql/pg-driver.js";
import { PgliteDriver } from "./sql/pglite-driver.js";
import type { SqlDriver } from "./sql/sql-driver.js";
import { SqlStore } from "./sql/sql-store.js";

/**
 * Opens the configured store: checks it, migrates its schema, and starts following its
 * changes. Every refusal is a QuantixError whose message says what is wrong and what to do.
 */
export async function openStore(config: StoreConfig, tuning: StoreTuning, log: Logger): Promise<Store> {
  switch (config.kind) {
    case "memory":
      return new MemoryStore({ limits: { historySize: tuning.historyRevisions, maxBacklog: 100_000 } });
    case "embedded": {
      const dir = await openDataDir(config.dataDir, SCHEMA_VERSION);
      let driver: SqlDriver;
      try {
        driver = await PgliteDriver.open(dir.database);
      } catch (err) {
        dir.release();
        throw new QuantixError(
          "failed_precondition",
          `QUANTIX_DATA_DIR ${dir.path}: the embedded database cannot be opened (${describe(err)}); it may be damaged. Restore it from a backup, or move it away to start empty.`,
          [],
          { cause: err },
        );
      }
      const store = await finish(driver, tuning, log, () => dir.release());
      dir.recordSchema(SCHEMA_VERSION);
      log.log("info", "store opened", { store: "embedded", data_dir: dir.path });
      return store;
    }
    case "postgres": {
      const where = redactUrl(config.url);
      let driver: SqlDriver;
      try {
        driver = await PgDriver.open(config.url, { maxConnections: tuning.pgMaxConnections, connectTimeoutMs: 10_000, statementTimeoutMs: 60_000 });
      } catch (err) {
        throw new QuantixError(
          "unavailable",
          `cannot use PostgreSQL at ${where}: ${describe(err)}. Check that the server runs and accepts connections, and that QUANTIX_STORE names the right host, port, database, user and password.`,
          [],
          { cause: err },
        );
      }
      const store = await finish(driver, tuning, log, () => undefined);
      log.log("info", "store opened", { store: "postgres", url: where });
      return store;
    }
  }
}

/**
 * How a SQL store that the control plane opens follows its changes: a slow watcher may
 * accumulate 100,000 undelivered changes before it is cut off, and the change history is
 * polled every second besides LISTEN/NOTIFY. (The creates bench's recording server opens
 * its store with the same.)
 */
export const SQL_STORE_FOLLOWING = { maxBacklog: 100_000, pollMs: 1000 } as const;

async function finish(driver: SqlDriver, tuning: StoreTuning, log: Logger, release: () => void): Promise<Store> {
  try {
    await migrate(driver, (msg) => log.log("info", msg));
    return await SqlStore.open(driver, {
      historyRevisions: tuning.historyRevisions,
      ...SQL_STORE_FOLLOWING,
      onError: (err) => log.log("warn", "reading the change history failed; retrying", { error: describe(err) }),
      onClosed: release,
    });
  } catch (err) {
    await driver.close().catch(() => undefined);
    release();
    throw err;
  }
}

function describe(err: unknown): string {
  const e = err as { message?: string; code?: string };
  const msg = e.message || String(err);
  return e.code && !msg.includes(e.code) ? `${e.code}: ${msg}` : msg;
}
