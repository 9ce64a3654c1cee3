import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
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
 * MigrateVM of a running VM whose disks are volumes of a shared-directory (SHARED_DIR)
 * pool, between two real QEMU agents (TCG) in this process that both name the same
 * directory as shared (TestAgent's sharedDirs, an agent's VMCP_SHARED_DIRS). Nothing is
 * copied: the target opens the same files. One of the disks is hot-attached while the VM
 * runs (AttachVolume), so it sits where hot-plug put it; the target starts with the
 * source's PCI layout and QEMU reports the same slots on both sides.
 */

const BOOT_MS = 90_000;
let s: TestServer;
let dir: string;
let shared: string;
let guest: TestGuest;
let a: TestAgent<QemuBackend>;
let b: TestAgent<QemuBackend>;

before(async () => {
  await ensureDebianPackages(["qemu-system-x86", "qemu-utils", "busybox-static", "cpio"]);
  guest = await buildTestGuest();
  dir = await mkdtemp(join(tmpdir(), "quantix-migshared-"));
  shared = join(dir, "shared");
  await mkdir(join(shared, "pool"), { recursive: true });
  s = await startTestServer({ demo: false, defaultQuota: {} });
  // The guest's kernel and initrd are shared too (both "hosts" read the same cache), as a migration without copying needs.
  [a, b] = await startQemuAgentPair(s, dir, "migshared", [guest.imageDir], [shared, guest.imageDir]);
});

after(async () => {
  await stopQemuAgents(s, [a, b]);
  await s?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** Slot to qdev id on bus 0, as QEMU reports it. */
async function pciSlots(agent: TestAgent<QemuBackend>, vmId: string): Promise<Map<number, string>> {
  const buses = await agent.backend.executeQmp<{ bus: number; devices: { slot: number; function: number; qdev_id?: string }[] }[]>(vmId, "query-pci");
  return new Map(buses.filter((x) => x.bus === 0).flatMap((x) => x.devices).filter((d) => d.function === 0 && d.qdev_id).map((d) => [d.slot, d.qdev_id!]));
}

test("MigrateVM of a VM on shared-directory volumes, one hot-attached: nothing copied, the same files and PCI slots on the target, the guest keeps counting", { timeout: 300_000 }, async () => {
  const nodeA = await migratableNode(s, a.name);
  const nodeB = await migratableNode(s, b.name);
  const pools = createClient(StoragePoolService, s.transport);
  const volumes = createClient(VolumeService, s.transport);
  const poolId = (await pools.createStoragePool({ name: "migshared", spec: { type: StoragePoolType.SHARED_DIR, nodeIds: [nodeA.id, nodeB.id], backend: { case: "sharedDir", value: { path: join(shared, "pool") } } } })).id;
  await until(async () => ((await pools.getStoragePool({ id: poolId })).status?.state === StoragePoolState.READY ? true : undefined), "the shared pool READY on both agents", 30_000);
  const volume = async (name: string) => {
    const v = await volumes.createVolume({ name, spec: { sizeGib: 1n, poolId, format: VolumeFormat.QCOW2 } });
    await until(async () => ((await volumes.getVolume({ id: v.id })).status?.state === VolumeState.AVAILABLE ? true : undefined), `volume ${name} AVAILABLE`, 30_000);
    return v;
  };
  const first = await volume("migshared-a");
  const second = await volume("migshared-b");

  const spec = { cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot: { directBoot: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, cmdline: guest.kernelArgs } }, disks: [{ id: "first", volumeId: first.id }] };
  const created = await s.vms.createVM({ name: "migshared", spec, startOnCreate: true });
  const running = await until(async () => ((v) => (v.status?.state === State.RUNNING ? v : undefined))(await s.vms.getVM({ id: created.id })), "the VM RUNNING", 60_000);
  const [src, dst] = running.status?.nodeId === nodeA.id ? [a, b] : [b, a];
  const dstNode = running.status?.nodeId === nodeA.id ? nodeB : nodeA;
  await ticking(s, created.id, 2, BOOT_MS);
  // Hot-attached while it runs: the device goes to the first free slot, after nothing in the config's order.
  await volumes.attachVolume({ id: second.id, vmId: created.id, diskId: "second" }, { timeoutMs: 60_000 });
  const before = await pciSlots(src, created.id);
  assert.ok([...before.values()].some((q) => /^hp[0-9a-f]{12}-dev$/.test(q)), `a hot-plugged disk on the source's bus: ${JSON.stringify([...before])}`);
  const tick = await lastTick(s, created.id);

  const res = await s.vms.migrateVM({ vmId: created.id, targetNodeId: dstNode.id, live: true }, { timeoutMs: 240_000 });
  assert.equal(res.vm?.status?.nodeId, dstNode.id);
  assert.equal(res.stats!.diskBytesTransferred, 0n, "a shared volume is not copied");
  await ticking(s, created.id, tick + 2, 60_000);

  // The same slots, the disks now named by position on the target (in the spec's order: first, second).
  const after = await pciSlots(dst, created.id);
  assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort());
  const slotOf = (m: Map<number, string>, re: RegExp) => [...m].find(([, q]) => re.test(q))?.[0];
  assert.equal(slotOf(after, /^disk0-dev$/), slotOf(before, /^disk0-dev$/));
  assert.equal(slotOf(after, /^disk1-dev$/), slotOf(before, /^hp[0-9a-f]{12}-dev$/), "the hot-attached disk at the slot hot-plug gave it");
  // The volumes stay where they are: one file each in the shared directory, no node of their own.
  for (const v of [first, second]) {
    assert.ok((await stat(join(shared, "pool", `${v.id}.qcow2`))).isFile());
    const after = await volumes.getVolume({ id: v.id });
    assert.equal(after.status?.state, VolumeState.IN_USE);
  }
  await until(async () => ((await volumes.getVolume({ id: second.id })).status?.attachments[0]?.nodeId === dstNode.id ? true : undefined), "the attachment follows the VM", 30_000);
});
