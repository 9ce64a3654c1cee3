import { test } from "node:test";
import assert from "node:assert/strict";
import { create } from "@bufbuild/protobuf";
import { QuantixError } from "@quantix/core";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { CpuConfigSchema, MemoryConfigSchema, StorageInterfaceType, VmConfigSchema, type VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { buildQemuArgs, qmpChardevOption, type DiskSource, type QemuLaunchSpec } from "./qemu-args.js";
import { assignPciSlots } from "./qemu-pci-layout.js";

const MiB = 1048576n;

function spec(config: MessageInitShape<typeof VmConfigSchema>, disks: DiskSource[] = [{ format: "raw", blockDevice: false }]): QemuLaunchSpec {
  const full: VmConfig = create(VmConfigSchema, config);
  full.cpu ??= create(CpuConfigSchema, { vcpuCount: 2 });
  full.memory ??= create(MemoryConfigSchema, { sizeBytes: 256n * MiB });
  return { vmId: "vm-1", config: full, kvm: false, qmpSocket: "/state/vms/vm-1/qmp.sock", consoleSocket: "/state,x/vms/vm-1/console.sock", pidFile: "/state/vms/vm-1/qemu.pid", disks };
}

/** The values following each occurrence of `flag`. */
function values(args: string[], flag: string): string[] {
  return args.flatMap((a, i) => (a === flag ? [args[i + 1] ?? ""] : []));
}

test("a disk path with ',' and '=' stays one JSON string value", () => {
  const evil = "/tmp/x,readonly=on,file=/etc/passwd";
  const args = buildQemuArgs(spec({ storage: [{ id: "root", path: evil, readOnly: false }] }));
  const blockdevs = values(args, "-blockdev").map((v) => JSON.parse(v) as Record<string, unknown>);
  assert.deepEqual(blockdevs[0], { driver: "file", "node-name": "disk0-file", filename: evil, "read-only": false });
  assert.deepEqual(blockdevs[1], { driver: "raw", "node-name": "disk0", file: "disk0-file", "read-only": false });
  // Nothing else on the command line mentions the injected option.
  assert.equal(args.filter((a) => a.includes("/etc/passwd")).length, 1);
});

test("qcow2, read-only, block devices and NICs map to explicit drivers", () => {
  const args = buildQemuArgs(spec({
    storage: [{ id: "a", path: "/d/a.qcow2", readOnly: true, isRootDevice: true }, { id: "b", path: "/dev/sdz" }],
    network: [{ id: "n", macAddress: "52:54:00:AA:bb:01", tapDevice: "qtap0" }],
  }, [{ format: "qcow2", blockDevice: false }, { format: "raw", blockDevice: true }]));
  const blockdevs = values(args, "-blockdev").map((v) => JSON.parse(v) as Record<string, unknown>);
  assert.equal(blockdevs[1]?.["driver"], "qcow2");
  assert.equal(blockdevs[1]?.["read-only"], true);
  assert.equal(blockdevs[2]?.["driver"], "host_device");
  const devices = values(args, "-device").map((v) => JSON.parse(v) as Record<string, unknown>);
  assert.deepEqual(devices[0], { driver: "virtio-blk-pci", id: "disk0-dev", drive: "disk0", bootindex: 0, bus: "pci.0", addr: "0x2" });
  assert.deepEqual(devices[2], { driver: "virtio-net-pci", id: "nic0", netdev: "net0", mac: "52:54:00:aa:bb:01", bus: "pci.0", addr: "0x4" });
  assert.deepEqual(JSON.parse(values(args, "-netdev")[0] ?? ""), { type: "tap", id: "net0", ifname: "qtap0", script: "no", downscript: "no" });
  assert.deepEqual(values(args, "-accel"), ["tcg"]);
  assert.deepEqual(values(args, "-m"), ["256M"]);
  assert.ok(args.includes("-S"), "starts paused");
});

test("socket paths in key=value options have their commas doubled", () => {
  const args = buildQemuArgs(spec({}));
  assert.ok(values(args, "-chardev").includes("socket,id=console0,path=/state,,x/vms/vm-1/console.sock,server=on,wait=off"));
  assert.equal(qmpChardevOption("/a,b"), "socket,id=qmp0,path=/a,,b,server=on,wait=off");
});

test("relative paths, control characters and bad NICs are rejected with every violation named", () => {
  const bad = spec({
    boot: { kernelPath: "vmlinuz", initrdPath: "/i\nrd", kernelArgs: "console=ttyS0\u0000" },
    storage: [{ id: "d", path: "disk.img" }],
    network: [{ id: "n", macAddress: "nope", tapDevice: "tap with space" }],
  });
  assert.throws(() => buildQemuArgs(bad), (e: unknown) => {
    assert.ok(e instanceof QuantixError);
    assert.equal(e.code, "invalid_argument");
    assert.deepEqual(e.violations.map((v) => v.field).sort(), [
      "config.boot.initrd_path", "config.boot.kernel_args", "config.boot.kernel_path",
      "config.network[0].mac_address", "config.network[0].tap_device", "config.storage[0].path",
    ]);
    return true;
  });
});

test("a root disk asks for boot index 0 only when no kernel is given (-kernel's ROM holds it)", () => {
  const bootIndexes = (args: string[]) => values(args, "-device").map((v) => (JSON.parse(v) as Record<string, unknown>)["bootindex"]);
  const storage = [{ id: "root", path: "/d/root.img", isRootDevice: true }, { id: "data", path: "/d/data.img" }];
  const disks: DiskSource[] = [{ format: "raw", blockDevice: false }, { format: "raw", blockDevice: false }];
  assert.deepEqual(bootIndexes(buildQemuArgs(spec({ storage }, disks))), [0, undefined]);
  const direct = buildQemuArgs(spec({ storage, boot: { kernelPath: "/boot/vmlinuz", kernelArgs: "root=/dev/vda" } }, disks));
  assert.deepEqual(values(direct, "-kernel"), ["/boot/vmlinuz"]);
  assert.deepEqual(bootIndexes(direct), [undefined, undefined]);
});

test("an interface without a declared capability fails naming it", () => {
  assert.throws(() => buildQemuArgs(spec({ storage: [{ id: "d", path: "/d", interfaceType: StorageInterfaceType.NVME }] })),
    (e: unknown) => e instanceof QuantixError && e.code === "failed_precondition" && e.message.includes('"nvme"'));
});

test("with inherited descriptors QEMU is given no host file's name: disks are fd sets, the kernel and initrd /proc/self/fd", () => {
  const s = spec(
    { boot: { kernelPath: "/img/vmlinuz", initrdPath: "/img/initrd.gz" }, storage: [{ id: "a", path: "/img/a.img" }, { id: "b", path: "/img/b.img", readOnly: true }] },
    [{ format: "raw", blockDevice: false }, { format: "qcow2", blockDevice: false }],
  );
  const args = buildQemuArgs({ ...s, fds: { kernel: 3, initrd: 4, disks: [5, 6] } });
  assert.deepEqual(values(args, "-kernel"), ["/proc/self/fd/3"]);
  assert.deepEqual(values(args, "-initrd"), ["/proc/self/fd/4"]);
  assert.deepEqual(values(args, "-add-fd"), ["fd=5,set=1", "fd=6,set=2"]);
  const files = values(args, "-blockdev").map((v) => JSON.parse(v) as Record<string, unknown>).filter((b) => b["filename"] !== undefined);
  assert.deepEqual(files.map((b) => b["filename"]), ["/dev/fdset/1", "/dev/fdset/2"]);
  assert.equal(args.filter((a) => a.includes("/img/")).length, 0, "no config path reaches QEMU");
  assert.throws(() => buildQemuArgs({ ...s, fds: { kernel: 3, initrd: undefined, disks: [5, 6] } }), (e: unknown) => e instanceof QuantixError && e.code === "internal");
});

test("a qcow2 disk never opens a backing file (QEMU would open it by the name in the image's header)", () => {
  const args = buildQemuArgs(spec({ storage: [{ id: "a", path: "/d/a.qcow2" }] }, [{ format: "qcow2", blockDevice: false }]));
  const format = values(args, "-blockdev").map((v) => JSON.parse(v) as Record<string, unknown>).find((b) => b["driver"] === "qcow2");
  assert.ok(format && "backing" in format && format["backing"] === null, JSON.stringify(format));
});

test("a linked clone's backing chain: each layer the agent opened is its own read-only node, base first, named by the layer above; QEMU opens no name", () => {
  const base = { ...spec({ storage: [{ id: "root", path: "/pool/c.qcow2" }] }, [{ format: "qcow2", blockDevice: false }]) };
  const args = buildQemuArgs({
    ...base,
    backing: [[{ format: "qcow2", blockDevice: false, path: "/pool/b.qcow2" }, { format: "raw", blockDevice: false, path: "/pool/a.raw" }]],
    fds: { kernel: undefined, initrd: undefined, disks: [3], backing: [[4, 5]] },
  });
  assert.deepEqual(values(args, "-add-fd"), ["fd=3,set=1", "fd=5,set=1001", "fd=4,set=1000"]);
  assert.deepEqual(values(args, "-blockdev").map((v) => JSON.parse(v) as Record<string, unknown>), [
    { driver: "file", "node-name": "disk0-file", filename: "/dev/fdset/1", "read-only": false },
    { driver: "file", "node-name": "disk0-b1-file", filename: "/dev/fdset/1001", "read-only": true },
    { driver: "raw", "node-name": "disk0-b1", file: "disk0-b1-file", "read-only": true },
    { driver: "file", "node-name": "disk0-b0-file", filename: "/dev/fdset/1000", "read-only": true },
    { driver: "qcow2", "node-name": "disk0-b0", file: "disk0-b0-file", "read-only": true, backing: "disk0-b1" },
    { driver: "qcow2", "node-name": "disk0", file: "disk0-file", "read-only": false, backing: "disk0-b0" },
  ]);
  assert.equal(args.filter((a) => a.includes("/pool/")).length, 0, "no layer's path reaches QEMU");
});

test("the cloud-init seed is a read-only virtio disk after the config's disks, named by the agent's path only", () => {
  const args = buildQemuArgs({ ...spec({ storage: [{ id: "root", path: "/d/root.raw" }] }), seedFile: "/state/vms/vm-1/cidata.iso" });
  const blockdevs = values(args, "-blockdev").map((v) => JSON.parse(v) as Record<string, unknown>);
  assert.deepEqual(blockdevs.slice(2), [
    { driver: "file", "node-name": "cidata-file", filename: "/state/vms/vm-1/cidata.iso", "read-only": true },
    { driver: "raw", "node-name": "cidata", file: "cidata-file", "read-only": true },
  ]);
  const devices = values(args, "-device").map((v) => JSON.parse(v) as Record<string, unknown>);
  assert.deepEqual(devices.at(-1), { driver: "virtio-blk-pci", id: "cidata-dev", drive: "cidata", bus: "pci.0", addr: "0x3" });
  assert.equal(values(buildQemuArgs(spec({})), "-blockdev").some((v) => v.includes("cidata")), false, "no seed without one");
});

test("every PCI device at an explicit address: by default disks, seed, NICs from slot 2; a recorded layout is kept and the rest fill the free slots", () => {
  const config = {
    storage: [{ id: "root", path: "/d/root.raw" }, { id: "data", path: "/d/data.raw" }],
    network: [{ id: "eth0", macAddress: "52:54:00:aa:bb:01", tapDevice: "qtap0" }],
  };
  const raw: DiskSource[] = [{ format: "raw", blockDevice: false }, { format: "raw", blockDevice: false }];
  const addrs = (s: QemuLaunchSpec) => values(buildQemuArgs(s), "-device").map((v) => { const d = JSON.parse(v) as Record<string, unknown>; return `${String(d["id"])}@${String(d["bus"])}:${String(d["addr"])}`; });
  assert.deepEqual(addrs({ ...spec(config, raw), seedFile: "/state/vms/vm-1/cidata.iso" }), ["disk0-dev@pci.0:0x2", "disk1-dev@pci.0:0x3", "cidata-dev@pci.0:0x4", "nic0@pci.0:0x5"]);
  // As a migration's source had them: "data" hot-plugged at 0x6 after the seed and the NIC.
  const pciSlots = [{ kind: "disk" as const, id: "root", slot: 2 }, { kind: "cloud-init-seed" as const, id: "", slot: 3 }, { kind: "nic" as const, id: "eth0", slot: 4 }, { kind: "disk" as const, id: "data", slot: 6 }];
  assert.deepEqual(addrs({ ...spec(config, raw), seedFile: "/state/vms/vm-1/cidata.iso", pciSlots }), ["disk0-dev@pci.0:0x2", "disk1-dev@pci.0:0x6", "cidata-dev@pci.0:0x3", "nic0@pci.0:0x4"]);
  // Partly recorded (a disk added while stopped): the others take the lowest free slots; a taken or unknown slot is not reused.
  assert.deepEqual(addrs({ ...spec(config, raw), pciSlots: [{ kind: "disk", id: "data", slot: 2 }, { kind: "disk", id: "gone", slot: 3 }, { kind: "nic", id: "eth0", slot: 2 }] }), ["disk0-dev@pci.0:0x3", "disk1-dev@pci.0:0x2", "nic0@pci.0:0x4"]);
  assert.throws(() => assignPciSlots(Array.from({ length: 31 }, (_, i) => ({ kind: "disk" as const, id: `d${i}` }))), (e: unknown) => e instanceof QuantixError && e.code === "resource_exhausted");
});
