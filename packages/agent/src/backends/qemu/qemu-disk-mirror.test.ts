import assert from "node:assert/strict";
import { test } from "node:test";
import { QuantixError } from "@quantix/core";
import type { MigrationProgress } from "../../backend.js";
import { migrateOutCopyingDisks } from "./qemu-disk-mirror.js";
import { exportDisks } from "./qemu-nbd-export.js";

/**
 * A fake QEMU for the QMP sequence of a migration that copies disks: block nodes, mirror
 * jobs that become READY after a few polls, and a memory migration that honours
 * pause-before-switchover. The tests check the state it ends in, not the calls made.
 */
class FakeQemu {
  readonly nodes = new Set(["disk0", "disk1"]);
  readonly jobs = new Map<string, { status: string; polls: number; error?: string; target: string }>();
  pauseBeforeSwitchover = false;
  migration = "none";
  /** Jobs still running when the device state was sent: must stay empty. */
  readonly jobsAtSwitchover: string[] = [];
  failMirror: string | undefined;
  failMigration = false;
  /** query-migrate answers COMPLETED this many times with no total time yet, as QEMU can right after its event. */
  statsLateBy = 0;
  nbd: { host: string; port: string } | undefined;
  readonly exports: string[] = [];

  async execute<T>(command: string, args: Record<string, any> = {}): Promise<T> {
    const ok = (v: unknown = {}) => v as T;
    switch (command) {
      case "blockdev-add":
        if (this.nodes.has(args["node-name"])) throw new Error(`duplicate node ${args["node-name"]}`);
        this.nodes.add(args["node-name"]);
        return ok();
      case "blockdev-del":
        if ([...this.jobs.values()].some((j) => j.target === args["node-name"])) throw new Error("node is in use");
        this.nodes.delete(args["node-name"]);
        return ok();
      case "blockdev-mirror":
        assert.ok(this.nodes.has(args["device"]) && this.nodes.has(args["target"]));
        assert.equal(args["sync"], "full");
        this.jobs.set(args["job-id"], { status: "running", polls: 0, target: args["target"] });
        return ok();
      case "query-jobs":
        return ok([...this.jobs].map(([id, j]) => {
          if (j.status === "running" && ++j.polls >= 3) j.status = "ready";
          if (this.failMirror === id && j.status !== "concluded") Object.assign(j, { status: "concluded", error: "Connection reset by peer" });
          return { id, type: "mirror", status: j.status, "current-progress": j.status === "running" ? 10 : 100, "total-progress": 100, ...(j.error ? { error: j.error } : {}) };
        }));
      case "block-job-cancel": {
        const j = this.jobs.get(args["device"]);
        if (!j) throw new Error("no job");
        j.status = "concluded";
        return ok();
      }
      case "job-dismiss":
        if (this.jobs.get(args["id"])?.status !== "concluded") throw new Error("not concluded");
        this.jobs.delete(args["id"]);
        return ok();
      case "migrate-set-capabilities":
        this.pauseBeforeSwitchover = args["capabilities"][0].state;
        return ok();
      case "migrate-set-parameters":
        return ok();
      case "migrate":
        this.migration = "active";
        return ok();
      case "migrate-continue":
        assert.equal(this.migration, "pre-switchover");
        this.jobsAtSwitchover.push(...this.jobs.keys());
        this.migration = "device";
        return ok();
      case "migrate_cancel":
        if (this.migration !== "none") this.migration = "cancelled";
        return ok();
      case "query-migrate": {
        const m = this.migration;
        if (m === "active") this.migration = this.failMigration ? "failed" : this.pauseBeforeSwitchover ? "pre-switchover" : "device";
        if (m === "device") this.migration = "completed";
        if (m === "completed" && this.statsLateBy > 0) {
          this.statsLateBy--;
          return ok({ status: m, ram: { transferred: 1000, remaining: 0, total: 1000 } });
        }
        return ok({ status: m, ram: { transferred: 1000, remaining: 0, total: 1000 }, downtime: 42, "total-time": 500, ...(m === "failed" ? { "error-desc": "target closed the connection" } : {}) });
      }
      case "nbd-server-start":
        this.nbd = args["addr"].data;
        return ok();
      case "block-export-add":
        assert.ok(this.nodes.has(args["node-name"]) && args["writable"] === true);
        this.exports.push(args["name"]);
        return ok();
      default:
        throw new Error(`unexpected command ${command}`);
    }
  }

  /** Nothing of the migration is left: no job, no client node, the capability off. */
  assertClean(): void {
    assert.deepEqual([...this.jobs.keys()], []);
    assert.deepEqual([...this.nodes].sort(), ["disk0", "disk1"]);
    assert.equal(this.pauseBeforeSwitchover, false);
  }
}

