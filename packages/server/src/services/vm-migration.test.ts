import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code } from "@connectrpc/connect";
import { VmStatus_State as State, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { ConditionStatus } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { DrainNodeRequestSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { MIGRATION_KIND, QuantixError, randomIds, SCHEDULER, systemClock, VM_KIND, NODE_KIND } from "@quantix/core";
import { MigrationStatus_Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/migration_pb.js";
import { rejection, startTestServer, until, type TestServer } from "@quantix/testing";
import { setCondition } from "../controllers/conditions.js";
import { DrainController } from "../controllers/drain-controller.js";
import { silentLogger } from "@quantix/rpc";
import { fakeCluster, FakeNode } from "./migration-test-kit.js";
import { NodeDrainService } from "./node-drain.js";
import { NodeService } from "./node-service.js";
import { VmPowerService } from "./vm-power.js";

/*
 * MigrateVM and DrainNode refusals on the demo's simulated nodes, whose hypervisor lacks
 * the "live-migration" capability (as Firecracker's does). The real migrations are in
 * e2e/drain.test.ts.
 */

let s: TestServer;
before(async () => {
  s = await startTestServer({ simBootMs: 20 });
});
after(() => s.close());

const running = (id: string) => until(async () => ((vm: VirtualMachine) => (vm.status?.state === State.RUNNING ? vm : undefined))(await s.vms.getVM({ id })), `VM ${id} RUNNING`);

test("MigrateVM is refused up front with the reason, and changes nothing", async () => {
  const vms = (await s.vms.listVMs({})).vms;
  const nodes = (await s.nodes.listNodes({})).nodes;
  const on = vms.find((v) => v.spec?.desiredPowerState === 1)!;
  const vm = await running(on.id);
  const other = nodes.find((n) => n.id !== vm.status!.nodeId)!;

  const noCap = await rejection(s.vms.migrateVM({ vmId: vm.id, targetNodeId: other.id, live: true }));
  assert.equal(noCap.code, Code.FailedPrecondition);
  assert.match(noCap.rawMessage, /simulated hypervisor, which lacks the 'live-migration' capability/);
  const picked = await rejection(s.vms.migrateVM({ vmId: vm.id, live: true }));
  assert.equal(picked.code, Code.FailedPrecondition);
  assert.match(picked.rawMessage, /its node '.*' runs a simulated hypervisor, which lacks the 'live-migration' capability/);

  const cold = await rejection(s.vms.migrateVM({ vmId: vm.id, targetNodeId: other.id, live: false }));
  assert.equal(cold.code, Code.InvalidArgument);
  assert.match(cold.rawMessage, /^live: must be true: only live migration is offered/);
  const same = await rejection(s.vms.migrateVM({ vmId: vm.id, targetNodeId: vm.status!.nodeId, live: true }));
  assert.match(same.rawMessage, /already runs on node/);
  assert.equal((await rejection(s.vms.migrateVM({ vmId: vm.id, targetNodeId: "00000000-0000-0000-0000-00000000beef", live: true }))).code, Code.NotFound);
  assert.equal((await rejection(s.vms.migrateVM({ vmId: "00000000-0000-0000-0000-00000000dead", live: true }))).code, Code.NotFound);
  assert.equal((await rejection(s.vms.migrateVM({ vmId: vm.id, targetNodeId: other.id, maxDowntimeMs: -1, live: true }))).code, Code.InvalidArgument);

  const off = vms.find((v) => v.spec?.desiredPowerState !== 1)!;
  const notRunning = await rejection(s.vms.migrateVM({ vmId: off.id, targetNodeId: other.id, live: true }));
  assert.equal(notRunning.code, Code.FailedPrecondition);
  assert.match(notRunning.rawMessage, /only a RUNNING VM migrates live/);

  const still = await s.vms.getVM({ id: vm.id });
  assert.equal(still.status?.nodeId, vm.status!.nodeId);
  assert.equal(still.status?.state, State.RUNNING);
});

test("DrainNode reports the VMs that cannot move, and with force stops them", async () => {
  const vm = (await s.vms.listVMs({})).vms.find((v) => v.spec?.desiredPowerState === 1)!;
  const nodeId = (await running(vm.id)).status!.nodeId;
  const placed = (await s.vms.listVMs({})).vms.filter((v) => v.status?.nodeId === nodeId);

  const report = await s.nodes.drainNode({ id: nodeId });
  assert.equal(report.node?.spec?.schedulable, false, "drained nodes take no new VMs, even when VMs remain");
  const failed = report.failures.find((f) => f.vmId === vm.id);
  assert.match(failed?.reason ?? "", /lacks the 'live-migration' capability/);
  const c = report.node?.status?.conditions.find((x) => x.type === "Drained");
  assert.equal(c?.reason, "DrainIncomplete");
  assert.equal((await s.vms.getVM({ id: vm.id })).status?.state, State.RUNNING, "without force it keeps running");

  const forced = await s.nodes.drainNode({ id: nodeId, force: true, gracePeriodSec: 5 });
  assert.ok(forced.stoppedVmIds.includes(vm.id), `stopped: ${forced.stoppedVmIds.join()} failures: ${forced.failures.map((f) => f.reason).join()}`);
  assert.equal((await s.vms.getVM({ id: vm.id })).status?.state, State.STOPPED);
  // Every VM it had is off the node or stopped; the stopped ones were unplaced by the second drain.
  for (const v of placed) assert.ok(forced.stoppedVmIds.includes(v.id) || forced.migratedVmIds.includes(v.id), `VM ${v.name} handled`);
  assert.equal(forced.failures.length, 0);
});

/*
 * The migration's own logic against fake nodes with "live-migration" (FakeNode): target
 * choice and reservation through the scheduler, claims, failure handling, leftovers.
 */

const never = () => new AbortController().signal;
const req = (vmId: string, targetNodeId = "") => ({ vmId, targetNodeId, live: true, maxDowntimeMs: 0, bandwidthMbps: 0 });
const quantixError = (code: string, re: RegExp) => (err: unknown) => err instanceof QuantixError && err.code === code && re.test(err.message);

test("a target is chosen and checked by the scheduler (capacity, schedulable), and is reserved while the migration runs", async () => {
  const c = await fakeCluster({ a: 8192, b: 2048, c: 4096 });
  await c.runningVm("vm-1", "a", 3072);
  await assert.rejects(c.migration.migrate(req("vm-1", "b"), never()), quantixError("failed_precondition", /cannot migrate to node 'host-b': 0\/3 nodes fit: .*insufficient memory/));
  assert.equal(c.node("b").vms.size, 0, "nothing was prepared on the refused target");
  await c.store.of(NODE_KIND).update("c", (n) => ((n.spec!.schedulable = false), n));
  await assert.rejects(c.migration.migrate(req("vm-1"), never()), quantixError("failed_precondition", /cannot migrate to any other node: .*not schedulable/));
  await c.store.of(NODE_KIND).update("c", (n) => ((n.spec!.schedulable = true), n));

  // While the migration runs the VM counts on both nodes: a second VM no longer fits on c.
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  c.node("a").behaviour = async ({ vmId, source, target }) => (await gate, FakeNode.move(vmId, source, target));
  const moving = c.migration.migrate(req("vm-1"), never());
  const during = await until(async () => ((v) => (v?.status?.migrationTargetNodeId ? v : undefined))(await c.store.of(VM_KIND).get("vm-1")), "the claim");
  assert.equal(during.status?.migrationTargetNodeId, "c");
  assert.equal(during.status?.state, State.MIGRATING);
  await c.runningVm("vm-2", "a", 2048);
  await assert.rejects(c.migration.migrate(req("vm-2", "c"), never()), /insufficient memory/);
  release();
  const done = await moving;
  assert.equal(done.vm.status?.nodeId, "c");
  assert.equal(done.vm.status?.migrationTargetNodeId, "");
  assert.equal(c.node("c").vms.get("vm-1"), "running");
});

test("a second MigrateVM while one runs is refused naming it", async () => {
  const c = await fakeCluster({ a: 8192, b: 8192, c: 8192 });
  await c.runningVm("vm-1", "a");
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  c.node("a").behaviour = async ({ vmId, source, target }) => (await gate, FakeNode.move(vmId, source, target));
  // Both start at once: only one claim can win, whatever the interleaving.
  const results = await Promise.allSettled([c.migration.migrate(req("vm-1", "b"), never()), c.migration.migrate(req("vm-1", "c"), never()), (async () => (await new Promise((r) => setTimeout(r, 50)), release()))()]);
  const [first, second] = results;
  const failures = [first, second].filter((r) => r.status === "rejected").map((r) => (r as PromiseRejectedResult).reason as QuantixError);
  assert.equal(failures.length, 1, `one migration wins: ${failures.map((f) => f.message).join(" | ")}`);
  assert.ok(["failed_precondition", "aborted"].includes(failures[0]!.code));
  assert.match(failures[0]!.message, /already being migrated from node 'a' to node '[bc]'|changed while its migration was being set up/);
  const vm = (await c.store.of(VM_KIND).get("vm-1"))!;
  assert.equal([...c.node("b").vms.keys(), ...c.node("c").vms.keys()].join(), "vm-1", "exactly one copy, on the winner's target");
  assert.ok(c.node(vm.status!.nodeId).vms.has("vm-1"));
});

test("a migration that completed although the call failed is completed, not undone", async () => {
  const c = await fakeCluster({ a: 8192, b: 8192 });
  await c.runningVm("vm-1", "a");
  // The hypervisor completes (the agent deletes the source), then the caller's stream breaks.
  c.node("a").behaviour = async ({ vmId, source, target }) => {
    FakeNode.move(vmId, source, target);
    throw new QuantixError("unavailable", "the stream to the source's agent broke");
  };
  const done = await c.migration.migrate(req("vm-1", "b"), never());
  assert.equal(done.vm.status?.nodeId, "b");
  assert.equal(c.node("b").vms.get("vm-1"), "running", "the only copy of the guest is kept");
  assert.equal(done.vm.status?.conditions.find((x) => x.type === "Migrating")?.reason, "Completed");
});

test("a failed migration deletes only a target copy its own prepare created", async () => {
  const c = await fakeCluster({ a: 8192, b: 8192 });
  await c.runningVm("vm-1", "a");
  c.node("b").vms.set("vm-1", "running"); // someone else's copy (e.g. an HA restart not yet fenced)
  await assert.rejects(c.migration.migrate(req("vm-1", "b"), never()), quantixError("already_exists", /already exists on this host/));
  assert.equal(c.node("b").vms.get("vm-1"), "running", "a copy this call did not create is left alone");
  c.node("b").vms.delete("vm-1");
  c.node("a").behaviour = async () => {
    throw new QuantixError("aborted", "QEMU: migration failed");
  };
  await assert.rejects(c.migration.migrate(req("vm-1", "b"), never()), /QEMU: migration failed/);
  assert.equal(c.node("b").vms.has("vm-1"), false, "its own prepared copy is removed");
  const vm = (await c.store.of(VM_KIND).get("vm-1"))!;
  assert.equal(vm.status?.nodeId, "a");
  assert.equal(vm.status?.state, State.RUNNING);
  assert.equal(vm.status?.migrationTargetNodeId, "");
  assert.equal(vm.status?.conditions.find((x) => x.type === "Migrating")?.reason, "Failed");
});

test("a migration past its timeout is cancelled; a VM force-deleted meanwhile leaves no copy on the target", async () => {
  const c = await fakeCluster({ a: 8192, b: 8192 }, { timeoutMs: 200, touchEveryMs: 50 });
  await c.runningVm("vm-1", "a");
  c.node("a").behaviour = ({ signal }) => new Promise((_, reject) => signal.addEventListener("abort", () => reject(new QuantixError("aborted", "cancelled")), { once: true }));
  await assert.rejects(c.migration.migrate(req("vm-1", "b"), never()), quantixError("deadline_exceeded", /timed out after 200 ms/));
  const vm = (await c.store.of(VM_KIND).get("vm-1"))!;
  assert.equal(vm.status?.conditions.find((x) => x.type === "Migrating")?.reason, "TimedOut");
  assert.equal(c.node("b").vms.has("vm-1"), false);

  // Deleted while the migration runs: the migration completes into a VM that is gone.
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  c.node("a").behaviour = async ({ vmId, source, target }) => (await gate, FakeNode.move(vmId, source, target));
  const moving = c.migration.migrate(req("vm-1", "b"), never());
  await until(async () => (c.node("b").vms.has("vm-1") ? true : undefined), "the target prepared");
  await c.store.of(VM_KIND).delete("vm-1");
  release();
  await assert.rejects(moving, quantixError("not_found", /vm-1/));
  assert.equal(c.node("b").vms.has("vm-1"), false, "no orphan guest on the target");
});

test("progress writes are serialised: none lands after the final one, and a quiet migration keeps its lease fresh", async () => {
  const c = await fakeCluster({ a: 8192, b: 8192 }, { touchEveryMs: 30 });
  await c.runningVm("vm-1", "a");
  const stamps: number[] = [];
  c.node("a").behaviour = async ({ vmId, source, target }) => {
    for (let i = 0; i < 6; i++) {
      await new Promise((r) => setTimeout(r, 40));
      const v = (await c.store.of(VM_KIND).get(vmId))!;
      stamps.push(Number(v.updatedAt!.seconds) * 1000 + v.updatedAt!.nanos / 1e6);
    }
    return FakeNode.move(vmId, source, target);
  };
  await c.migration.migrate(req("vm-1", "b"), never());
  assert.ok(new Set(stamps).size >= 3, `the lease was refreshed while no progress came: ${stamps.join()}`);
  await new Promise((r) => setTimeout(r, 100)); // a stray touch would land now
  const vm = (await c.store.of(VM_KIND).get("vm-1"))!;
  const cond = vm.status?.conditions.find((x) => x.type === "Migrating");
  assert.equal(cond?.status, ConditionStatus.FALSE);
  assert.equal(cond?.reason, "Completed");
});

/** A drain service and a started drain controller over a fake cluster. */
async function drainable(c: Awaited<ReturnType<typeof fakeCluster>>) {
  const power = new VmPowerService(c.store, c.drivers);
  const nodes = new NodeService({ store: c.store, clock: systemClock, ids: randomIds });
  const drains = new NodeDrainService({ store: c.store, nodes, clock: systemClock, log: silentLogger });
  const reconciler = new DrainController({ store: c.store, migrations: c.migration, power, clock: systemClock, log: silentLogger });
  await reconciler.start();
  return { drains, reconciler };
}

test("a drain does not send two VMs to a target that fits one; a cancelled drain handles no further VM; a forced stop carries the grace period to the node", async () => {
  const c = await fakeCluster({ a: 8192, b: 3072 });
  await c.runningVm("vm-1", "a", 2048);
  await c.runningVm("vm-2", "a", 2048);
  const { drains, reconciler } = await drainable(c);
  try {
    const res = await drains.drain(create(DrainNodeRequestSchema, { id: "a", targetNodeId: "b" }), never());
    assert.deepEqual(res.migratedVmIds, ["vm-1"]);
    assert.equal(res.failures.length, 1);
    assert.equal(res.failures[0]?.vmId, "vm-2");
    assert.match(res.failures[0]?.reason ?? "", /cannot migrate to node 'host-b': 0\/2 nodes fit: .*insufficient memory/);
    assert.equal(c.node("b").vms.get("vm-1"), "running");
    assert.equal(c.node("a").vms.get("vm-2"), "running", "the VM that did not fit keeps running where it was");

    const cancelled = new AbortController();
    cancelled.abort();
    const none = await drains.drain(create(DrainNodeRequestSchema, { id: "a", targetNodeId: "b", force: true }), cancelled.signal);
    assert.deepEqual(none.failures.map((f) => `${f.vmId}: ${f.reason}`), ["vm-2: drain cancelled"]);
    assert.equal(c.node("a").vms.get("vm-2"), "running", "a cancelled drain neither moves nor stops");

    const forced = await drains.drain(create(DrainNodeRequestSchema, { id: "a", targetNodeId: "b", force: true, gracePeriodSec: 7 }), never());
    assert.deepEqual(forced.stoppedVmIds, ["vm-2"], forced.failures.map((f) => f.reason).join());
    assert.equal(c.node("a").shutdowns.get("vm-2")?.timeoutSec, 7, "the node got the drain's grace period");
  } finally {
    await reconciler.stop();
  }
});

test("after a restart, a leftover migration is resolved by observing both nodes before anything is booted", async () => {
  const c = await fakeCluster({ a: 8192, b: 8192 }, { started: false });
  const stale = timestampFromMs(Date.now() - 60_000);
  const leftover = async (id: string) =>
    c.store.of(VM_KIND).update(id, (v) => {
      // What an earlier control plane left: its scheduler's reservation of the target.
      v.status!.state = State.MIGRATING;
      v.status!.migrationTargetNodeId = "b";
      v.status!.conditions = setCondition(v.status!.conditions, { type: "Migrating", status: true, reason: "InProgress", message: "migrating", generation: 1n }, Date.now() - 60_000);
      v.updatedAt = stale;
      return v;
    }, { actor: SCHEDULER });
  // vm-1 completed (source gone, target runs); vm-2 did not (the target's copy is incomplete).
  await c.runningVm("vm-1", "a");
  await leftover("vm-1");
  c.node("a").vms.delete("vm-1");
  c.node("b").vms.set("vm-1", "running");
  await c.runningVm("vm-2", "a");
  await leftover("vm-2");
  c.node("b").vms.set("vm-2", "paused");
  // The control plane starts onto what the earlier one left.
  await c.start();
  const { reconciler } = await drainable(c);
  try {
    const settled = (id: string) => until(async () => ((v) => (v && !v.status?.migrationTargetNodeId && v.status?.state === State.RUNNING ? v : undefined))(await c.store.of(VM_KIND).get(id)), `${id} resolved`);
    const one = await settled("vm-1");
    assert.equal(one.status?.nodeId, "b", "the completed migration is adopted");
    assert.equal(c.node("a").vms.has("vm-1"), false, "not booted again on its source");
    assert.equal(c.node("b").vms.get("vm-1"), "running");
    const two = await settled("vm-2");
    assert.equal(two.status?.nodeId, "a");
    assert.equal(c.node("b").vms.has("vm-2"), false, "the incomplete target copy is removed");
    assert.equal(c.node("a").vms.get("vm-2"), "running");
    assert.equal(two.status?.conditions.find((x) => x.type === "Migrating")?.reason, "Interrupted");
  } finally {
    await reconciler.stop();
  }
});

test("a migration survives a restart of the control plane: found interrupted, resolved by observing both nodes, and run again to its end", async () => {
  const c = await fakeCluster({ a: 8192, b: 8192 });
  await c.runningVm("vm-1", "a");
  // The first attempt hangs until its caller (the control plane) goes away, as an agent's
  // MigrateVm stream does: the source keeps the VM and the target keeps a prepared copy.
  let attempts = 0;
  c.node("a").behaviour = ({ vmId, source, target, signal }) => {
    attempts++;
    if (attempts > 1) return Promise.resolve(FakeNode.move(vmId, source, target));
    return new Promise((_, reject) => signal.addEventListener("abort", () => reject(new QuantixError("aborted", "the caller went away")), { once: true }));
  };
  const moving = c.migration.migrate(req("vm-1", "b"), never());
  const running = await until(async () => (await c.store.of(MIGRATION_KIND).list({ where: { vm_id: "vm-1", phase: MigrationStatus_Phase.RUNNING }, order: { field: "created_at", desc: false }, limit: 1 })).items[0], "the migration running");
  assert.equal(c.node("b").vms.get("vm-1"), "paused", "the target holds the prepared copy");

  await c.restart();
  const done = await moving;
  assert.equal(done.vm.status?.nodeId, "b");
  assert.equal(done.vm.status?.migrationTargetNodeId, "");
  assert.equal(attempts, 2, "the interrupted transfer ran again");
  assert.equal(c.node("b").vms.get("vm-1"), "running");
  assert.equal(c.node("a").vms.has("vm-1"), false);
  const all = (await c.store.of(MIGRATION_KIND).list({ where: { vm_id: "vm-1" }, order: { field: "created_at", desc: false }, limit: 10 })).items;
  assert.deepEqual(all.map((m) => [m.id, MigrationStatus_Phase[m.status!.phase]]), [[running.id, "SUCCEEDED"]], "one migration, which succeeded");
  await c.close();
});

test("a VM with disks on node-local storage: the source's plan reaches the target's prepare, and the disk bytes copied are in the Migration and MigrateVM's stats", async () => {
  const c = await fakeCluster({ a: 8192, b: 8192 });
  await c.runningVm("vm-1", "a");
  const disks = [{ diskId: "root", format: "qcow2", virtualSizeBytes: 64n << 20n }];
  c.node("a").localDisks.set("vm-1", disks);
  const done = await c.migration.migrate(req("vm-1", "b"), never());
  assert.equal(done.vm.status?.nodeId, "b");
  assert.deepEqual(c.node("b").preparedCopies.get("vm-1"), disks, "the target was asked to create the copies");
  assert.equal(done.stats.diskTransferredBytes, 64n << 20n);
  const m = (await c.store.of(MIGRATION_KIND).list({ where: { vm_id: "vm-1" }, order: { field: "created_at", desc: true }, limit: 1, countTotal: false })).items[0]!;
  assert.equal(m.status?.phase, MigrationStatus_Phase.SUCCEEDED);
  assert.equal(m.status?.diskTransferredBytes, 64n << 20n);
  assert.match(m.status!.message, /and 64 MiB of disk copied/);
  // A VM whose storage is all shared: nothing is copied and no disk bytes appear.
  await c.runningVm("vm-2", "a");
  const plain = await c.migration.migrate(req("vm-2", "b"), never());
  assert.deepEqual(c.node("b").preparedCopies.get("vm-2"), []);
  assert.equal(plain.stats.diskTransferredBytes, undefined);
});
