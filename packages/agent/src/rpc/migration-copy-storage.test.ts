import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { VmService, VmState, type MigrateVmProgress } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { silentLogger } from "@quantix/rpc";
import { buildTestGuest, ensureDebianPackages, rejection, until, GUEST_TICK, type TestGuest } from "@quantix/testing";
import { QemuBackend } from "../backends/qemu/qemu-backend.js";
import { NodeStorage } from "../storage/node-storage.js";
import { isProcessAlive } from "../process-state.js";
import { VmManager } from "../vm-manager.js";
import { startAgentServer, type AgentServer } from "./agent-server.js";

/**
 * Live migration with node-local disks between two QEMU agents on this machine: each has
 * its own state directory and pool root, no directory is shared, and the VM's disk is a
 * volume of the DIR pool "local" that both nodes have (`<pool root>/local/<volume>.qcow2`,
 * the pool root differing per node), so it is copied (NBD + blockdev-mirror) into the
 * target's pool while the guest runs, and becomes a volume there.
 */

const run = promisify(execFile);
const BOOT_MS = 60_000;
const MIB = 1048576n;

interface Agent {
  readonly backend: QemuBackend;
  readonly server: AgentServer;
  readonly client: Client<typeof VmService>;
  readonly storage: NodeStorage;
  /** The "local" pool's directory on this node. */
  readonly pool: string;
}

let root: string;
let guest: TestGuest;
const agents: Agent[] = [];

async function startAgent(name: string): Promise<Agent> {
  const poolRoot = path.join(root, name, "pools");
  const storage = new NodeStorage({ poolRoot, sharedDirs: [] });
  const pool = (await storage.ensurePool("local", "DIR", "")).dir;
  const backend = new QemuBackend({ stateDir: path.join(root, name, "state"), kvm: false });
  // Each agent may use the guest's kernel and its own pools' volumes; nothing is shared.
  const manager = new VmManager({ backend, sharedDirs: [], imageDirs: [guest.imageDir, poolRoot] });
  await manager.start();
  const server = await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: silentLogger, storage });
  const agent = { backend, server, storage, pool, client: createClient(VmService, createGrpcTransport({ baseUrl: server.url })) };
  agents.push(agent);
  return agent;
}

before(async () => {
  await ensureDebianPackages(["qemu-system-x86", "qemu-utils", "busybox-static", "cpio"]);
  guest = await buildTestGuest();
  root = await mkdtemp(path.join(os.tmpdir(), "quantix-migcopy-"));
});

after(async () => {
  for (const a of agents) {
    for (const vm of (await a.client.listVms({}).catch(() => ({ vms: [] }))).vms) await a.client.deleteVm({ vmId: vm.vmId, force: true }).catch(() => undefined);
    await a.server.close();
    await a.backend.close();
  }
  await rm(root, { recursive: true, force: true });
});

const config = (disk: string) => ({
  cpu: { vcpuCount: 1 },
  memory: { sizeBytes: 128n * MIB },
  boot: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, kernelArgs: guest.kernelArgs },
  storage: [{ id: "data", path: disk }],
});
const lastTick = async (a: Agent, vmId: string): Promise<number> => {
  const out = new TextDecoder().decode((await a.client.getConsoleOutput({ vmId, tailBytes: 65536 })).data);
  return Math.max(0, ...[...out.matchAll(new RegExp(`${GUEST_TICK} (\\d+)`, "g"))].map((m) => Number(m[1])));
};
async function qemuIo(file: string, cmd: string, ...flags: string[]): Promise<void> {
  const { stdout } = await run("qemu-io", ["-f", "qcow2", ...flags, "-c", cmd, file]);
  assert.doesNotMatch(stdout, /fail/i, `qemu-io ${cmd}: ${stdout}`);
}
/** Writes a pattern through the running QEMU's block layer (HMP qemu-io), as a guest write would. */
async function guestWrite(a: Agent, vmId: string, cmd: string): Promise<void> {
  // -d: through the guest's virtio-blk device (its BlockBackend), which holds the write permission.
  const out = await a.backend.executeQmp<string>(vmId, "human-monitor-command", { "command-line": `qemu-io -d /machine/peripheral/disk0-dev/virtio-backend "${cmd}"` });
  assert.doesNotMatch(out, /error|fail/i, `HMP qemu-io ${cmd}: ${out}`);
}

