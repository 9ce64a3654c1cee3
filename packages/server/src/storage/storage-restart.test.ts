import assert from "node:assert/strict";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { StoragePoolType } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { StoragePoolService } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import { VolumeState } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { VolumeService } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import { VmStatus_State as State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { ensureDebianPackages, ON_SIMULATED_NODES, startTestServer, until, type TestServer } from "@quantix/testing";

// Nothing lost: with the embedded store (the default), pools and volumes survive a
// restart of the control plane, their files where they were (under <data dir>/storage),
// and the controllers carry on from what they find.

const HV2 = "00000000-0000-0000-0001-000000000002";
let dir: string;

before(async () => {
  await ensureDebianPackages(["qemu-utils"]);
  dir = await mkdtemp(join(tmpdir(), "quantix-scp-"));
});
after(() => rm(dir, { recursive: true, force: true }));

test("a volume made before a restart is AVAILABLE after it, grows and is deleted", async () => {
  const start = () => startTestServer({ store: { kind: "embedded", dataDir: join(dir, "data") }, demo: true });
  let s: TestServer = await start();
  let poolId: string;
  let volumeId: string;
  try {
    const pools = createClient(StoragePoolService, s.transport);
    const volumes = createClient(VolumeService, s.transport);
    poolId = (await pools.createStoragePool({ name: "durable", spec: { type: StoragePoolType.LOCAL_DIR, nodeIds: [HV2] } })).id;
    volumeId = (await volumes.createVolume({ name: "kept", spec: { sizeGib: 1n, poolId } })).id;
    await until(async () => ((await volumes.getVolume({ id: volumeId })).status?.state === VolumeState.AVAILABLE ? true : undefined), "AVAILABLE before the restart");
  } finally {
    await s.close();
  }
  // The default storage directory with the embedded store: <data dir>/storage/<node>/<pool>/<volume>.qcow2.
  assert.ok((await readdir(join(dir, "data", "storage", HV2, poolId))).includes(`${volumeId}.qcow2`));
  s = await start();
  try {
    const volumes = createClient(VolumeService, s.transport);
    const v = await volumes.getVolume({ id: volumeId });
    assert.equal(v.status?.state, VolumeState.AVAILABLE);
    await volumes.resizeVolume({ id: volumeId, newSizeGib: 2n });
    await until(async () => ((await volumes.getVolume({ id: volumeId })).status?.virtualSizeBytes === 2n << 30n ? true : undefined), "grown after the restart");
    await volumes.deleteVolume({ id: volumeId });
    assert.deepEqual((await readdir(join(dir, "data", "storage", HV2, poolId))).filter((f) => !f.startsWith(".")), []);
  } finally {
    await s.close();
  }
});

test("a VM running on a volume before a restart is re-adopted by its simulated host after it, still holding the volume", async () => {
  const start = () => startTestServer({ store: { kind: "embedded", dataDir: join(dir, "data-vm") }, demo: true });
  let s: TestServer = await start();
  let vmId: string;
  let volumeId: string;
  let startedAt: bigint | undefined;
  try {
    const pools = createClient(StoragePoolService, s.transport);
    const volumes = createClient(VolumeService, s.transport);
    const poolId = (await pools.createStoragePool({ name: "durable-vm", spec: { type: StoragePoolType.LOCAL_DIR, nodeIds: [HV2] } })).id;
    volumeId = (await volumes.createVolume({ name: "boot", spec: { sizeGib: 1n, poolId } })).id;
    await until(async () => ((await volumes.getVolume({ id: volumeId })).status?.state === VolumeState.AVAILABLE ? true : undefined), "AVAILABLE");
    vmId = (await s.vms.createVM({ name: "on-volume", startOnCreate: true, spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, placement: ON_SIMULATED_NODES, disks: [{ id: "root", volumeId }] } })).id;
    startedAt = await until(async () => {
      const vm = await s.vms.getVM({ id: vmId });
      return vm.status?.state === State.RUNNING ? (vm.status.startedAt?.seconds ?? 0n) : undefined;
    }, "VM RUNNING");
  } finally {
    await s.close();
  }
  s = await start();
  try {
    const volumes = createClient(VolumeService, s.transport);
    const vm = await until(async () => {
      const x = await s.vms.getVM({ id: vmId });
      return x.status?.state === State.RUNNING ? x : undefined;
    }, "VM RUNNING after the restart").catch(async (err: unknown) => {
      throw new Error(`${String(err)}: ${JSON.stringify((await s.vms.getVM({ id: vmId })).status, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v))}`);
    });
    assert.equal(vm.status?.startedAt?.seconds, startedAt, "re-adopted, not booted again");
    assert.deepEqual((await volumes.getVolume({ id: volumeId })).status?.attachments.map((a) => a.vmId), [vmId]);
  } finally {
    await s.close();
  }
});
