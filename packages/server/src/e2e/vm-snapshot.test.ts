import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { create } from "@bufbuild/protobuf";
import { StorageDeviceSchema, type StorageDevice } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";
import { mkdir } from "node:fs/promises";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VmStatus_State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { SnapshotState } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_pb.js";
import { SnapshotService } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_service_pb.js";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { StoragePoolService } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import { StoragePoolState, StoragePoolType } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { VolumeState } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { VolumeService } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import { QemuBackend, SimulatedBackend, VmManager } from "@quantix/agent";
import { buildTestGuest, consoleText, ensureDebianPackages, GUEST_TICK, guestTicks, guestVmConfig, lastTick, rejection, startTestServer, TestAgent, ticksPast, until, type TestGuest, type TestServer } from "@quantix/testing";

// VM snapshots on a real TCG guest whose busybox init prints a counter 5 times a second
// (the one real-VM test file of snapshots): on the agent's QEMU backend, a snapshot with
// memory taken at tick N, reverted after the guest counted on, makes the guest count again
// from about N (into the running QEMU, and into a QEMU started for a stopped VM); a
// disk-only snapshot of a stopped VM brings back the data qemu-io wrote; raw disks and
// backends without the capability are refused, changing nothing. Then the same through
// the control plane's SnapshotService, on a node whose in-process agent runs QEMU.

const run = promisify(execFile);
const BOOT_MS = 60_000;
let guest: TestGuest;
let dir: string;

before(async () => {
  await ensureDebianPackages(["qemu-system-x86", "qemu-utils", "busybox-static", "cpio"]);
  guest = await buildTestGuest();
  dir = await mkdtemp(path.join(os.tmpdir(), "quantix-vm-snapshot-"));
});