const plan = { storageUri: "tcp:127.0.0.1:10809", nodes: ["disk0", "disk1"] };
const options = (seen: MigrationProgress[]) => ({ maxDowntimeMs: 0, bandwidthMbps: 0, onProgress: (p: MigrationProgress) => void seen.push(p) });

test("the mirrors become READY, then memory moves, and the mirrors are complete before the switch-over", async () => {
  const qemu = new FakeQemu();
  const seen: MigrationProgress[] = [];
  const stats = await migrateOutCopyingDisks(qemu, "tcp:127.0.0.1:4444", plan, options(seen), new AbortController().signal);
  assert.deepEqual(qemu.jobsAtSwitchover, [], "no mirror job runs when the device state leaves");
  assert.equal(qemu.migration, "completed");
  assert.deepEqual(stats, { transferredBytes: 1000n, downtimeMs: 42, totalTimeMs: 500, diskTransferredBytes: 200n });
  assert.ok(seen.some((p) => p.status === "copying-disks" && p.diskTransferredBytes === 20n && p.diskTotalBytes === 200n), "progress of the bulk copy");
  qemu.assertClean();
});

test("statistics QEMU computes a moment after COMPLETED are waited for: the migration's total time and downtime are not reported as 0", async () => {
  const qemu = new FakeQemu();
  qemu.statsLateBy = 3;
  const stats = await migrateOutCopyingDisks(qemu, "tcp:127.0.0.1:4444", plan, options([]), new AbortController().signal);
  assert.equal(qemu.statsLateBy, 0, "asked again until they came");
  assert.deepEqual(stats, { transferredBytes: 1000n, downtimeMs: 42, totalTimeMs: 500, diskTransferredBytes: 200n });
  qemu.assertClean();
});

test("a mirror that fails (the target went away) fails the migration with its reason and leaves nothing behind", async () => {
  const qemu = new FakeQemu();
  qemu.failMirror = "mig-disk1";
  const err = await migrateOutCopyingDisks(qemu, "tcp:127.0.0.1:4444", plan, options([]), new AbortController().signal).then(() => assert.fail("migrated"), (e: unknown) => e);
  assert.ok(err instanceof QuantixError && err.code === "aborted");
  assert.match(err.message, /copying disk disk1 to the target failed: Connection reset by peer/);
  assert.equal(qemu.migration, "none", "the memory migration never started");
  qemu.assertClean();
});

test("a memory migration that fails cancels the mirrors", async () => {
  const qemu = new FakeQemu();
  qemu.failMigration = true;
  const err = await migrateOutCopyingDisks(qemu, "tcp:127.0.0.1:4444", plan, options([]), new AbortController().signal).then(() => assert.fail("migrated"), (e: unknown) => e);
  assert.match(String(err), /the migration failed: target closed the connection/);
  qemu.assertClean();
});

test("cancelling during the bulk copy stops it and cleans up", async () => {
  const qemu = new FakeQemu();
  const abort = new AbortController();
  const seen: MigrationProgress[] = [];
  const opts = { ...options(seen), onProgress: (p: MigrationProgress) => (seen.push(p), abort.abort()) };
  const err = await migrateOutCopyingDisks(qemu, "tcp:127.0.0.1:4444", plan, opts, abort.signal).then(() => assert.fail("migrated"), (e: unknown) => e);
  assert.match(String(err), /cancelled/);
  assert.equal(qemu.migration, "none");
  qemu.assertClean();
});

test("URIs other than tcp:<host>:<port> never reach QEMU", async () => {
  const qemu = new FakeQemu();
  for (const storageUri of ["exec:rm -rf /", "unix:/tmp/x", "tcp:127.0.0.1:0", "tcp:-oProxy:1"]) {
    const err = await migrateOutCopyingDisks(qemu, "tcp:127.0.0.1:4444", { ...plan, storageUri }, options([]), new AbortController().signal).then(() => assert.fail("accepted"), (e: unknown) => e);
    assert.ok(err instanceof QuantixError && err.code === "invalid_argument", storageUri);
  }
  assert.equal(qemu.nodes.size, 2);
});

test("the target exports each copied disk, writable, and retries a port taken meanwhile", async () => {
  const qemu = new FakeQemu();
  const taken = new Set([4000]);
  const start = qemu.execute.bind(qemu);
  qemu.execute = async <T>(command: string, args?: Record<string, any>): Promise<T> => {
    if (command === "nbd-server-start" && taken.has(Number(args?.["addr"].data.port))) throw new Error("Failed to bind socket: Address already in use");
    return start<T>(command, args);
  };
  let next = 4000;
  const uri = await exportDisks(qemu, "127.0.0.1", ["disk1"], async () => next++);
  assert.equal(uri, "tcp:127.0.0.1:4001");
  assert.deepEqual(qemu.exports, ["disk1"]);
});
