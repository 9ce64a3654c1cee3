import { createSimulatedHost, dirImporter, dirUploader } from "@quantix/agent";
import cluster from "node:cluster";
import { QuantixError } from "@quantix/core";
import { startControlPlane } from "./app.js";
import { loadConfig } from "./config.js";
import { superviseWorkers, workersStatusFeed } from "./workers.js";

/** Entry point of `npm start`: the control plane with the configured store and demo data. */
async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(process.env);
  } catch (err) {
    process.stderr.write(`quantix: ${err instanceof QuantixError ? err.message : String(err)}\n`);
    process.exit(2);
  }
  if (config.workers > 1 && cluster.isPrimary) {
    // The primary only supervises; each worker runs this function again as a replica.
    const supervisor = superviseWorkers({ count: config.workers, say: (line) => process.stderr.write(`${line}\n`), exit: (code) => process.exit(code) });
    process.on("SIGTERM", () => supervisor.stop("SIGTERM"));
    process.on("SIGINT", () => supervisor.stop("SIGINT"));
    return;
  }
  let cp;
  try {
    // The composition root picks the demo nodes' hosts: the agent's simulator, in process.
    cp = await startControlPlane(config, { simulatedHosts: createSimulatedHost, dirImporter, dirUploader, adminPassword: process.env["QUANTIX_ADMIN_PASSWORD"], workersStatus: workersStatusFeed() });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const hint =
      e.code === "EADDRINUSE"
        ? `: ${config.host}:${config.port} is in use; stop the other process or set QUANTIX_ADDR=127.0.0.1:<port>`
        : `: ${err instanceof QuantixError ? err.message : String(err)}`;
    process.stderr.write(`quantix: cannot start${hint}\n`);
    process.exit(1);
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`quantix: ${signal} received, shutting down\n`);
    cp.close().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`quantix: shutdown failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

void main();