after(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function disk(name: string, format: "qcow2" | "raw" = "qcow2"): Promise<string> {
  const file = path.join(dir, `${name}.${format}`);
  await run("qemu-img", ["create", "-q", "-f", format, file, "64M"]);
  return file;
}

const dev = (id: string, file: string): StorageDevice => create(StorageDeviceSchema, { id, path: file });

/**
 * A control plane and one in-process agent on QEMU whose node is READY with "vm-snapshot";
 * `fn` runs there (`ctx.vmId`: a VM to delete afterwards), then every QEMU, the agent and
 * the control plane are stopped.
 */
async function onQemuNode(name: string, label: string, fn: (n: { s: TestServer; agent: TestAgent; stateDir: string; nodeId: string }, ctx: { vmId: string }) => Promise<void>): Promise<void> {
  const stateDir = path.join(dir, name);
  await mkdir(path.join(stateDir, "images"), { recursive: true });
  const s = await startTestServer({ demo: false, defaultQuota: {}, defaultDeadlineMs: 30_000 });
  const agent = new TestAgent(new QemuBackend({ stateDir, kvm: false }), stateDir, `${label}-${process.pid}`, 200, [path.join(stateDir, "images"), guest.imageDir]);
  const ctx = { vmId: "" };
  try {
    await agent.start(s.url);
    const nodeId = await until(async () => {
      const n = (await s.nodes.listNodes({})).nodes.find((x) => x.hostname === agent.name);
      return n?.status?.phase === Phase.READY && n.status.hypervisor?.capabilities.includes("vm-snapshot") ? n.id : undefined;
    }, "the QEMU agent's node READY with vm-snapshot", 30_000);
    await fn({ s, agent, stateDir, nodeId }, ctx);
  } finally {
    if (ctx.vmId) await s.vms.deleteVM({ id: ctx.vmId, force: true }).catch(() => undefined);
    for (const v of await agent.backend.listVMs().catch(() => [])) if (v.pid) process.kill(v.pid, "SIGKILL");
    await agent.kill().catch(() => undefined);
    await agent.backend.close();
    await s.close();
  }
}

/** The ticks the guest printed after the first `from` characters of its console. */
async function ticksAfter(b: QemuBackend, vmId: string, from: number): Promise<number[]> {
  return [...(await consoleText(b, vmId)).slice(from).matchAll(/quantix-tick (\d+)/g)].map((m) => Number(m[1]));
}

test("a snapshot with memory, reverted into the running QEMU and into a stopped VM, makes the guest continue from the snapshot point", { timeout: 300_000 }, async () => {
  const backend = new QemuBackend({ stateDir: path.join(dir, "state-mem"), kvm: false });
  const vmId = `snap-${process.pid}`;
  const storage = [dev("root", await disk("mem-a")), dev("data", await disk("mem-b"))];
  try {
    assert.ok(backend.capabilities.has("vm-snapshot"));
    await backend.createVM(vmId, guestVmConfig(guest, 128, { storage }));
    await backend.bootVM(vmId);
    await ticksPast(backend, vmId, 5, "the counter running", BOOT_MS);

    const tag = randomUUID();
    const before = await lastTick(backend, vmId);
    const snap = await backend.snapshotVM(vmId, tag, true);
    const at = await lastTick(backend, vmId);
    assert.equal(snap.snapshotId, tag);
    assert.equal(snap.memoryIncluded, true);
    assert.ok(snap.vmStateBytes > 0n);
    assert.deepEqual([...snap.diskIds].sort(), ["data", "root"], "every disk holds it");
    assert.equal(snap.complete, true);
    assert.equal((await backend.getVMInfo(vmId)).state, "running", "the guest runs on after the save");
    assert.deepEqual(await backend.snapshotVM(vmId, tag, true).then((x) => x.snapshotId), tag, "idempotent");

    await ticksPast(backend, vmId, at + 10, "the counter well past the snapshot", BOOT_MS);
    let mark = (await consoleText(backend, vmId)).length;
    await backend.revertVMSnapshot(vmId, tag);
    assert.equal((await backend.getVMInfo(vmId)).state, "running");
    // Ticks printed before the load may still come first; then the count starts again near the snapshot point.
    const past = await lastTick(backend, vmId);
    assert.ok(past >= at + 10);
    let again = await until(async () => {
      const t = await ticksAfter(backend, vmId, mark);
      return t.some((x) => x >= before && x <= at + 3) ? t : undefined;
    }, `ticks back near the snapshot point (${before}..${at})`, BOOT_MS, 100);
    assert.ok(again.at(-1)! < past, `the count went back from ${past}: ${again.join(",")}`);

    // Stopped, then reverted: QEMU starts from the snapshot (-loadvm) and the count goes on from it.
    await backend.shutdownVM(vmId, { force: true, timeoutSeconds: 0 });
    mark = (await consoleText(backend, vmId)).length;
    await backend.revertVMSnapshot(vmId, tag);
    assert.equal((await backend.getVMInfo(vmId)).state, "running");
    again = await until(async () => {
      const t = await ticksAfter(backend, vmId, mark);
      return t.length >= 2 ? t : undefined;
    }, "ticks after the revert of a stopped VM", BOOT_MS, 100);
    assert.ok(again[0]! >= before && again[0]! <= at + 2, `a stopped VM resumed from the snapshot point (${before}..${at}), got ${again.join(",")}`);
    assert.ok(!(await consoleText(backend, vmId)).slice(mark).includes(guest.marker), "it did not boot");

    // A disk-only snapshot while running; it is refused as a revert target while QEMU runs.
    const diskOnly = randomUUID();
    const d = await backend.snapshotVM(vmId, diskOnly, false);
    assert.equal(d.memoryIncluded, false);
    const refused = await backend.revertVMSnapshot(vmId, diskOnly).then(() => assert.fail("reverted"), (e: unknown) => e);
    assert.ok(refused instanceof QuantixError && refused.code === "failed_precondition", String(refused));
    assert.deepEqual((await backend.listVMSnapshots(vmId)).map((x) => x.snapshotId), [tag, diskOnly]);

    await backend.deleteVMSnapshot(vmId, tag);
    assert.deepEqual((await backend.listVMSnapshots(vmId)).map((x) => x.snapshotId), [diskOnly], "deleted with QEMU running (snapshot-delete)");
    const gone = await backend.deleteVMSnapshot(vmId, tag).then(() => assert.fail("deleted twice"), (e: unknown) => e);
    assert.ok(gone instanceof QuantixError && gone.code === "not_found" && gone.message.includes(tag), String(gone));
    assert.ok((await guestTicks(backend, vmId)).length > 0);
  } finally {
    const info = await backend.getVMInfo(vmId).catch(() => undefined);
    if (info?.pid) process.kill(info.pid, "SIGKILL");
    await backend.close();
  }
});

test("a disk-only snapshot of a stopped VM brings back its disks' data; raw disks and backends without the capability are refused", { timeout: 120_000 }, async () => {
  const backend = new QemuBackend({ stateDir: path.join(dir, "state-disk"), kvm: false });
  const vmId = `disk-${process.pid}`;
  const file = await disk("offline");
  const io = (cmd: string) => run("qemu-io", ["-f", "qcow2", "-c", cmd, file]).then((r) => r.stdout);
  try {
    await backend.createVM(vmId, guestVmConfig(guest, 128, { storage: [dev("data", file)] }));
    await io("write -P 0x11 0 64k");
    const tag = randomUUID();
    const s = await backend.snapshotVM(vmId, tag, true);
    assert.equal(s.memoryIncluded, false, "a VM that does not run has no memory to save");
    await io("write -P 0x22 0 64k");
    await backend.revertVMSnapshot(vmId, tag);
    assert.doesNotMatch(await io("read -P 0x11 0 64k"), /verification failed/i, "the disk holds the snapshot's data again");
    assert.equal((await backend.getVMInfo(vmId)).state, "created", "a disk-only revert does not start the VM");
    const missing = randomUUID();
    const nf = await backend.revertVMSnapshot(vmId, missing).then(() => assert.fail("reverted"), (e: unknown) => e);
    assert.ok(nf instanceof QuantixError && nf.code === "not_found" && nf.message.includes(missing), String(nf));
    await backend.deleteVMSnapshot(vmId, tag);
    assert.deepEqual(await backend.listVMSnapshots(vmId), []);

    // A raw disk: refused with the disk's name; nothing is taken on the other disk.
    const rawVm = `raw-${process.pid}`;
    const other = await disk("beside-raw");
    await backend.createVM(rawVm, guestVmConfig(guest, 128, { storage: [dev("ok", other), dev("scratch", await disk("scratch", "raw"))] }));
    const raw = await backend.snapshotVM(rawVm, randomUUID(), false).then(() => assert.fail("taken"), (e: unknown) => e);
    assert.ok(raw instanceof QuantixError && raw.code === "failed_precondition" && /disk 'scratch'.*raw/.test(raw.message), String(raw));
    const { stdout } = await run("qemu-img", ["info", "--output=json", "-f", "qcow2", other]);
    assert.equal((JSON.parse(stdout) as { snapshots?: unknown[] }).snapshots, undefined, "the qcow2 disk beside it holds no snapshot");
  } finally {
    await backend.close();
  }

  // A backend without "vm-snapshot" answers FAILED_PRECONDITION naming it.
  const sim = new VmManager({ backend: new SimulatedBackend({ bootMs: 1 }), stateDir: path.join(dir, "sim") });
  const e = await Promise.resolve()
    .then(() => sim.snapshotVm("vm-1", randomUUID(), true))
    .then(() => assert.fail("taken"), (x: unknown) => x);
  assert.ok(e instanceof QuantixError && e.code === "failed_precondition" && e.message.includes('"vm-snapshot"'), String(e));
});

test("through SnapshotService: a VM snapshot with memory on a QEMU agent's node, reverted, makes the guest count again from the snapshot point", { timeout: 240_000 }, async () => {
  await onQemuNode("cp-agent", "snap-qemu", async ({ s, agent, stateDir, nodeId }, ctx) => {
    const file = path.join(stateDir, "images", "root.qcow2");
    await run("qemu-img", ["create", "-q", "-f", "qcow2", file, "64M"]);
    const vm = await s.vms.createVM({
      name: "snapshotted",
      nodeId,
      spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot: { directBoot: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, cmdline: guest.kernelArgs } }, disks: [{ id: "root", hostPath: file }] },
    });
    ctx.vmId = vm.id;
    await s.vms.startVM({ id: vm.id });
    const text = async () => new TextDecoder().decode((await s.vms.getConsoleOutput({ vmId: vm.id, tailBytes: 1 << 20 })).data);
    const ticks = async (from = 0) => [...(await text()).slice(from).matchAll(new RegExp(`${GUEST_TICK} (\\d+)`, "g"))].map((m) => Number(m[1]));
    const last = async () => Math.max(0, ...(await ticks()));
    await until(async () => ((await last()) > 5 ? true : undefined), "the counter running", BOOT_MS, 200);

    const snapshots = createClient(SnapshotService, s.transport);
    const before = await last();
    const snap = await snapshots.createSnapshot({ name: "live", spec: { target: { case: "vmId", value: vm.id }, includeMemory: true } });
    const taken = await until(async () => {
      const x = await snapshots.getSnapshot({ id: snap.id });
      if (x.status?.state === SnapshotState.ERROR) throw new Error(x.status.errorMessage);
      return x.status?.state === SnapshotState.AVAILABLE ? x : undefined;
    }, "the VM snapshot AVAILABLE", 60_000, 200);
    const at = await last();
    assert.equal(taken.projectId, vm.projectId);
    assert.equal(taken.status?.memoryIncluded, true);
    assert.ok((taken.status?.memorySizeBytes ?? 0n) > 0n);
    assert.equal(taken.status?.current, true);
    assert.equal((await s.vms.getVM({ id: vm.id })).status?.state, VmStatus_State.RUNNING);

    await until(async () => ((await last()) > at + 10 ? true : undefined), "the counter past the snapshot", BOOT_MS, 200);
    const past = await last();
    const mark = (await text()).length;
    await snapshots.revertToSnapshot({ id: snap.id });
    const reverted = await until(async () => {
      const x = await snapshots.getSnapshot({ id: snap.id });
      return x.status?.observedGeneration === x.generation && x.status.state === SnapshotState.AVAILABLE ? x : undefined;
    }, "the revert done", 60_000, 200);
    assert.equal(reverted.status?.conditions.find((c) => c.type === "Reverted")?.status, 1 /* TRUE */, reverted.status?.errorMessage);
    const again = await until(async () => {
      const t = await ticks(mark);
      return t.some((x) => x >= before && x <= at + 3) ? t : undefined;
    }, `ticks back near the snapshot point (${before}..${at}, was at ${past})`, BOOT_MS, 200);
    assert.ok(again.length > 0);

    // A disk-only snapshot cannot be reverted into the running VM: refused, nothing changes.
    const refused = await snapshots.revertToSnapshot({ id: (await snapshots.createSnapshot({ name: "disks", spec: { target: { case: "vmId", value: vm.id } } })).id }).then(() => undefined, (e: unknown) => e);
    assert.ok(refused instanceof Error && /CREATING|STOPPED/.test(refused.message), String(refused));

    await snapshots.deleteSnapshot({ id: snap.id });
    const left = await agent.manager.listVmSnapshots(vm.id);
    assert.ok(!left.some((x) => x.snapshotId === snap.id), "gone from the VM's disk");
  });
});

