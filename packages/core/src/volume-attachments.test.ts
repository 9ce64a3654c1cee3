import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { DiskBus, DiskDeviceSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { StoragePoolSchema, StoragePoolType } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { VolumeSchema, VolumeState } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { QuantixError } from "./errors.js";
import { claimVolume, guestDeviceHint, releaseVolume, volumeNodeIds, volumePlacement } from "./volume-attachments.js";

const vol = (state = VolumeState.AVAILABLE, multiAttach = false) => create(VolumeSchema, { id: "v1", spec: { multiAttach }, status: { state, nodeId: "n1" } });
const disk = (id = "data") => create(DiskDeviceSchema, { id, volumeId: "v1" });
const claim = (vmId: string) => ({ vmId, disk: disk(), nodeId: "", nowMs: 1_000 });

function refused(fn: () => unknown): QuantixError {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof QuantixError);
    return err;
  }
  assert.fail("not refused");
}

describe("volume reach and placement", () => {
  it("a local volume is on its node; a shared one on its pool's nodes, or anywhere", () => {
    assert.deepEqual(volumeNodeIds(vol(), create(StoragePoolSchema, { spec: { type: StoragePoolType.LOCAL_DIR, nodeIds: ["n1", "n2"] } })), ["n1"]);
    assert.deepEqual(volumeNodeIds(vol(), create(StoragePoolSchema, { spec: { type: StoragePoolType.SHARED_DIR, nodeIds: ["n2", "n3"] } })), ["n2", "n3"]);
    assert.equal(volumeNodeIds(vol(), create(StoragePoolSchema, { spec: { type: StoragePoolType.SHARED_DIR } })), undefined);
  });

  it("intersects the volumes' nodes; volumes no one node reaches are refused on the later disk's field", () => {
    assert.deepEqual(volumePlacement([{ field: "a", volumeId: "va", nodeIds: ["n1", "n2"] }, { field: "b", volumeId: "vb", nodeIds: undefined }, { field: "c", volumeId: "vc", nodeIds: ["n2", "n3"] }]), ["n2"]);
    const two = refused(() => volumePlacement([{ field: "spec.disks[0].volume_id", volumeId: "va", nodeIds: ["n1"] }, { field: "spec.disks[1].volume_id", volumeId: "vb", nodeIds: ["n2"] }]));
    assert.equal(two.code, "invalid_argument");
    assert.deepEqual(two.violations.map((v) => v.field), ["spec.disks[1].volume_id"]);
    assert.match(two.message, /reachable from one node/);
    const away = refused(() => volumePlacement([{ field: "id", volumeId: "va", nodeIds: ["n1"] }], "n2"));
    assert.match(away.message, /not on node 'n2' where the VM is/);
    assert.equal(volumePlacement([]), undefined);
  });
});

describe("claims", () => {
  it("records the attachment once; the same claim again changes nothing", () => {
    const v = claimVolume(vol(), { ...claim("vm-a"), guestDeviceHint: "/dev/vdb" })!;
    assert.deepEqual(v.status?.attachments.map((a) => [a.vmId, a.diskId, a.bus, a.guestDeviceHint]), [["vm-a", "data", DiskBus.VIRTIO, "/dev/vdb"]]);
    assert.equal(claimVolume(v, claim("vm-a")), undefined);
    assert.equal(releaseVolume(v, "vm-a")?.status?.attachments.length, 0);
    assert.equal(releaseVolume(v, "vm-a"), undefined);
  });

  it("refuses a volume another VM holds (naming it) unless multi_attach, and one that is not AVAILABLE", () => {
    const held = claimVolume(vol(), claim("vm-a"))!;
    const e = refused(() => claimVolume(held, claim("vm-b")));
    assert.equal(e.code, "failed_precondition");
    assert.match(e.message, /attached to VM 'vm-a'/);
    const shared = claimVolume(claimVolume(vol(VolumeState.AVAILABLE, true), claim("vm-a"))!, claim("vm-b"))!;
    assert.deepEqual(shared.status?.attachments.map((a) => a.vmId), ["vm-a", "vm-b"]);
    assert.match(refused(() => claimVolume(vol(VolumeState.CREATING), claim("vm-a"))).message, /CREATING/);
  });

  it("hints /dev/vdX by virtio position", () => {
    const disks = [create(DiskDeviceSchema, { id: "root" }), create(DiskDeviceSchema, { id: "sata", bus: DiskBus.SATA }), create(DiskDeviceSchema, { id: "data" })];
    assert.equal(guestDeviceHint(disks, "data"), "/dev/vdb");
    assert.equal(guestDeviceHint(disks, "sata"), "");
  });
});
