import { QuantixError } from "@quantix/core";
import type { MigrationOptions, MigrationProgress, MigrationStats } from "../../backend.js";
import type { QmpClient } from "./qmp-client.js";

/**
 * QEMU live migration (pre-copy over TCP) driven over QMP. The target QEMU is started
 * with `-incoming defer` and told where to listen with migrate-incoming; the source
 * sets its limits, runs migrate and polls query-migrate until it ends.
 */

/** The part of query-migrate's answer we read. */
export interface QueryMigrate {
  status?: string;
  "error-desc"?: string;
  "total-time"?: number;
  downtime?: number;
  ram?: { transferred?: number; remaining?: number; total?: number };
  "socket-address"?: { type: string; host?: string; port?: string }[];
}

/** How often a running migration is polled. */
export const POLL_MS = 100;
/**
 * How often, and how many times, a completed migration's statistics are asked for again
 * (see completedStats): query-migrate is QEMU's only way to them, and they come within
 * milliseconds of the COMPLETED event, so they are asked for often (at most 500 ms in all).
 */
const SETTLE_MS = 2;
const SETTLE_TRIES = 250;
/** QEMU's max-bandwidth when the caller asks for none: far above what any link here carries. */
const UNLIMITED_BYTES_PER_SECOND = 1e12;
/** "tcp:<IPv4 or host name>:<port>", the only URI form accepted: no other transport (exec:, file:) may reach QEMU. */
const TCP_URI = /^tcp:([a-zA-Z0-9](?:[a-zA-Z0-9.-]{0,252})):(\d{1,5})$/;

/** The host and port of a "tcp:<host>:<port>" URI; undefined for anything else. */
export function parseTcpUri(uri: string): { host: string; port: string } | undefined {
  const m = TCP_URI.exec(uri);
  if (!m || !(Number(m[2]) > 0 && Number(m[2]) < 65536)) return undefined;
  return { host: m[1]!, port: String(Number(m[2])) };
}

/** Whether `uri` is a migration target this agent sends to (see {@link TCP_URI}). */
export function isMigrationUri(uri: string): boolean {
  const m = TCP_URI.exec(uri);
  return m !== null && Number(m[2]) > 0 && Number(m[2]) < 65536;
}

/**
 * Makes a QEMU started with `-incoming defer` listen on a free TCP port of `listenHost`
 * (port 0: QEMU picks it, so no race with other listeners) and answers its URI.
 */
export async function listenIncoming(qmp: QmpClient, listenHost: string): Promise<string> {
  if (!isMigrationUri(`tcp:${listenHost}:1`)) throw new QuantixError("invalid_argument", `migration listen host must be an IPv4 address or host name, got '${listenHost}'`);
  await qmp.execute("migrate-incoming", { uri: `tcp:${listenHost}:0` });
  const q = await qmp.execute<QueryMigrate>("query-migrate");
  const port = q["socket-address"]?.find((a) => a.type === "inet")?.port;
  if (!port) throw new QuantixError("internal", "QEMU did not report the port it listens on for the incoming migration");
  return `tcp:${listenHost}:${port}`;
}

/**
 * Runs an outgoing migration to `targetUri` and resolves with QEMU's statistics once it
 * completed; rejects with ABORTED when QEMU reports it failed or cancelled.
 */
export async function migrateOut(qmp: Pick<QmpClient, "execute" | "onEvent">, targetUri: string, options: MigrationOptions): Promise<MigrationStats> {
  if (!isMigrationUri(targetUri)) throw new QuantixError("invalid_argument", `target_uri must be tcp:<host>:<port>, got '${targetUri}'`);
  // QEMU's MIGRATION event at each change of state wakes the loop at once, so the end is seen
  // when it happens rather than up to a poll interval later; the poll still reports progress.
  // Both settings are sent at once (QEMU answers them in order): one round trip, not two.
  await Promise.all([
    qmp.execute("migrate-set-parameters", migrationParameters(options)),
    qmp.execute("migrate-set-capabilities", { capabilities: [{ capability: "events", state: true }] }),
  ]);
  let wake: (() => void) | undefined;
  // An event that came while query-migrate was answering: the next pause ends at once.
  let changed = false;
  const off = qmp.onEvent((e) => {
    if (e.event !== "MIGRATION") return;
    changed = true;
    wake?.();
  });
  try {
    await qmp.execute("migrate", { uri: targetUri });
    return await followMigration(qmp, options, (ms) =>
      new Promise<void>((resolve) => {
        if (changed) return resolve();
        const timer = setTimeout(resolve, ms);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      }).finally(() => {
        wake = undefined;
        changed = false;
      }),
    );
  } finally {
    off();
  }
}

/**
 * A completed migration's query-migrate answer with its statistics. QEMU announces
 * COMPLETED (the MIGRATION event) before it has computed the migration's total time and
 * downtime: asked at once, query-migrate can still say 0, so it is asked again, briefly
 * (SETTLE_TRIES times, SETTLE_MS apart). Both ways out of a migration (memory only, and
 * with its disks copied) take their statistics from here.
 */
export async function completedStats(qmp: Pick<QmpClient, "execute">, completed: QueryMigrate): Promise<QueryMigrate> {
  let q = completed;
  for (let tries = 0; !q["total-time"] && tries < SETTLE_TRIES; tries++) {
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    q = await qmp.execute<QueryMigrate>("query-migrate");
  }
  return q;
}

/** Polls query-migrate (waiting with `pause` between polls) until the migration ends. */
async function followMigration(qmp: Pick<QmpClient, "execute">, options: MigrationOptions, pause: (ms: number) => Promise<void>): Promise<MigrationStats> {
  for (;;) {
    const q = await qmp.execute<QueryMigrate>("query-migrate");
    const status = q.status ?? "none";
    options.onProgress(progressOf(status, q));
    if (status === "completed") {
      const done = await completedStats(qmp, q);
      return { transferredBytes: BigInt(done.ram?.transferred ?? 0), downtimeMs: done.downtime ?? 0, totalTimeMs: done["total-time"] ?? 0 };
    }
    if (status === "failed" || status === "cancelled") {
      throw new QuantixError("aborted", status === "cancelled" ? "the migration was cancelled" : `the migration failed: ${q["error-desc"] ?? "QEMU gave no reason"}`);
    }
    await pause(POLL_MS);
  }
}

/** migrate-set-parameters' arguments for `options`. */
export function migrationParameters(options: Pick<MigrationOptions, "bandwidthMbps" | "maxDowntimeMs">): Record<string, unknown> {
  const params: Record<string, unknown> = { "max-bandwidth": options.bandwidthMbps > 0 ? options.bandwidthMbps * 125_000 : UNLIMITED_BYTES_PER_SECOND };
  if (options.maxDowntimeMs > 0) params["downtime-limit"] = options.maxDowntimeMs;
  return params;
}

/** Asks QEMU to stop an outgoing migration; false when none is running. */
export async function cancelOutgoing(qmp: QmpClient): Promise<boolean> {
  const q = await qmp.execute<QueryMigrate>("query-migrate");
  if (!["setup", "active", "pre-switchover", "device", "postcopy-active"].includes(q.status ?? "none")) return false;
  await qmp.execute("migrate_cancel");
  return true;
}

/** A query-migrate answer as progress. */
export function progressOf(status: string, q: QueryMigrate): MigrationProgress {
  return { status, transferredBytes: BigInt(q.ram?.transferred ?? 0), remainingBytes: BigInt(q.ram?.remaining ?? 0), totalBytes: BigInt(q.ram?.total ?? 0) };
}