test("through SnapshotService: a volume a running VM uses is snapshotted live on that disk alone, deleted live, and reverted once free; a VM snapshot can leave disks out and start the VM after its revert", { timeout: 240_000 }, async () => {
  await onQemuNode("cp-agent-live", "snap-live", async ({ s, stateDir, nodeId }, ctx) => {
    const pools = createClient(StoragePoolService, s.transport);
    const volumes = createClient(VolumeService, s.transport);
    const snapshots = createClient(SnapshotService, s.transport);
    const pool = await pools.createStoragePool({ name: "local", spec: { type: StoragePoolType.LOCAL_DIR, nodeIds: [nodeId] } });
    await until(async () => ((await pools.getStoragePool({ id: pool.id })).status?.state === StoragePoolState.READY ? true : undefined), "the pool READY");
    const data = await volumes.createVolume({ name: "data", spec: { sizeGib: 1n, poolId: pool.id } });
    await until(async () => ((await volumes.getVolume({ id: data.id })).status?.state === VolumeState.AVAILABLE ? true : undefined), "the data volume AVAILABLE");
    const dataFile = path.join(stateDir, "pools", pool.id, `${data.id}.qcow2`);
    await run("qemu-io", ["-f", "qcow2", "-c", "write -P 0x11 0 64k", dataFile]);
    const root = path.join(stateDir, "images", "root.qcow2");
    await run("qemu-img", ["create", "-q", "-f", "qcow2", root, "64M"]);
    const tags = async (file: string) => ((await run("qemu-img", ["snapshot", "-U", "-l", file])).stdout.match(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g) ?? []);
    const settled = (id: string, what: string) =>
      until(async () => {
        const x = await snapshots.getSnapshot({ id });
        if (x.status?.state === SnapshotState.ERROR) throw new Error(x.status.errorMessage);
        return x.status?.state === SnapshotState.AVAILABLE && x.status.observedGeneration === x.generation ? x : undefined;
      }, what, 60_000, 200);

    const vm = await s.vms.createVM({
      name: "live-volume",
      nodeId,
      spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot: { directBoot: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, cmdline: guest.kernelArgs } }, disks: [{ id: "root", hostPath: root }, { id: "data", volumeId: data.id }] },
    });
    ctx.vmId = vm.id;
    await s.vms.startVM({ id: vm.id });
    const text = async () => new TextDecoder().decode((await s.vms.getConsoleOutput({ vmId: vm.id, tailBytes: 1 << 20 })).data);
    await until(async () => (new RegExp(`${GUEST_TICK} \\d+`).test(await text()) ? true : undefined), "the guest counting", BOOT_MS, 200);
    assert.equal((await volumes.getVolume({ id: data.id })).status?.state, VolumeState.IN_USE);

    // 1. A snapshot of the IN_USE volume, taken through the running QEMU, on that disk only.
    const live = await snapshots.createSnapshot({ name: "live", spec: { target: { case: "volumeId", value: data.id } } });
    const taken = await settled(live.id, "the live volume snapshot AVAILABLE");
    assert.equal(taken.status?.memoryIncluded, false);
    assert.equal((await s.vms.getVM({ id: vm.id })).status?.state, VmStatus_State.RUNNING, "the VM kept running");
    assert.deepEqual(await tags(dataFile), [live.id], "the tag is in the volume's file");
    assert.deepEqual(await tags(root), [], "and in no other disk of the VM");

    // 2. A VM snapshot leaving the data disk out: the root disk alone holds it.
    const badExclude = await rejection(snapshots.createSnapshot({ name: "bad", spec: { target: { case: "vmId", value: vm.id }, excludedDiskIds: ["nope"] } }));
    assert.equal(badExclude.code, Code.InvalidArgument);
    assert.deepEqual(badExclude.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((f) => f.field)), ["spec.excluded_disk_ids[0]"]);
    const noDisk = await rejection(snapshots.createSnapshot({ name: "bad", spec: { target: { case: "vmId", value: vm.id }, excludedDiskIds: ["root", "data"] } }));
    assert.equal(noDisk.code, Code.FailedPrecondition, noDisk.message);
    const rootOnly = await snapshots.createSnapshot({ name: "root-only", spec: { target: { case: "vmId", value: vm.id }, excludedDiskIds: ["data"] } });
    const rootTaken = await settled(rootOnly.id, "the VM snapshot without its data disk AVAILABLE");
    assert.deepEqual(rootTaken.status?.volumeSnapshots.map((v) => v.diskId), [], "no volume of the VM is in it");
    assert.deepEqual(await tags(root), [rootOnly.id]);
    assert.deepEqual(await tags(dataFile), [live.id], "the excluded disk was left alone");

    // 3. A live volume snapshot deleted while the VM runs goes from the file; a revert of one is refused while the VM uses the volume.
    const doomed = await snapshots.createSnapshot({ name: "doomed", spec: { target: { case: "volumeId", value: data.id } } });
    await settled(doomed.id, "the second live snapshot AVAILABLE");
    assert.deepEqual((await tags(dataFile)).sort(), [live.id, doomed.id].sort());
    await snapshots.deleteSnapshot({ id: doomed.id });
    await until(() => snapshots.getSnapshot({ id: doomed.id }).then(() => undefined, (e: unknown) => (ConnectError.from(e).code === Code.NotFound ? true : undefined)), "the deleted snapshot gone", 60_000, 200);
    assert.deepEqual(await tags(dataFile), [live.id], "deleted from the running VM's disk");
    const busy = await rejection(snapshots.revertToSnapshot({ id: live.id }));
    assert.equal(busy.code, Code.FailedPrecondition);
    assert.match(busy.message, new RegExp(`in use|IN_USE`));

    // 4. The VM stopped, its disk-only snapshot reverted with start_after_revert: the VM runs again.
    await s.vms.stopVM({ id: vm.id, force: true });
    await until(async () => ((await s.vms.getVM({ id: vm.id })).status?.state === VmStatus_State.STOPPED ? true : undefined), "the VM STOPPED", 60_000, 200);
    await snapshots.revertToSnapshot({ id: rootOnly.id, startAfterRevert: true });
    const back = await settled(rootOnly.id, "the revert of the VM snapshot done");
    assert.equal(back.status?.conditions.find((c) => c.type === "Reverted")?.status, 1 /* TRUE */, back.status?.errorMessage);
    assert.equal(back.startAfterRevert, true);
    await until(async () => ((await s.vms.getVM({ id: vm.id })).status?.state === VmStatus_State.RUNNING ? true : undefined), "the VM started after the revert", 60_000, 200);

    // 5. The VM gone, the volume is free: data written after the live snapshot goes with its revert.
    await s.vms.deleteVM({ id: vm.id, force: true });
    ctx.vmId = "";
    await until(async () => ((await volumes.getVolume({ id: data.id })).status?.state === VolumeState.AVAILABLE ? true : undefined), "the volume AVAILABLE again", 60_000, 200);
    await run("qemu-io", ["-f", "qcow2", "-c", "write -P 0x22 0 64k", dataFile]);
    await snapshots.revertToSnapshot({ id: live.id });
    await settled(live.id, "the volume reverted to its live snapshot");
    await run("qemu-io", ["-f", "qcow2", "-c", "read -P 0x11 0 64k", dataFile]);
  });
});
