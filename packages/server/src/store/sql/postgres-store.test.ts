import { after, before } from "node:test";
import { startPostgres, type TestPostgres } from "@quantix/testing";
import { kindContract } from "../kind.contract.js";
import { storeContract } from "../store.contract.js";
import { migrate } from "./migrations.js";
import { PgDriver } from "./pg-driver.js";
import { SqlStore } from "./sql-store.js";

let server: TestPostgres;
before(async () => {
  server = await startPostgres();
});
after(async () => server?.stop());

/** A store on a new database of the test server. */
async function openPostgres(name: string) {
  const url = await server.createDatabase(name);
  const driver = await PgDriver.open(url, { maxConnections: 8, connectTimeoutMs: 5000, statementTimeoutMs: 30_000 });
  await migrate(driver, () => undefined);
  const store = await SqlStore.open(driver, { historyRevisions: 50, maxBacklog: 1000, pollMs: 500, onError: (e) => console.error(e) });
  return { store, close: () => store.close() };
}

storeContract("PostgreSQL", () => openPostgres("contract"), { historySize: 50 });
kindContract("PostgreSQL", () => openPostgres("kinds"));
