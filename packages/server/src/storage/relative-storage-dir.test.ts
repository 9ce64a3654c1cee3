import assert from "node:assert/strict";
import { join } from "node:path";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { VmStatus_State as State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { StoragePoolState, StoragePoolType } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { StoragePoolService } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import { VolumeState } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { VolumeService } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import { ensureDebianPackages, ON_SIMULATED_NODES, startTestServer, until } from "@quantix/testing";

// `npm start` keeps its data under a relative directory (QUANTIX_DATA_DIR defaults to
// ./.quantix-data): the demo hosts' volume files must still reach their agents as absolute
// paths, or a VM on a volume is refused ("config.storage[0].path: must be an absolute path").

test("with a relative storage directory, a VM on a volume of the demo's hosts runs", async () => {
  await ensureDebianPackages(["qemu-utils"]);
  const dir = await mkdtemp(join(tmpdir(), "quantix-relative-"));
  const cwd = process.cwd();
  process.chdir(dir);
  const s = await startTestServer({ storageDir: "relative-storage", defaultQuota: {} });
  try {
    const pools = createClient(StoragePoolService, s.transport);
    const volumes = createClient(VolumeService, s.transport);
    const pool = await pools.createStoragePool({ name: "local", spec: { type: StoragePoolType.LOCAL_DIR, isDefault: true } });
    await until(async () => ((await pools.getStoragePool({ id: pool.id })).status?.state === StoragePoolState.READY ? true : undefined), "the pool READY");
    const vm = await s.vms.createVM({ name: "on-a-volume", startOnCreate: true, spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, placement: ON_SIMULATED_NODES, disks: [{ id: "data", sizeGib: 1n }] } });
    const running = await until(async () => {
      const x = await s.vms.getVM({ id: vm.id });
      if (x.status?.state === State.ERROR) throw new Error(x.status.errorMessage);
      return x.status?.state === State.RUNNING ? x : undefined;
    }, "the VM RUNNING on its volume", 60_000);
    const v = await volumes.getVolume({ id: running.spec!.disks[0]!.volumeId });
    assert.equal(v.status?.state, VolumeState.IN_USE);
    assert.match(v.status?.conditions.find((c) => c.type === "Ready")?.message ?? "", /on node/);
    await s.vms.deleteVM({ id: vm.id, force: true }, { timeoutMs: 60_000 });
  } finally {
    await s.close();
    process.chdir(cwd);
    await rm(dir, { recursive: true, force: true });
  }
});
