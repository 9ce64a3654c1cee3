import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { loadConfig, migrate, PgliteDriver, SQL_STORE_FOLLOWING, SqlStore, startControlPlane } from "@quantix/server";
import { MARKED, recordingDriver } from "../lib/sql-log.js";

// The control plane on the embedded store, as `npm start` runs it, with its driver recording
// every statement (lib/sql-log.ts). On SIGTERM it closes and writes them to argv[2]: the
// creates group replays them on PGlite alone. QUANTIX_DATA_DIR's pg/ holds the database
// (no directory lock or marker: this process is the bench's own).

const out = process.argv[2]!;
const config = loadConfig(process.env);
const dir = join(process.env["QUANTIX_DATA_DIR"]!, "pg");
mkdirSync(dir, { recursive: true });
const driver = recordingDriver(await PgliteDriver.open(dir));
await migrate(driver, () => undefined);
const store = await SqlStore.open(driver, { historyRevisions: config.storeTuning.historyRevisions, ...SQL_STORE_FOLLOWING, onError: () => undefined });
const cp = await startControlPlane(config, { store });
// SIGUSR2 marks where the statements so far end (replaySql times each part apart); the line says it is done.
process.on("SIGUSR2", () => {
  driver.mark();
  process.stdout.write(`${JSON.stringify({ msg: MARKED })}\n`);
});
process.once("SIGTERM", () => {
  void cp.close().then(() => {
    driver.save(out);
    process.exit(0);
  });
});