test("a running guest with a node-local qcow2 disk moves live: the disk is copied while it runs, then it runs on the target", { timeout: 240_000 }, async () => {
  const source = await startAgent("a");
  const target = await startAgent("b");
  const vmId = `migcopy-${process.pid}`;
  // The disk is a linked clone of a base volume (as a VM's disk made from an image is): the
  // copy on the target is the whole disk as the guest sees it, flattened.
  const baseId = randomUUID();
  const base = (await source.storage.volumes.create({ poolId: "local", id: baseId, format: "qcow2", sizeBytes: 64n * MIB })).path;
  await qemuIo(base, "write -P 0x5a 0 4M"); // data in the base image, under the clone
  const volumeId = randomUUID();
  const srcDisk = (await source.storage.volumes.create({ poolId: "local", id: volumeId, format: "qcow2", sizeBytes: 0n, source: { volumeId: baseId, mode: "linked" } })).path;
  // The same volume in the target's pool: its own pool root, the same pool and volume ids.
  const tgtDisk = path.join(target.pool, `${volumeId}.qcow2`);
  await qemuIo(srcDisk, "write -P 0x5a 1M 1M"); // and in the clone itself, before the VM starts
  await source.client.createVm({ vmId, config: config(srcDisk) });
  await source.client.bootVm({ vmId });
  await until(async () => ((await lastTick(source, vmId)) >= 2 ? true : undefined), "the guest counting on the source", BOOT_MS, 200);
  await guestWrite(source, vmId, "write -P 0x3c 4M 1M"); // written while it runs
  const sourcePid = (await source.client.getVmInfo({ vmId })).backendInfo!.processId;

  const plan = await source.client.planMigration({ vmId });
  assert.deepEqual(plan.diskCopies.map((c) => [c.diskId, c.format, c.virtualSizeBytes]), [["data", "qcow2", 64n * MIB]]);
  const prepare = () => target.client.prepareMigration({ vmId, config: config(tgtDisk), copyStorage: true, diskCopies: plan.diskCopies });

  // Refused up front, nothing created: a local disk neither shared nor copied.
  const uncopied = await rejection(target.client.prepareMigration({ vmId, config: config(tgtDisk), copyStorage: true }));
  assert.equal(uncopied.code, Code.FailedPrecondition);
  assert.match(uncopied.rawMessage, /storage\[0\]\.path .* neither on shared storage nor among disk_copies/);
  assert.equal(existsSync(tgtDisk), false);
  // Without copy_storage the old rule holds.
  const unshared = await rejection(source.client.migrateVm({ vmId, targetUri: "tcp:127.0.0.1:1" })[Symbol.asyncIterator]().next());
  assert.equal(unshared.code, Code.FailedPrecondition);

  // 1. Cancelled while the disk is copied (throttled to 1 Mbit/s): the source runs on, the target's copy goes with its VM.
  let prepared = await prepare();
  assert.match(prepared.storageUri, /^tcp:127\.0\.0\.1:\d+$/);
  assert.ok(existsSync(tgtDisk), "the target created the copy");
  const slow = source.client.migrateVm({ vmId, targetUri: prepared.targetUri, copyStorage: true, storageUri: prepared.storageUri, bandwidthMbps: 1 });
  const cancelled = await rejection((async () => {
    for await (const p of slow) if (p.status === "copying-disks") await source.client.cancelMigration({ vmId });
  })());
  assert.equal(cancelled.code, Code.Aborted);
  assert.match(cancelled.rawMessage, /cancelled/);
  assert.equal((await source.client.getVmInfo({ vmId })).state, VmState.RUNNING);
  assert.deepEqual(await source.backend.executeQmp(vmId, "query-jobs"), [], "no mirror job is left on the source");
  await target.client.deleteVm({ vmId, force: true });
  assert.equal(existsSync(tgtDisk), false, "the partial copy was removed with the target VM");

  // 2. The target's QEMU dies before the copy: a clear error, the source runs on.
  prepared = await prepare();
  process.kill((await target.client.getVmInfo({ vmId })).backendInfo!.processId, "SIGKILL");
  await until(async () => ((await target.client.getVmInfo({ vmId })).state === VmState.CRASHED ? true : undefined), "the target crashed", 10_000, 50);
  const dead = await rejection((async () => {
    for await (const _ of source.client.migrateVm({ vmId, targetUri: prepared.targetUri, copyStorage: true, storageUri: prepared.storageUri })) continue;
  })());
  assert.equal(dead.code, Code.Unavailable, dead.rawMessage);
  assert.match(dead.rawMessage, /the target's disk disk0 cannot be reached at tcp:127\.0\.0\.1:\d+: .*refused/i);
  assert.equal((await source.client.getVmInfo({ vmId })).state, VmState.RUNNING);
  await target.client.deleteVm({ vmId, force: true });
  assert.equal(existsSync(tgtDisk), false);

  // 2b. The target's QEMU dies while the disk is being copied: the mirror fails, with the reason.
  prepared = await prepare();
  const targetPid = (await target.client.getVmInfo({ vmId })).backendInfo!.processId;
  const midway = await rejection((async () => {
    // Throttled so the copy is still running when the target dies; the mirror notices at its
    // next write, after the throttle's pause for its first burst (some seconds at 2 MB/s).
    for await (const p of source.client.migrateVm({ vmId, targetUri: prepared.targetUri, copyStorage: true, storageUri: prepared.storageUri, bandwidthMbps: 16 })) {
      if (p.status === "copying-disks" && isProcessAlive(targetPid)) process.kill(targetPid, "SIGKILL");
    }
  })());
  assert.equal(midway.code, Code.Aborted, midway.rawMessage);
  // (On a machine slow enough for the copy to finish first, the memory migration fails instead.)
  assert.match(midway.rawMessage, /copying disk disk0 to the target failed: |the migration failed: /);
  assert.equal((await source.client.getVmInfo({ vmId })).state, VmState.RUNNING);
  assert.deepEqual(await source.backend.executeQmp(vmId, "query-jobs"), []);
  await target.client.deleteVm({ vmId, force: true });
  assert.equal(existsSync(tgtDisk), false);

  // 3. The migration, with a write while the disk is being copied.
  prepared = await prepare();
  const before = await lastTick(source, vmId);
  const progress: MigrateVmProgress[] = [];
  let wroteDuringCopy = false; // the first progress message comes before the bulk copy ends
  for await (const p of source.client.migrateVm({ vmId, targetUri: prepared.targetUri, copyStorage: true, storageUri: prepared.storageUri, maxDowntimeMs: 300 })) {
    progress.push(p);
    if (!wroteDuringCopy && p.status === "copying-disks") wroteDuringCopy = await guestWrite(source, vmId, "write -P 0xc3 5M 1M").then(() => true, () => false);
  }
  const last = progress.at(-1)!;
  assert.ok(wroteDuringCopy, "the guest wrote while its disk was being copied");
  assert.ok(last.completed && last.statistics, "the stream ends with the statistics");
  assert.ok(progress.some((p) => p.status === "copying-disks" && p.diskTotalBytes === 64n * MIB), "progress showed the disk copy");
  assert.ok(last.statistics.diskTransferredBytes >= 64n * MIB, `disk bytes copied: ${last.statistics.diskTransferredBytes}`);
  assert.ok(last.statistics.transferredBytes > 1_000_000n && last.statistics.totalTimeMs > 0n && last.statistics.downtimeMs <= last.statistics.totalTimeMs);

  await until(async () => ((await target.client.getVmInfo({ vmId })).state === VmState.RUNNING ? true : undefined), "the target VM running", 10_000, 50);
  await until(async () => ((await lastTick(target, vmId)) > before + 2 ? true : undefined), "the counter continuing on the target", 20_000, 200);
  assert.equal((await rejection(source.client.getVmInfo({ vmId }))).code, Code.NotFound);
  await until(async () => (isProcessAlive(sourcePid) ? undefined : true), "the source QEMU gone", 10_000, 50);
  assert.deepEqual(await target.backend.executeQmp(vmId, "query-block-exports"), [], "the target stopped serving its disks");

  // The copy holds every write, and the source's disk is intact.
  await target.client.deleteVm({ vmId, force: true });
  assert.ok(existsSync(tgtDisk), "a migrated VM's disk stays when the VM is deleted");
  const volume = await target.storage.volumes.get("local", volumeId);
  assert.deepEqual([volume.format, volume.virtualSizeBytes, volume.backingVolumeId, volume.problem], ["qcow2", 64n * MIB, undefined, undefined], "the copy is a flat volume of the target's pool");
  await qemuIo(tgtDisk, "read -P 0x5a 0 4M", "-r");
  await qemuIo(tgtDisk, "read -P 0x3c 4M 1M", "-r");
  await qemuIo(tgtDisk, "read -P 0xc3 5M 1M", "-r");
  const same = await run("qemu-img", ["compare", "-f", "qcow2", "-F", "qcow2", srcDisk, tgtDisk]);
  assert.match(same.stdout, /identical/);
});
