import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { VmStatus_State as State, type VmSpec } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { StoragePoolType } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { StoragePoolService } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import { VolumeState, type Volume } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { VolumeService } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { VmSpecSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { ensureDebianPackages, ON_SIMULATED_NODES, rejection, startTestServer, until, type TestServer } from "@quantix/testing";

// A VM's disks as volumes, through the real API on the demo's simulated hosts (whose
// volumes are real qemu-img files): scheduling follows the volume, the volume shows its
// attachment, the claim is atomic, attach/detach/resize follow the VM's state, and the
// refusals say why. The simulated hypervisor has no "disk-hotplug": a running VM's disks
// are refused by name (the QEMU side is qemu-disk-hotplug.test.ts).

const HV1 = "00000000-0000-0000-0001-000000000001";
const HV2 = "00000000-0000-0000-0001-000000000002";
const GIB = 1n << 30n;

const fields = (e: ConnectError) => e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));
type SpecInit = MessageInitShape<typeof VmSpecSchema>;
const spec = (disks: SpecInit["disks"] = []): SpecInit => ({ cpu: { cores: 1 }, memory: { sizeMib: 256n }, placement: ON_SIMULATED_NODES, disks });

describe("VM disks from volumes, on the demo's simulated hosts", () => {
  let s: TestServer;
  let dir: string;
  let volumes: Client<typeof VolumeService>;
  let n = 0;

  before(async () => {
    await ensureDebianPackages(["qemu-utils"]);
    dir = await mkdtemp(join(tmpdir(), "quantix-vmvol-"));
    s = await startTestServer({ storageDir: dir, defaultQuota: {} });
    volumes = createClient(VolumeService, s.transport);
    await createClient(StoragePoolService, s.transport).createStoragePool({ name: "local", spec: { type: StoragePoolType.LOCAL_DIR, nodeIds: [HV1, HV2], isDefault: true } });
  });
  after(async () => {
    await s?.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function volume(nodeId: string): Promise<Volume> {
    const v = await volumes.createVolume({ name: `v${++n}`, nodeId, spec: { sizeGib: 1n } });
    return until(async () => {
      const x = await volumes.getVolume({ id: v.id });
      return x.status?.state === VolumeState.AVAILABLE ? x : undefined;
    }, `volume ${v.id} AVAILABLE`);
  }
  const stateOf = (id: string, want: VolumeState) => until(async () => ((await volumes.getVolume({ id })).status?.state === want ? true : undefined), `volume ${id} ${VolumeState[want]}`);
  const vmState = (id: string, want: State) => until(async () => ((await s.vms.getVM({ id })).status?.state === want ? true : undefined), `VM ${id} ${State[want]}`);

  it("a VM whose disk is a local volume runs on the volume's node; the volume shows the attachment; deleting the VM releases it", async () => {
    const a = await volume(HV2);
    const vm = await s.vms.createVM({ name: "on-volume", startOnCreate: true, spec: spec([{ id: "data", volumeId: a.id }]) });
    await vmState(vm.id, State.RUNNING);
    assert.equal((await s.vms.getVM({ id: vm.id })).status?.nodeId, HV2, "pinned to the volume's node");
    await stateOf(a.id, VolumeState.IN_USE);
    const att = await until(async () => {
      const x = (await volumes.getVolume({ id: a.id })).status!.attachments;
      return x[0]?.nodeId === HV2 ? x : undefined;
    }, "the attachment shows the VM's node");
    assert.deepEqual(att.map((x) => [x.vmId, x.diskId, x.guestDeviceHint, x.nodeId]), [[vm.id, "data", "/dev/vda", HV2]]);

    const del = await rejection(volumes.deleteVolume({ id: a.id }));
    assert.equal(del.code, Code.FailedPrecondition);
    assert.match(del.rawMessage, new RegExp(vm.id));
    const upd = await rejection(s.vms.updateVM({ id: vm.id, spec: { ...spec([]) } as VmSpec, updateMask: { paths: ["spec.disks"] } }));
    assert.equal(upd.code, Code.FailedPrecondition, "UpdateVM does not drop a volume disk");

    await s.vms.deleteVM({ id: vm.id, force: true });
    await stateOf(a.id, VolumeState.AVAILABLE);
    assert.equal((await volumes.getVolume({ id: a.id })).status?.attachments.length, 0);
    await volumes.deleteVolume({ id: a.id });
  });

  it("refuses volumes on two nodes and a missing volume, naming the field or the id; nothing is created", async () => {
    const [a, b] = [await volume(HV1), await volume(HV2)];
    const two = await rejection(s.vms.createVM({ name: "two-nodes", spec: spec([{ id: "a", volumeId: a.id }, { id: "b", volumeId: b.id }]) }));
    assert.equal(two.code, Code.InvalidArgument);
    assert.deepEqual(fields(two), ["spec.disks[1].volume_id"]);
    assert.match(two.rawMessage, /reachable from one node/);
    const missing = "00000000-0000-4000-8000-00000000dead";
    const gone = await rejection(s.vms.createVM({ name: "missing", spec: spec([{ id: "a", volumeId: missing }]) }));
    assert.equal(gone.code, Code.NotFound);
    assert.match(gone.rawMessage, new RegExp(missing));
    assert.equal((await s.vms.listVMs({ pageSize: 1000 })).vms.filter((v) => v.name === "two-nodes" || v.name === "missing").length, 0);
    for (const v of [a, b]) assert.equal((await volumes.getVolume({ id: v.id })).status?.attachments.length, 0, "no claim was left behind");
  });

  it("two VMs created at once on one volume: exactly one wins, the other is refused naming the VM that holds it", async () => {
    const a = await volume(HV1);
    const results = await Promise.allSettled([1, 2].map((i) => s.vms.createVM({ name: `race-${i}`, spec: spec([{ id: "data", volumeId: a.id }]) })));
    const won = results.filter((r) => r.status === "fulfilled");
    const lost = results.filter((r): r is PromiseRejectedResult => r.status === "rejected");
    assert.equal(won.length, 1);
    assert.equal(lost.length, 1);
    const err = ConnectError.from(lost[0]!.reason);
    assert.equal(err.code, Code.FailedPrecondition);
    const winner = (won[0] as PromiseFulfilledResult<{ id: string }>).value.id;
    assert.match(err.rawMessage, new RegExp(`attached to VM '${winner}'`));
    assert.deepEqual((await volumes.getVolume({ id: a.id })).status?.attachments.map((x) => x.vmId), [winner]);
    await s.vms.deleteVM({ id: winner, force: true });
    await until(async () => ((await volumes.getVolume({ id: a.id })).status?.attachments.length === 0 ? true : undefined), "released");
  });

  it("AttachVolume and DetachVolume change a stopped VM's spec and the volume's attachment in one commit; a running VM on a host without disk-hotplug is refused by name", async () => {
    const a = await volume(HV1);
    const b = await volume(HV2);
    const vm = await s.vms.createVM({ name: "attach-me", spec: spec([{ id: "root", volumeId: a.id }]) });
    const far = await rejection(volumes.attachVolume({ id: b.id, vmId: vm.id }));
    assert.equal(far.code, Code.InvalidArgument, "a volume on another node than the VM's other volume");
    assert.deepEqual(fields(far), ["id"]);
    const c = await volume(HV1);
    const badId = await rejection(volumes.attachVolume({ id: c.id, vmId: vm.id, diskId: "9-bad" }));
    assert.equal(badId.code, Code.InvalidArgument);
    assert.deepEqual(fields(badId), ["disk_id"]);
    const noVm = await rejection(volumes.attachVolume({ id: c.id, vmId: "00000000-0000-4000-8000-0000000000aa" }));
    assert.equal(noVm.code, Code.NotFound);
    assert.match(noVm.rawMessage, /0000000000aa/);

    const attached = await volumes.attachVolume({ id: c.id, vmId: vm.id, diskId: "extra" });
    assert.deepEqual(attached.status?.attachments.map((x) => [x.vmId, x.diskId, x.guestDeviceHint]), [[vm.id, "extra", "/dev/vdb"]]);
    assert.deepEqual((await s.vms.getVM({ id: vm.id })).spec?.disks.map((d) => [d.id, d.volumeId]), [["root", a.id], ["extra", c.id]]);
    assert.equal((await volumes.attachVolume({ id: c.id, vmId: vm.id, diskId: "extra" })).status?.attachments.length, 1, "idempotent");
    const second = await s.vms.createVM({ name: "second", spec: spec() });
    const held = await rejection(volumes.attachVolume({ id: c.id, vmId: second.id }));
    assert.equal(held.code, Code.FailedPrecondition);
    assert.match(held.rawMessage, new RegExp(`attached to VM '${vm.id}'`));

    // A VM meant to run but not running yet (here: pinned away from its volume, so PENDING) could be defined
    // from its old spec meanwhile: its disks change once it runs, or after StopVM.
    const pending = await s.vms.createVM({ name: "pending", startOnCreate: true, nodeId: HV2, spec: spec([{ id: "root", volumeId: (await volume(HV1)).id }]) });
    const starting = await rejection(volumes.attachVolume({ id: (await volume(HV1)).id, vmId: pending.id }));
    assert.equal(starting.code, Code.FailedPrecondition);
    assert.match(starting.rawMessage, /is starting/);
    assert.match((await s.vms.getVM({ id: pending.id })).status?.conditions.find((x) => x.type === "Scheduled")?.message ?? "", /does not hold the VM's volumes/, "the scheduler says why");
    await s.vms.deleteVM({ id: pending.id, force: true });

    // Offline growth of a stopped VM's volume: the file grows (qemu-img), no hypervisor needed.
    await volumes.resizeVolume({ id: c.id, newSizeGib: 2n });
    await until(async () => ((await volumes.getVolume({ id: c.id })).status?.virtualSizeBytes === 2n * GIB ? true : undefined), "grown offline");

    await s.vms.startVM({ id: vm.id });
    await vmState(vm.id, State.RUNNING);
    assert.equal((await s.vms.getVM({ id: vm.id })).status?.nodeId, HV1);
    const hot = await rejection(volumes.detachVolume({ id: c.id }));
    assert.equal(hot.code, Code.FailedPrecondition);
    assert.match(hot.rawMessage, /'disk-hotplug'/);
    const online = await rejection(volumes.resizeVolume({ id: c.id, newSizeGib: 3n }));
    assert.equal(online.code, Code.FailedPrecondition);
    assert.match(online.rawMessage, /'disk-hotplug'/);
    assert.equal((await volumes.getVolume({ id: c.id })).spec?.sizeGib, 2n, "a refused resize changes nothing");
    await s.vms.stopVM({ id: vm.id, force: true });
    await vmState(vm.id, State.STOPPED);

    // Stopped after running: the VM is defined on its node but holds no lock; the file grows offline.
    await volumes.resizeVolume({ id: c.id, newSizeGib: 3n });
    await until(async () => ((await volumes.getVolume({ id: c.id })).status?.virtualSizeBytes === 3n * GIB ? true : undefined), "grown offline after a stop");
    const detached = await volumes.detachVolume({ id: c.id });
    assert.equal(detached.status?.attachments.length, 0);
    assert.deepEqual((await s.vms.getVM({ id: vm.id })).spec?.disks.map((d) => d.id), ["root"]);
    assert.equal((await volumes.detachVolume({ id: c.id, vmId: vm.id })).status?.attachments.length, 0, "idempotent");
    // The VM starts again with the disks its spec has now (its old definition on the node was dropped).
    await s.vms.startVM({ id: vm.id });
    await vmState(vm.id, State.RUNNING);
    await s.vms.deleteVM({ id: vm.id, force: true });
    await s.vms.deleteVM({ id: second.id, force: true });
  });
});
