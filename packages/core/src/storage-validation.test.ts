import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { StoragePoolSchema, StoragePoolSpecSchema, StoragePoolType, VolumeFormat } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { VolumeSpecSchema } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { fixedPoolSpecChanges, poolTypeCapability, validateCreateVolume, validatePoolSpec } from "./storage-validation.js";

const paths = (v: readonly { field: string }[]) => v.map((x) => x.field);
const pool = (init: Parameters<typeof create<typeof StoragePoolSpecSchema>>[1]) => create(StoragePoolSpecSchema, init);

test("a pool spec names every violation by field path", () => {
  assert.deepEqual(paths(validatePoolSpec(undefined)), ["spec"]);
  assert.deepEqual(paths(validatePoolSpec(pool({}))), ["spec.type"]);
  assert.deepEqual(paths(validatePoolSpec(pool({ type: StoragePoolType.LOCAL_DIR }))), []);
  assert.deepEqual(paths(validatePoolSpec(pool({ type: StoragePoolType.LOCAL_DIR, backend: { case: "localDir", value: { path: "/srv/x" } } }))), ["spec.local_dir.path"]);
  assert.deepEqual(paths(validatePoolSpec(pool({ type: StoragePoolType.SHARED_DIR }))), ["spec.shared_dir"]);
  assert.deepEqual(paths(validatePoolSpec(pool({ type: StoragePoolType.NFS, backend: { case: "lvm", value: { volumeGroup: "vg" } } }))), ["spec.lvm"]);
  for (const bad of ["relative/x", "/a/../b", "/a//b", "/a/", "/", "/a\nb"]) {
    assert.deepEqual(paths(validatePoolSpec(pool({ type: StoragePoolType.SHARED_DIR, backend: { case: "sharedDir", value: { path: bad } } }))), ["spec.shared_dir.path"], bad);
  }
  const many = validatePoolSpec(pool({ type: StoragePoolType.LVM, backend: { case: "lvm", value: { volumeGroup: "vg" } }, overcommitRatio: 0.5, nodeIds: ["ok", "bad/id", "ok"], defaultVolumeFormat: VolumeFormat.QCOW2 }));
  assert.deepEqual(paths(many), ["spec.overcommit_ratio", "spec.node_ids[1]", "spec.node_ids", "spec.default_volume_format"]);
});

test("a pool's type and backend location are fixed after creation", () => {
  const a = create(StoragePoolSchema, { spec: { type: StoragePoolType.SHARED_DIR, backend: { case: "sharedDir", value: { path: "/srv/a" } } } });
  const b = create(StoragePoolSchema, { spec: { type: StoragePoolType.SHARED_DIR, backend: { case: "sharedDir", value: { path: "/srv/b" } } } });
  assert.deepEqual(paths(fixedPoolSpecChanges(a, b)), ["spec.shared_dir.path"]);
  assert.deepEqual(paths(fixedPoolSpecChanges(a, a)), []);
});

test("the capability a node reports for a pool type", () => {
  assert.equal(poolTypeCapability(StoragePoolType.CEPH_RBD), "storage-pool-ceph-rbd");
  assert.equal(poolTypeCapability(StoragePoolType.NFS), "storage-pool-nfs");
});

test("a volume create names every violation; sources and unsupported options are checked", () => {
  const spec = (init: Parameters<typeof create<typeof VolumeSpecSchema>>[1]) => create(VolumeSpecSchema, init);
  assert.deepEqual(paths(validateCreateVolume({ name: "", nodeId: "" })), ["name", "spec"]);
  assert.deepEqual(paths(validateCreateVolume({ name: "ok", nodeId: "", spec: spec({}) })), ["spec.size_gib"]);
  assert.deepEqual(paths(validateCreateVolume({ name: "ok.v-1_2", nodeId: "", spec: spec({ sizeGib: 1n }) })), []);
  assert.deepEqual(paths(validateCreateVolume({ name: "ok", nodeId: "n/1", spec: spec({ sizeGib: 65_537n, poolId: "../p", format: 7 as VolumeFormat }) })), ["node_id", "spec.size_gib", "spec.pool_id", "spec.format"]);
  assert.deepEqual(paths(validateCreateVolume({ name: "ok", nodeId: "", spec: spec({ source: { source: { case: "volumeId", value: "" } } }) })), ["spec.source.volume_id"]);
  assert.deepEqual(paths(validateCreateVolume({ name: "ok", nodeId: "", spec: spec({ sizeGib: 1n, source: { linked: true } }) })), ["spec.source.linked"]);
  assert.deepEqual(paths(validateCreateVolume({ name: "ok", nodeId: "", spec: spec({ sizeGib: 1n, preallocate: true, encrypted: true }) })), ["spec.preallocate", "spec.encrypted"]);
  assert.deepEqual(paths(validateCreateVolume({ name: "ok", nodeId: "", spec: spec({ sizeGib: 1n, qos: { maxTotalIops: 5n, maxReadIops: 1n } }) })), ["spec.qos.max_total_iops"]);
});

test("an image create names every violation: source, URL, checksum, visibility", async () => {
  const { validateCreateImage } = await import("./image-snapshot-validation.js");
  const { CreateImageRequestSchema } = await import("@quantix/api/gen/Quantixkvm/storage/v1/image_service_pb.js");
  const req = (init: Parameters<typeof create<typeof CreateImageRequestSchema>>[1]) => create(CreateImageRequestSchema, init);
  assert.deepEqual(paths(validateCreateImage(req({}))), ["name", "spec"]);
  assert.deepEqual(paths(validateCreateImage(req({ name: "debian-12", spec: {} }))), ["spec.source"]);
  assert.deepEqual(paths(validateCreateImage(req({ name: "debian-12", spec: { source: { source: { case: "url", value: "https://deb.example/d.qcow2.xz" } } } }))), []);
  for (const bad of ["file:///etc/passwd", "ftp://x/y", "https://user:pw@x/y", "not a url", "https://x/\n"]) {
    assert.deepEqual(paths(validateCreateImage(req({ name: "d", spec: { source: { source: { case: "url", value: bad } } } }))), ["spec.source.url"], bad);
  }
  const many = validateCreateImage(req({ name: "d", spec: { source: { source: { case: "volumeId", value: "a/b" }, expectedSha256: "ABC" }, sharedProjectIds: ["p"], diskFormat: 99 as never } }));
  assert.deepEqual(paths(many), ["spec.source.volume_id", "spec.source.expected_sha256", "spec.disk_format", "spec.shared_project_ids"]);
});

test("a snapshot create needs exactly one target; excluded disks only for a VM", async () => {
  const { validateCreateSnapshot } = await import("./image-snapshot-validation.js");
  const { CreateSnapshotRequestSchema } = await import("@quantix/api/gen/Quantixkvm/storage/v1/snapshot_service_pb.js");
  const req = (init: Parameters<typeof create<typeof CreateSnapshotRequestSchema>>[1]) => create(CreateSnapshotRequestSchema, init);
  assert.deepEqual(paths(validateCreateSnapshot(req({ name: "s1" }))), ["spec.volume_id"]);
  assert.deepEqual(paths(validateCreateSnapshot(req({ name: "s1", spec: { target: { case: "vmId", value: "vm-1" }, excludedDiskIds: ["scratch"] } }))), []);
  assert.deepEqual(paths(validateCreateSnapshot(req({ name: "1s", spec: { target: { case: "volumeId", value: "../v" }, excludedDiskIds: ["d"] } }))), ["name", "spec.volume_id", "spec.excluded_disk_ids"]);
});
