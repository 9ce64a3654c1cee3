import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { DiskBus, Firmware, NicModel, ProvisioningConfigSchema, VmSpecSchema, type VmSpec } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { ConsoleOutput, ConsoleType, NetworkInterfaceType, StorageInterfaceType } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { agentTapName, CONTROL_PLANE_VM_ID_KEY, toAgentVmConfig } from "./agent-vm-config.js";
import { QuantixError } from "./errors.js";

const ID = "3f1c2a9e-0d4b-4c1e-9a57-1b2c3d4e5f60";

function spec(change: (s: VmSpec) => void = () => {}): VmSpec {
  const s = create(VmSpecSchema, {
    cpu: { cores: 2 },
    memory: { sizeMib: 512n },
    boot: { directBoot: { kernelPath: "/k/vmlinuz", initrdPath: "/k/initrd.gz", cmdline: "console=ttyS0 quiet" } },
  });
  change(s);
  return s;
}

function rejected(s: VmSpec): QuantixError {
  try {
    toAgentVmConfig(ID, s);
  } catch (err) {
    assert.ok(err instanceof QuantixError);
    return err;
  }
  assert.fail("expected the spec to be rejected");
}

describe("toAgentVmConfig", () => {
  it("maps cpu, memory, direct boot and a buffered serial console", () => {
    const c = toAgentVmConfig(ID, spec());
    assert.equal(c.cpu?.vcpuCount, 2);
    assert.equal(c.cpu?.topology, undefined);
    assert.equal(c.memory?.sizeBytes, 512n * 1024n * 1024n);
    assert.equal(c.memory?.hotplugEnabled, false);
    assert.deepEqual([c.boot?.kernelPath, c.boot?.initrdPath, c.boot?.kernelArgs], ["/k/vmlinuz", "/k/initrd.gz", "console=ttyS0 quiet"]);
    assert.deepEqual([c.console?.enabled, c.console?.output, c.console?.consoleType], [true, ConsoleOutput.BUFFER, ConsoleType.SERIAL]);
    assert.deepEqual(c.metadata, { [CONTROL_PLANE_VM_ID_KEY]: ID });
    assert.deepEqual(c.storage, []);
  });

  it("sends a topology only when there is one, and memory hotplug only with a larger maximum", () => {
    const c = toAgentVmConfig(ID, spec((s) => {
      s.cpu = { ...s.cpu!, cores: 2, sockets: 2, threadsPerCore: 2 };
      s.memory = { ...s.memory!, maxSizeMib: 1024n };
    }));
    assert.equal(c.cpu?.vcpuCount, 8);
    assert.deepEqual([c.cpu?.topology?.sockets, c.cpu?.topology?.coresPerSocket, c.cpu?.topology?.threadsPerCore], [2, 2, 2]);
    assert.equal(c.memory?.hotplugEnabled, true);
    assert.equal(c.memory?.maxSizeBytes, 1024n * 1024n * 1024n);
  });

  it("carries cloud-init data as given, and none when the spec has none", () => {
    const c = toAgentVmConfig(ID, spec((s) => (s.provisioning = create(ProvisioningConfigSchema, { cloudInit: { userData: "#cloud-config\n", metaData: "local-hostname: a\n", networkConfig: "version: 2\n" } }))));
    assert.deepEqual([c.cloudInit?.userData, c.cloudInit?.metaData, c.cloudInit?.networkConfig], ["#cloud-config\n", "local-hostname: a\n", "version: 2\n"]);
    assert.equal(toAgentVmConfig(ID, spec()).cloudInit, undefined);
  });

  it("boots firmware when there is no direct boot", () => {
    const c = toAgentVmConfig(ID, spec((s) => delete s.boot));
    assert.equal(c.boot?.kernelPath, "");
  });

  it("maps NICs to derived tap names and the NIC model", () => {
    const c = toAgentVmConfig(ID, spec((s) => {
      s.nics = create(VmSpecSchema, {
        nics: [
          { id: "eth0", networkId: "n", macAddress: "52:54:00:00:00:01" },
          { id: "eth1", networkId: "n", macAddress: "52:54:00:00:00:02", model: NicModel.E1000 },
        ],
      }).nics;
    }));
    assert.deepEqual(c.network.map((n) => [n.id, n.macAddress, n.interfaceType]), [["eth0", "52:54:00:00:00:01", NetworkInterfaceType.VIRTIO_NET], ["eth1", "52:54:00:00:00:02", NetworkInterfaceType.E1000]]);
    for (const n of c.network) assert.match(n.tapDevice, /^qx[0-9a-f]{13}$/);
    assert.notEqual(c.network[0]!.tapDevice, c.network[1]!.tapDevice);
  });

  it("is deterministic, so CreateVm stays idempotent", () => {
    assert.deepEqual(toAgentVmConfig(ID, spec()), toAgentVmConfig(ID, spec()));
    assert.equal(agentTapName(ID, "eth0"), agentTapName(ID, "eth0"));
    assert.notEqual(agentTapName(ID, "eth0"), agentTapName("other", "eth0"));
  });

  it("attaches image files already on the node (host_path) in order, on their bus; the lowest boot_index is the root without a kernel", () => {
    const disks = (s: VmSpec) =>
      (s.disks = create(VmSpecSchema, {
        disks: [
          { id: "data", hostPath: "/images/data.qcow2", bus: DiskBus.SCSI, readonly: true },
          { id: "root", hostPath: "/images/root.raw", bootIndex: 1 },
          { id: "fast", hostPath: "/images/fast.raw", bus: DiskBus.NVME },
        ],
      }).disks);
    const direct = toAgentVmConfig(ID, spec(disks));
    assert.deepEqual(
      direct.storage.map((d) => [d.id, d.path, d.readOnly, d.isRootDevice, d.interfaceType]),
      [
        ["data", "/images/data.qcow2", true, false, StorageInterfaceType.VIRTIO_SCSI],
        ["root", "/images/root.raw", false, false, StorageInterfaceType.VIRTIO_BLK],
        ["fast", "/images/fast.raw", false, false, StorageInterfaceType.NVME],
      ],
    );
    const firmware = toAgentVmConfig(ID, spec((s) => (disks(s), delete s.boot)));
    assert.deepEqual(firmware.storage.map((d) => d.isRootDevice), [false, true, false]);
    const ide = rejected(spec((s) => (s.disks = create(VmSpecSchema, { disks: [{ id: "old", hostPath: "/images/old.raw", bus: DiskBus.IDE }] }).disks)));
    assert.equal(ide.code, "failed_precondition");
    assert.match(ide.message, /IDE/);
  });

  it("rejects image and blank disks with FAILED_PRECONDITION naming what to do instead", () => {
    for (const disk of [{ id: "root", imageId: "img-1" }, { id: "blank", sizeGib: 10n }]) {
      const err = rejected(spec((s) => (s.disks = [create(VmSpecSchema, { disks: [disk] }).disks[0]!])));
      assert.equal(err.code, "failed_precondition");
      assert.match(err.message, new RegExp(`disk '${disk.id}'.*volume_id`));
    }
  });

  it("gives a volume disk the path resolved for it, and refuses one whose path is not known", () => {
    const withVolume = spec((s) => (s.disks = create(VmSpecSchema, { disks: [{ id: "data", volumeId: "vol-1", readonly: true }, { id: "boot", hostPath: "/images/root.raw", bootIndex: 1 }] }).disks));
    const config = toAgentVmConfig(ID, withVolume, new Map([["vol-1", "/pools/p1/vol-1.qcow2"]]));
    assert.deepEqual(config.storage.map((d) => [d.id, d.path, d.readOnly, d.isRootDevice]), [["data", "/pools/p1/vol-1.qcow2", true, false], ["boot", "/images/root.raw", false, false]]);
    assert.deepEqual(toAgentVmConfig(ID, withVolume, new Map([["vol-1", "/pools/p1/vol-1.qcow2"]])), config, "pure: the same inputs give the same config");
    const err = rejected(withVolume);
    assert.equal(err.code, "failed_precondition");
    assert.match(err.message, /disk 'data' names volume 'vol-1'/);
  });

  it("rejects UEFI firmware and a spec without cpu or memory", () => {
    assert.equal(rejected(spec((s) => (s.boot!.firmware = Firmware.UEFI))).code, "failed_precondition");
    assert.equal(rejected(spec((s) => delete s.memory)).code, "invalid_argument");
  });
});
