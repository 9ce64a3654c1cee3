import { QuantixError } from "@quantix/core";
import type { MigrationOptions, MigrationStats } from "../../backend.js";
import { completedStats, migrationParameters, parseTcpUri, POLL_MS, progressOf, type QueryMigrate } from "./qemu-migration.js";
import type { Qmp } from "./qemu-nbd-export.js";

/**
 * The source half of a live migration that copies disks, libvirt's sequence over QMP:
 * 1. per disk, an NBD client node on the target's export and a blockdev-mirror (sync
 *    full) of the disk's format node into it; wait until every job is READY (the bulk
 *    copied; from then on every guest write is mirrored);
 * 2. the memory migration, with pause-before-switchover: QEMU stops the vCPUs and waits
 *    in "pre-switchover" before it sends the device state;
 * 3. there, block-job-cancel on each READY mirror, which ends it with the target a
 *    consistent copy as of now (no pivot: the source keeps its own disk), the client
 *    nodes are removed, and migrate-continue lets the switch-over finish. So the guest
 *    resumes on the target only after every write reached its disks, and the downtime
 *    QEMU reports includes that last flush.
 * Any failure or cancellation cancels the jobs (force), removes the client nodes and,
 * when the memory migration started, cancels it: the guest keeps running here on its
 * own disks, which a mirror only reads.
 */

/** The disks to copy: their block nodes ("disk0", ...) and the target's NBD server. */
export interface DiskMirrorPlan {
  readonly storageUri: string;
  /** The source's format nodes to copy. */
  readonly nodes: readonly string[];
  /** The target's NBD export of each, parallel to `nodes` (the target names its disks by position); default: the node's name. */
  readonly exports?: readonly string[];
}

/** The part of query-jobs' answer read here. */
interface QueryJob {
  id: string;
  type: string;
  status: string;
  "current-progress": number;
  "total-progress": number;
  error?: string;
}

/** Polls while waiting for cancelled jobs or a cancelled migration to settle during cleanup (10 s). */
const SETTLE_POLLS = 100;
const TERMINAL = new Set(["completed", "failed", "cancelled"]);

const jobId = (node: string) => `mig-${node}`;
const clientNode = (node: string) => `mig-target-${node}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Runs the whole sequence; resolves with QEMU's statistics once the guest runs on the target. */
export async function migrateOutCopyingDisks(qmp: Qmp, targetUri: string, plan: DiskMirrorPlan, options: MigrationOptions, signal: AbortSignal): Promise<MigrationStats> {
  if (!parseTcpUri(targetUri)) throw new QuantixError("invalid_argument", `target_uri must be tcp:<host>:<port>, got '${targetUri}'`);
  const server = parseTcpUri(plan.storageUri);
  if (!server) throw new QuantixError("invalid_argument", `storage_uri must be tcp:<host>:<port>, got '${plan.storageUri}'`);
  const disk = { done: 0n, total: 0n };
  const report = (status: string, q: QueryMigrate = {}) => options.onProgress({ ...progressOf(status, q), diskTransferredBytes: disk.done, diskTotalBytes: disk.total });
  const added: string[] = [];
  let jobs: string[] = [];
  let migrating = false;
  const cancelled = () => new QuantixError("aborted", "the migration was cancelled");
  try {
    for (const [k, node] of plan.nodes.entries()) {
      const exported = plan.exports?.[k] ?? node;
      await qmp.execute("blockdev-add", { driver: "nbd", "node-name": clientNode(node), server: { type: "inet", host: server.host, port: server.port }, export: exported }).catch((err: unknown) => {
        throw new QuantixError("unavailable", `the target's disk ${exported} cannot be reached at ${plan.storageUri}: ${err instanceof Error ? err.message : String(err)}`);
      });
      added.push(clientNode(node));
      await qmp.execute("blockdev-mirror", { "job-id": jobId(node), device: node, target: clientNode(node), sync: "full", "auto-dismiss": false, ...(options.bandwidthMbps > 0 ? { speed: options.bandwidthMbps * 125_000 } : {}) });
      jobs.push(jobId(node));
    }
    // 1: the bulk copy.
    for (;;) {
      const state = await readJobs(qmp, jobs, disk);
      report("copying-disks");
      if (state.every((j) => j.status === "ready")) break;
      if (signal.aborted) throw cancelled();
      await sleep(POLL_MS);
    }
    // 2: memory, stopping before the switch-over.
    await qmp.execute("migrate-set-capabilities", { capabilities: [{ capability: "pause-before-switchover", state: true }] });
    await qmp.execute("migrate-set-parameters", migrationParameters(options));
    if (signal.aborted) throw cancelled();
    await qmp.execute("migrate", { uri: targetUri });
    migrating = true;
    for (;;) {
      const q = await qmp.execute<QueryMigrate>("query-migrate");
      const status = q.status ?? "none";
      if (status === "completed") {
        report(status, q);
        // Its total time and downtime may come a moment after COMPLETED (completedStats).
        const done = await completedStats(qmp, q);
        return { transferredBytes: BigInt(done.ram?.transferred ?? 0), downtimeMs: done.downtime ?? 0, totalTimeMs: done["total-time"] ?? 0, diskTransferredBytes: disk.done };
      }
      if (status === "failed" || status === "cancelled") {
        migrating = false;
        throw new QuantixError("aborted", status === "cancelled" || signal.aborted ? "the migration was cancelled" : `the migration failed: ${q["error-desc"] ?? "QEMU gave no reason"}`);
      }
      if (signal.aborted) {
        await qmp.execute("migrate_cancel").catch(() => undefined);
      } else if (status === "pre-switchover" && jobs.length > 0) {
        // 3: the guest is stopped here; the mirrors' last writes land before the device state leaves.
        await finishMirrors(qmp, jobs, disk, signal);
        jobs = [];
        while (added.length > 0) await qmp.execute("blockdev-del", { "node-name": added.pop()! });
        await qmp.execute("migrate-continue", { state: "pre-switchover" });
      } else if (jobs.length > 0) {
        await readJobs(qmp, jobs, disk); // a mirror that fails now fails the migration
      }
      report(status, q);
      await sleep(POLL_MS);
    }
  } catch (err) {
    await cleanUp(qmp, jobs, added, migrating);
    throw err;
  } finally {
    await qmp.execute("migrate-set-capabilities", { capabilities: [{ capability: "pause-before-switchover", state: false }] }).catch(() => undefined);
  }
}

