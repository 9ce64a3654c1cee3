import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { copyFile, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { createClient } from "@connectrpc/connect";
import { VmStatus_State as State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { StoragePoolState, StoragePoolType, VolumeFormat } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { StoragePoolService } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import { VolumeState } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { VolumeService } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import type { QemuBackend } from "@quantix/agent";
import { buildTestGuest, ensureDebianPackages, startTestServer, until, type TestAgent, type TestGuest, type TestServer } from "@quantix/testing";
import { lastTick, migratableNode, startQemuAgentPair, stopQemuAgents, ticking } from "../testing/migration-nodes.js";

/*
 * MigrateVM of a running VM whose disk is a volume of a node-local (LOCAL_DIR) pool, through
 * the compute API. Two QEMU agents in this process, each with its own pool root
 * (<stateDir>/pools): the same volume id is a different file on each node, as on two hosts.
 * The disk is copied while the guest runs into the target's pool; afterwards the volume is
 * the target's (status.node_id), its file is in the target's pool and no longer in the
 * source's, and it holds the data written before the migration.
 */

const run = promisify(execFile);
const BOOT_MS = 90_000;
let s: TestServer;
let dir: string;
let guest: TestGuest;
let a: TestAgent<QemuBackend>;
let b: TestAgent<QemuBackend>;

before(async () => {
  await ensureDebianPackages(["qemu-system-x86", "qemu-utils", "busybox-static", "cpio"]);
  guest = await buildTestGuest();
  dir = await mkdtemp(join(tmpdir(), "quantix-migvol-"));
  s = await startTestServer({ demo: false, defaultQuota: {} });
  [a, b] = await startQemuAgentPair(s, dir, "migvol", [guest.imageDir]);
});

after(async () => {
  await stopQemuAgents(s, [a, b]);
  await s?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test("MigrateVM of a VM on a local-pool volume: the disk is copied into the target's pool, the volume moves there, the source's file is removed", { timeout: 300_000 }, async () => {
  const nodeA = await migratableNode(s, a.name);
  const nodeB = await migratableNode(s, b.name);
  const pools = createClient(StoragePoolService, s.transport);
  const volumes = createClient(VolumeService, s.transport);
  const poolId = (await pools.createStoragePool({ name: "migvol-local", spec: { type: StoragePoolType.LOCAL_DIR, nodeIds: [nodeA.id, nodeB.id] } })).id;
  await until(async () => ((await pools.getStoragePool({ id: poolId })).status?.state === StoragePoolState.READY ? true : undefined), "the pool READY", 30_000);
  const vol = await volumes.createVolume({ name: "migvol-data", nodeId: nodeA.id, spec: { sizeGib: 1n, poolId, format: VolumeFormat.QCOW2 } });
  await until(async () => ((await volumes.getVolume({ id: vol.id })).status?.state === VolumeState.AVAILABLE ? true : undefined), "the volume AVAILABLE", 30_000);
  const fileA = join(a.stateDir, "pools", poolId, `${vol.id}.qcow2`);
  const fileB = join(b.stateDir, "pools", poolId, `${vol.id}.qcow2`);
  assert.ok(existsSync(fileA), "the volume's file is in node A's pool");
  // Data the guest's disk holds before the migration, and a copy of the disk as it was.
  await run("qemu-io", ["-f", "qcow2", "-c", "write -P 0x5a 0 4M", "-c", "write -P 0xc3 512M 1M", fileA]);
  const reference = join(dir, "reference.qcow2");
  await copyFile(fileA, reference);

  const spec = { cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot: { directBoot: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, cmdline: guest.kernelArgs } }, disks: [{ id: "data", volumeId: vol.id }] };
  const created = await s.vms.createVM({ name: "migvol", spec, startOnCreate: true });
  const onA = await until(async () => ((v) => (v.status?.state === State.RUNNING ? v : undefined))(await s.vms.getVM({ id: created.id })), "the VM RUNNING", 60_000);
  assert.equal(onA.status?.nodeId, nodeA.id, "the volume pins the VM to node A");
  await ticking(s, created.id, 2, BOOT_MS);
  const before = await lastTick(s, created.id);

  const res = await s.vms.migrateVM({ vmId: created.id, targetNodeId: nodeB.id, live: true });
  assert.equal(res.vm?.status?.nodeId, nodeB.id);
  assert.ok(res.stats!.diskBytesTransferred > 0n, `disk bytes copied: ${res.stats!.diskBytesTransferred}`);
  await ticking(s, created.id, before + 2, 60_000);

  const moved = await until(async () => ((v) => (v.status?.nodeId === nodeB.id ? v : undefined))(await volumes.getVolume({ id: vol.id })), "the volume's node is B", 30_000);
  assert.equal(moved.status?.attachments[0]?.vmId, created.id);
  await until(async () => ((await volumes.getVolume({ id: vol.id })).status?.attachments[0]?.nodeId === nodeB.id ? true : undefined), "the attachment follows the VM to B", 30_000);
  assert.ok(existsSync(fileB), "the file is in node B's pool");
  assert.ok(!existsSync(fileA), "and no longer in node A's");
  const same = await run("qemu-img", ["compare", "-U", "-f", "qcow2", "-F", "qcow2", reference, fileB]);
  assert.match(same.stdout, /identical/);
  const info = JSON.parse((await run("qemu-img", ["info", "-U", "--output=json", fileB])).stdout) as { "backing-filename"?: string };
  assert.equal(info["backing-filename"], undefined, "the copy is a standalone qcow2");
});

test("MigrateVM of a VM on a linked clone in a local pool: the copy on the target is standalone (read through the chain), the volume says flattened, and its base may then be deleted", { timeout: 300_000 }, async () => {
  const nodeA = await migratableNode(s, a.name);
  const nodeB = await migratableNode(s, b.name);
  const pools = createClient(StoragePoolService, s.transport);
  const volumes = createClient(VolumeService, s.transport);
  const poolId = (await pools.createStoragePool({ name: "migvol-linked", spec: { type: StoragePoolType.LOCAL_DIR, nodeIds: [nodeA.id, nodeB.id] } })).id;
  await until(async () => ((await pools.getStoragePool({ id: poolId })).status?.state === StoragePoolState.READY ? true : undefined), "the pool READY", 30_000);
  const available = (id: string, what: string) => until(async () => ((v) => (v.status?.state === VolumeState.AVAILABLE ? v : undefined))(await volumes.getVolume({ id })), what, 30_000);
  const base = await volumes.createVolume({ name: "migvol-base", nodeId: nodeA.id, spec: { sizeGib: 1n, poolId, format: VolumeFormat.QCOW2 } });
  await available(base.id, "the base AVAILABLE");
  const baseA = join(a.stateDir, "pools", poolId, `${base.id}.qcow2`);
  await run("qemu-io", ["-f", "qcow2", "-c", "write -P 0x5a 0 4M", baseA]);
  const clone = await volumes.cloneVolume({ id: base.id, name: "migvol-clone", linked: true });
  await available(clone.id, "the linked clone AVAILABLE");
  const cloneA = join(a.stateDir, "pools", poolId, `${clone.id}.qcow2`);
  const cloneB = join(b.stateDir, "pools", poolId, `${clone.id}.qcow2`);
  await run("qemu-io", ["-f", "qcow2", "-c", "write -P 0xc3 512M 1M", cloneA]);
  assert.ok(JSON.parse((await run("qemu-img", ["info", "--output=json", cloneA])).stdout)["backing-filename"], "the clone is an overlay on node A");
  // What the guest's disk holds before the migration, read through the chain into one file.
  const reference = join(dir, "linked-reference.qcow2");
  await run("qemu-img", ["convert", "-f", "qcow2", "-O", "qcow2", cloneA, reference]);
  assert.equal((await volumes.deleteVolume({ id: base.id }).then(() => undefined, (e: unknown) => e)) instanceof Error, true, "the base is held by its linked clone");

  const spec = { cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot: { directBoot: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, cmdline: guest.kernelArgs } }, disks: [{ id: "data", volumeId: clone.id }] };
  const created = await s.vms.createVM({ name: "migvol-linked", spec, startOnCreate: true });
  await until(async () => ((v) => (v.status?.state === State.RUNNING ? v : undefined))(await s.vms.getVM({ id: created.id })), "the VM RUNNING", 60_000);
  await ticking(s, created.id, 2, BOOT_MS);
  const before = await lastTick(s, created.id);

  const res = await s.vms.migrateVM({ vmId: created.id, targetNodeId: nodeB.id, live: true });
  assert.equal(res.vm?.status?.nodeId, nodeB.id);
  await ticking(s, created.id, before + 2, 60_000);
  const moved = await until(async () => ((v) => (v.status?.nodeId === nodeB.id ? v : undefined))(await volumes.getVolume({ id: clone.id })), "the clone's node is B", 30_000);
  assert.equal(moved.status?.flattened, true, "the migrated linked clone says it is standalone now");
  const info = JSON.parse((await run("qemu-img", ["info", "-U", "--output=json", cloneB])).stdout) as { "backing-filename"?: string };
  assert.equal(info["backing-filename"], undefined, "the target's copy has no backing file");
  assert.match((await run("qemu-img", ["compare", "-U", "-f", "qcow2", "-F", "qcow2", reference, cloneB])).stdout, /identical/, "and holds the base's data and the clone's");
  assert.ok(!existsSync(cloneA), "the overlay left node A");
  assert.ok(existsSync(baseA), "the base stays on node A");
  await volumes.deleteVolume({ id: base.id });
  await until(async () => (existsSync(baseA) ? undefined : true), "the base deleted from node A", 30_000);
  await ticking(s, created.id, (await lastTick(s, created.id)) + 2, 60_000);
});
