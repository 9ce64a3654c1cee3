import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { ConditionStatus } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { VmStatus_State as State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { QuotaService } from "@quantix/api/gen/Quantixkvm/quota/v1/quota_service_pb.js";
import { ImageState } from "@quantix/api/gen/Quantixkvm/storage/v1/image_pb.js";
import { ImageService } from "@quantix/api/gen/Quantixkvm/storage/v1/image_service_pb.js";
import { StoragePoolState, StoragePoolType } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { StoragePoolService } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import { VolumeState } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { VolumeService } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import { DEFAULT_PROJECT_ID } from "@quantix/core";
import { ensureDebianPackages, ON_SIMULATED_NODES, rejection, startTestServer, until, type TestServer } from "@quantix/testing";
import { startImageServer, type ImageServer } from "../testing/image-server.js";

// CreateVM with new disks (size_gib, image_id) on the demo's simulated hosts, whose pools
// are real directories driven by the real qemu-img: each such disk becomes a volume of the
// VM's own in the default pool, named in the disk's volume_id and charged to the quota in
// the VM's commit; the volume is made on the node the scheduler places the VM on (a linked
// clone of the image's copy there), the VM waits PROVISIONING until they are AVAILABLE and
// then runs; the volumes cannot be detached, and go with the VM.

const HV1 = "00000000-0000-0000-0001-000000000001";
const HV2 = "00000000-0000-0000-0001-000000000002";
const fields = (e: ConnectError) => e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));

let s: TestServer;
let dir: string;
let web: ImageServer;
let poolId: string;
let imageId: string;

before(async () => {
  await ensureDebianPackages(["qemu-utils", "xz-utils"]);
  dir = await mkdtemp(join(tmpdir(), "quantix-owned-volumes-"));
  web = await startImageServer(join(dir, "fixtures"));
  s = await startTestServer({ storageDir: join(dir, "storage"), defaultQuota: {} });
  const pools = createClient(StoragePoolService, s.transport);
  poolId = (await pools.createStoragePool({ name: "local", spec: { type: StoragePoolType.LOCAL_DIR, nodeIds: [HV1, HV2], isDefault: true } })).id;
  await until(async () => ((await pools.getStoragePool({ id: poolId })).status?.state === StoragePoolState.READY ? true : undefined), "pool READY");
  const images = createClient(ImageService, s.transport);
  let last;
  for await (const p of images.importImage({ target: { case: "create", value: { name: "base", spec: { source: { source: { case: "url", value: `${web.base}/a.qcow2` } } } } } }, { timeoutMs: 60_000 })) last = p;
  assert.equal(last?.image?.status?.state, ImageState.AVAILABLE, last?.image?.status?.errorMessage);
  imageId = last!.image!.id;
});

