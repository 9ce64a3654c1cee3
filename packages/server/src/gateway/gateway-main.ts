import { QuantixError } from "@quantix/core";
import { loadConfig } from "../config.js";
import { startGatewayServer } from "./gateway-server.js";

/**
 * Entry point of `quantix gateway`: the MemoryGateway on its own port. It reads the
 * control plane's QUANTIX_* settings (store, TLS, local trust, rate limit, log level)
 * except where it listens and keeps an embedded store: QUANTIX_GATEWAY_ADDR (default
 * 127.0.0.1:50051) and QUANTIX_GATEWAY_DATA_DIR (default ./.quantix-gateway; one process
 * owns an embedded store, so it is not the control plane's). Sharing the control plane's
 * PostgreSQL (QUANTIX_STORE) shares its documents, users and tokens.
 */
async function main(): Promise<void> {
  const env = process.env;
  let config;
  try {
    config = loadConfig({ ...env, QUANTIX_ADDR: env["QUANTIX_GATEWAY_ADDR"] || "127.0.0.1:50051", QUANTIX_DATA_DIR: env["QUANTIX_GATEWAY_DATA_DIR"] || "./.quantix-gateway", QUANTIX_DEMO: "0" });
  } catch (err) {
    process.stderr.write(`quantix gateway: ${err instanceof QuantixError ? err.message.replaceAll("QUANTIX_ADDR", "QUANTIX_GATEWAY_ADDR") : String(err)}\n`);
    process.exit(2);
  }
  let server;
  try {
    server = await startGatewayServer(config);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const hint = e.code === "EADDRINUSE" ? `${config.host}:${config.port} is in use; stop the other process or set QUANTIX_GATEWAY_ADDR=127.0.0.1:<port>` : err instanceof QuantixError ? err.message : String(err);
    process.stderr.write(`quantix gateway: cannot start: ${hint}\n`);
    process.exit(1);
  }
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`quantix gateway: ${signal} received, shutting down\n`);
    server.close().then(
      () => process.exit(0),
      (err: unknown) => {
        process.stderr.write(`quantix gateway: shutdown failed: ${String(err)}\n`);
        process.exit(1);
      },
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

void main();