/** Our jobs as QEMU lists them, their bytes summed into `disk`; ABORTED when one failed or vanished. */
async function readJobs(qmp: Qmp, ids: readonly string[], disk: { done: bigint; total: bigint }): Promise<QueryJob[]> {
  const all = await qmp.execute<QueryJob[]>("query-jobs");
  const ours = ids.map((id) => {
    const job = all.find((j) => j.id === id);
    const node = id.slice("mig-".length);
    if (!job) throw new QuantixError("aborted", `copying disk ${node} to the target stopped: its mirror job is gone`);
    if (job.error !== undefined || job.status === "aborting") {
      throw new QuantixError("aborted", `copying disk ${node} to the target failed: ${job.error ?? "the job was aborted"}`);
    }
    if (job.status === "concluded" || job.status === "null") throw new QuantixError("aborted", `copying disk ${node} to the target ended before the migration did`);
    return job;
  });
  disk.done = ours.reduce((n, j) => n + BigInt(j["current-progress"]), 0n);
  disk.total = ours.reduce((n, j) => n + BigInt(j["total-progress"]), 0n);
  return ours;
}

/** Ends READY mirrors without a pivot (block-job-cancel), waits for them to conclude without error, and dismisses them. */
async function finishMirrors(qmp: Qmp, ids: readonly string[], disk: { done: bigint; total: bigint }, signal: AbortSignal): Promise<void> {
  for (const id of ids) await qmp.execute("block-job-cancel", { device: id });
  for (;;) {
    const all = await qmp.execute<QueryJob[]>("query-jobs");
    const ours = ids.map((id) => all.find((j) => j.id === id));
    const failed = ours.find((j) => j?.error !== undefined);
    if (failed) throw new QuantixError("aborted", `copying disk ${failed.id.slice("mig-".length)} to the target failed at the switch-over: ${failed.error}`);
    if (ours.every((j) => j === undefined || j.status === "concluded")) {
      disk.done = ours.reduce((n, j) => n + BigInt(j?.["current-progress"] ?? 0), 0n);
      disk.total = ours.reduce((n, j) => n + BigInt(j?.["total-progress"] ?? 0), 0n);
      break;
    }
    // A target that stalls (not dead, not writing) would hold the guest stopped: a cancel gets it running again here.
    if (signal.aborted) throw new QuantixError("aborted", "the migration was cancelled while the disks were being completed");
    await sleep(10);
  }
  for (const id of ids) await qmp.execute("job-dismiss", { id }).catch(() => undefined);
}

/**
 * After a failure: cancels the memory migration if it runs (and waits until QEMU has
 * given up on it, so the guest runs again), aborts the mirrors and removes their client
 * nodes. Best effort: what fails here leaves only the source QEMU's own objects.
 */
async function cleanUp(qmp: Qmp, jobs: readonly string[], added: readonly string[], migrating: boolean): Promise<void> {
  let polls = SETTLE_POLLS;
  if (migrating) {
    await qmp.execute("migrate_cancel").catch(() => undefined);
    while (polls-- > 0) {
      const q = await qmp.execute<QueryMigrate>("query-migrate").catch(() => undefined);
      if (!q || TERMINAL.has(q.status ?? "none") || q.status === undefined || q.status === "none") break;
      await sleep(POLL_MS);
    }
  }
  for (const id of jobs) await qmp.execute("block-job-cancel", { device: id, force: true }).catch(() => undefined);
  while (jobs.length > 0 && polls-- > 0) {
    const all = await qmp.execute<QueryJob[]>("query-jobs").catch(() => []);
    if (jobs.every((id) => { const j = all.find((x) => x.id === id); return !j || j.status === "concluded" || j.status === "null"; })) break;
    await sleep(POLL_MS);
  }
  for (const id of jobs) await qmp.execute("job-dismiss", { id }).catch(() => undefined);
  for (const node of [...added].reverse()) await qmp.execute("blockdev-del", { "node-name": node }).catch(() => undefined);
}
