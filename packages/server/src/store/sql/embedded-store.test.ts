import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { kindContract } from "../kind.contract.js";
import { storeContract } from "../store.contract.js";
import { migrate } from "./migrations.js";
import { PgliteDriver } from "./pglite-driver.js";
import { SqlStore } from "./sql-store.js";

/** A new embedded store in a temporary directory, removed on close. */
async function openEmbedded() {
  const dir = mkdtempSync(join(tmpdir(), "quantix-embedded-"));
  const driver = await PgliteDriver.open(dir);
  await migrate(driver, () => undefined);
  const store = await SqlStore.open(driver, { historyRevisions: 50, maxBacklog: 1000, pollMs: 500, onError: (e) => console.error(e) });
  return {
    store,
    close: async () => {
      await store.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

storeContract("embedded (PGlite)", openEmbedded, { historySize: 50 });
kindContract("embedded (PGlite)", openEmbedded);
