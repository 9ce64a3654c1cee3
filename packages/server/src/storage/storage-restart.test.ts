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
import { ensureDebianPackages, startTestServer, until, type TestServer } from "@quantix/testing";

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