after(async () => {
  await s?.close();
  await web?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test("CreateVM makes a volume of the VM's own for each new disk, on the VM's node once it is placed; the VM runs on them, and they go with it", async () => {
  const volumes = createClient(VolumeService, s.transport);
  const quotas = createClient(QuotaService, s.transport);
  const used = async () => (await quotas.getQuota({ projectId: DEFAULT_PROJECT_ID })).used;
  const before = await used();
  const vm = await s.vms.createVM({ name: "owns-disks", spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, placement: ON_SIMULATED_NODES, disks: [{ id: "root", imageId, bootIndex: 1 }, { id: "data", sizeGib: 2n }] } });
  const [root, data] = vm.spec!.disks;
  assert.ok(root!.volumeId !== "" && data!.volumeId !== "", "CreateVM named the new volumes in the disks");
  assert.equal(root!.imageId, imageId, "the disk still says where it came from");
  const after1 = await used();
  assert.equal(after1?.volumes, (before?.volumes ?? 0n) + 2n, "both volumes charged in the VM's commit");
  assert.equal(after1?.volumeGib, (before?.volumeGib ?? 0n) + 1n + 2n, "the image's 16 MiB round up to 1 GiB");

  // A stopped VM is not placed, so its volumes wait for it.
  const waiting = await until(async () => {
    const v = await volumes.getVolume({ id: data!.volumeId });
    return v.status?.conditions.find((c) => c.type === "Ready" && c.reason === "WaitingForVm") ? v : undefined;
  }, "the data volume waiting for its VM's placement");
  assert.equal(waiting.spec?.ownerVmId, vm.id);
  assert.equal(waiting.status?.state, VolumeState.PENDING);
  assert.equal(waiting.status?.nodeId, "");
  assert.deepEqual(waiting.status?.attachments.map((a) => [a.vmId, a.diskId]), [[vm.id, "data"]], "claimed for the VM from the start");

  await s.vms.startVM({ id: vm.id }, { timeoutMs: 60_000 });
  const running = await until(async () => ((x) => (x.status?.state === State.RUNNING ? x : undefined))(await s.vms.getVM({ id: vm.id })), "the VM RUNNING on its own volumes", 60_000);
  const node = running.status!.nodeId;
  assert.ok([HV1, HV2].includes(node), `placed on a node of the pool: ${node}`);
  assert.equal(running.status?.conditions.some((c) => c.type === "VolumesReady"), false, "the wait's condition is gone once the VM runs");
  for (const d of [root!, data!]) {
    const v = await volumes.getVolume({ id: d.volumeId });
    assert.equal(v.status?.state, VolumeState.IN_USE, `${d.id}: ${v.status?.errorMessage}`);
    assert.equal(v.status?.nodeId, node, `${d.id} was made on the VM's node`);
    assert.ok(existsSync(join(dir, "storage", node, poolId, `${d.volumeId}.qcow2`)));
  }
  const info = JSON.parse(execFileSync("qemu-img", ["info", "-U", "--output=json", join(dir, "storage", node, poolId, `${root!.volumeId}.qcow2`)], { encoding: "utf8" })) as { "backing-filename"?: string; "virtual-size": number };
  assert.match(info["backing-filename"] ?? "", new RegExp(`${imageId}\\.qcow2$`), "the root disk is a linked clone of the image's copy on that node");

  const detach = await rejection(volumes.detachVolume({ id: root!.volumeId, vmId: vm.id }));
  assert.equal(detach.code, Code.FailedPrecondition);
  assert.match(detach.rawMessage, /goes with the VM/);

  await s.vms.deleteVM({ id: vm.id, force: true }, { timeoutMs: 60_000 });
  for (const d of [root!, data!]) {
    await until(() => volumes.getVolume({ id: d.volumeId }).then(() => undefined, (e: unknown) => (ConnectError.from(e).code === Code.NotFound ? true : undefined)), `volume of disk ${d.id} deleted with its VM`, 30_000);
    assert.ok(!existsSync(join(dir, "storage", node, poolId, `${d.volumeId}.qcow2`)), "and its file removed");
  }
  const after2 = await until(async () => ((u) => (u?.volumes === (before?.volumes ?? 0n) ? u : undefined))(await used()), "the quota released");
  assert.equal(after2?.volumeGib, before?.volumeGib ?? 0n);
});

test("a VM placed on a node waits PROVISIONING while its image is copied there, with the reason", async () => {
  const vm = await s.vms.createVM({ name: "waits", startOnCreate: true, spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, placement: ON_SIMULATED_NODES, disks: [{ id: "root", imageId, sizeGib: 3n, bootIndex: 1 }] } });
  const seen = new Set<State>();
  const running = await until(async () => {
    const x = await s.vms.getVM({ id: vm.id });
    seen.add(x.status!.state);
    if (x.status?.state === State.PROVISIONING) assert.match(x.status.conditions.find((c) => c.type === "VolumesReady" && c.status === ConditionStatus.FALSE)?.message ?? "", /is being made/);
    return x.status?.state === State.RUNNING ? x : undefined;
  }, "the VM RUNNING", 60_000, 10);
  const volumes = createClient(VolumeService, s.transport);
  const root = await volumes.getVolume({ id: running.spec!.disks[0]!.volumeId });
  assert.equal(root.spec?.sizeGib, 3n);
  assert.equal(root.status?.virtualSizeBytes, 3n << 30n, "grown to the disk's size");
  assert.ok(!seen.has(State.ERROR), `never ERROR on the way: ${[...seen].map((x) => State[x]).join(",")}`);
  await s.vms.deleteVM({ id: vm.id, force: true }, { timeoutMs: 60_000 });
  await until(() => volumes.getVolume({ id: root.id }).then(() => undefined, (e: unknown) => (ConnectError.from(e).code === Code.NotFound ? true : undefined)), "the VM's volume deleted with it", 30_000);
});

test("bad new disks are refused with the field, and nothing is created", async () => {
  const volumes = createClient(VolumeService, s.transport);
  // What the refused creates would have made: VMs of these names, and volumes named after them.
  const names = ["bad-image", "too-small", "too-big"];
  const count = async () => ({
    vms: (await s.vms.listVMs({})).vms.filter((v) => names.includes(v.name)).length,
    volumes: (await volumes.listVolumes({})).volumes.filter((v) => names.some((n) => v.name.startsWith(`${n}-`))).length,
  });
  const before = await count();
  assert.deepEqual(before, { vms: 0, volumes: 0 });
  const missing = "6f0c0b5e-0000-4000-8000-000000000000";
  const noImage = await rejection(s.vms.createVM({ name: "bad-image", spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, placement: ON_SIMULATED_NODES, disks: [{ id: "root", imageId: missing }] } }));
  assert.equal(noImage.code, Code.NotFound);
  assert.match(noImage.rawMessage, new RegExp(`spec\\.disks\\[0\\]\\.image_id.*${missing}`));
  // An image that asks for at least 4 GiB: a smaller disk from it is refused.
  const images = createClient(ImageService, s.transport);
  await images.updateImage({ id: imageId, spec: { minDiskGib: 4n }, updateMask: { paths: ["spec.min_disk_gib"] } });
  const small = await rejection(s.vms.createVM({ name: "too-small", spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, placement: ON_SIMULATED_NODES, disks: [{ id: "data", sizeGib: 1n }, { id: "root", imageId, sizeGib: 2n }] } }));
  assert.equal(small.code, Code.InvalidArgument, small.message);
  assert.deepEqual(fields(small), ["spec.disks[1].size_gib"]);
  assert.match(small.rawMessage + JSON.stringify(small.findDetails(BadRequestSchema)), /4 GiB/);
  assert.deepEqual(await count(), before, "nothing was created");
  const tooBig = await rejection(s.vms.createVM({ name: "too-big", spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, placement: ON_SIMULATED_NODES, disks: [{ id: "data", sizeGib: 70_000n }] } }));
  assert.equal(tooBig.code, Code.InvalidArgument);
  assert.deepEqual(fields(tooBig), ["spec.disks[0].size_gib"]);
  assert.deepEqual(await count(), before, "nothing was created");
});
