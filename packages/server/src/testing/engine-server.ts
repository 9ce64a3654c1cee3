import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startPostgres, startTestServer, type TestPostgres, type TestServer } from "@quantix/testing";
import type { ControlPlaneConfig } from "../config.js";

/** The store engines a control plane runs on. */
export const STORE_ENGINES = ["memory", "embedded", "postgres"] as const;
export type StoreEngine = (typeof STORE_ENGINES)[number];

/** A test control plane on one store engine: a fresh embedded data directory, or a throwaway PostgreSQL. */
export async function startOnEngine(engine: StoreEngine, overrides: Partial<ControlPlaneConfig> = {}): Promise<{ server: TestServer; close(): Promise<void> }> {
  let pg: TestPostgres | undefined;
  let dir: string | undefined;
  if (engine === "postgres") pg = await startPostgres();
  if (engine === "embedded") dir = mkdtempSync(join(tmpdir(), "quantix-engine-"));
  const store = engine === "memory" ? { kind: "memory" as const } : engine === "embedded" ? { kind: "embedded" as const, dataDir: dir! } : { kind: "postgres" as const, url: pg!.url };
  const server = await startTestServer({ demo: false, store, ...overrides });
  return {
    server,
    async close() {
      await server.close();
      await pg?.stop();
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}
