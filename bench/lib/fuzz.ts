import { readFileSync } from "node:fs";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { healthy, runFuzz, settledDigest, stateDigest, type FuzzResult, type StateDigest } from "@quantix/testing";
import type { Server } from "./proc.js";
import { sleep } from "./stats.js";

/** What `npm run bench -- --only=fuzz` found against one control plane process. */
export interface FuzzRun {
  readonly seed: number;
  readonly result: FuzzResult;
  readonly before: StateDigest;
  readonly after: StateDigest;
  readonly alive: boolean;
  readonly healthy: boolean;
  /** Error-level lines the server logged during the run, and the first few of them. */
  readonly errorLines: number;
  readonly firstErrors: string[];
}

/**
 * Seeds a few VMs into a running control plane (memory store, no nodes: they stay
 * PENDING and nothing else writes), waits for the store to settle, sends `count` malformed
 * requests generated from `seed` (packages/testing/src/fuzz), then checks that the
 * process lives, answers its health check, and holds the same state.
 */
export async function fuzzControlPlane(server: Server, seed: number, count: number): Promise<FuzzRun> {
  const vms = createClient(VMService, createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" }));
  const vmIds: string[] = [];
  for (let i = 0; i < 4; i++) vmIds.push((await vms.createVM({ name: `fuzz-seed-${i}`, spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n } } })).id);
  const before = await settledDigest(server.url);
  const linesBefore = errorLines(server.logFile).length;
  const result = await runFuzz({ url: server.url, seed, count, vmIds, concurrency: 32 });
  await sleep(300); // the server writes its log lines in batches
  const after = await stateDigest(server.url);
  const errors = errorLines(server.logFile).slice(linesBefore);
  return { seed, result, before, after, alive: isAlive(server.pid), healthy: await healthy(server.url), errorLines: errors.length, firstErrors: errors.slice(0, 3).map((l) => l.slice(0, 400)) };
}

function errorLines(logFile: string): string[] {
  return readFileSync(logFile, "utf8").split("\n").filter((l) => l.includes('"level":"error"') || l.includes('"level":"fatal"'));
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
