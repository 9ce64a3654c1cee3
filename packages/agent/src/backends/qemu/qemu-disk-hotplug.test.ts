import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { Code, createClient, createRouterTransport, type Client } from "@connectrpc/connect";
import { StorageInterfaceType, VmService } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { NodeStatus_Phase as NodePhase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VmStatus_State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { StoragePoolType } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { StoragePoolService } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import { VolumeState } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { VolumeService } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import { buildTestGuest, consoleText, ensureDebianPackages, guestVmConfig, lastTick, rejection, startTestServer, TestAgent, ticksPast, until, type TestGuest } from "@quantix/testing";
import { vmmRouter } from "../../rpc/vmm-router.js";
import { VmManager } from "../../vm-manager.js";
import { QemuBackend } from "./qemu-backend.js";

// Disk hot-plug, hot-unplug and online resize on a real QEMU (TCG), through the agent's
// vmm.v1 VmService (AttachDisk, DetachDisk, ResizeDisk). The busybox test guest has no
// virtio-blk driver and no tools to list block devices, so what the guest is given is
// checked from the agent's side with QMP (query-block, query-pci, query-named-block-nodes);
// the guest's ACPI hot-plug is what releases the device on DetachDisk (DEVICE_DELETED).
// The last case goes through the control plane (VolumeService on a TestAgent over QEMU).
const run = promisify(execFile);
const BOOT_MS = 60_000;
const MIB = 1n << 20n;
let guest: TestGuest;
let stateDir: string;
let diskDir: string;
let backend: QemuBackend;
let manager: VmManager;
let client: Client<typeof VmService>;

interface BlockInfo {
  qdev?: string;
  inserted?: { file: string; ro: boolean; "node-name"?: string; image: { "virtual-size": number } };
}

before(async () => {
  await ensureDebianPackages(["qemu-system-x86", "qemu-utils", "busybox-static", "cpio"]);
  guest = await buildTestGuest();
  stateDir = await mkdtemp(path.join(os.tmpdir(), "quantix-hotplug-"));
  diskDir = path.join(stateDir, "pools");
  await mkdir(diskDir, { recursive: true });
  backend = new QemuBackend({ stateDir, kvm: false, imageDirs: [guest.imageDir, diskDir] });
  manager = new VmManager({ backend, imageDirs: [guest.imageDir, diskDir] });
  await manager.start();
  // Unexpected errors reach the test's output (the agent hides them from callers).
  const r = vmmRouter(manager, "test", { log: (level, msg, fields) => void (level === "error" && console.error(msg, fields)) });
  client = createClient(VmService, createRouterTransport(r.routes, { router: { interceptors: r.interceptors } }));
});

after(async () => {
  for (const vm of await backend.listVMs().catch(() => [])) if (vm.pid) process.kill(vm.pid, "SIGKILL");
  manager?.close();
  await backend?.close();
  await rm(stateDir, { recursive: true, force: true });
});

async function volume(name: string, sizeMib: number): Promise<string> {
  const file = path.join(diskDir, `${name}.qcow2`);
  await run("qemu-img", ["create", "-q", "-f", "qcow2", file, `${sizeMib}M`]);
  return file;
}

// Which backend runs the VM: the first two tests' own, or the control plane's agent's in the third.
let blocksOf: QemuBackend | undefined;
const blocks = (vmId: string) => (blocksOf ?? backend).executeQmp<BlockInfo[]>(vmId, "query-block");
const pciIds = async (vmId: string) => (await backend.executeQmp<{ devices: { qdev_id?: string }[] }[]>(vmId, "query-pci")).flatMap((b) => b.devices.map((d) => d.qdev_id ?? ""));

test("a running VM gets a disk hot-plugged, grown online and hot-unplugged; the guest keeps running", { timeout: 240_000 }, async () => {
  const vmId = `hp-${process.pid}`;
  const file = await volume("data", 64);
  await client.createVm({ vmId, config: guestVmConfig(guest, 128) });
  await client.bootVm({ vmId });
  await ticksPast(backend, vmId, 3, "the guest booted", BOOT_MS);

  const disk = { id: "data", path: file, interfaceType: StorageInterfaceType.VIRTIO_BLK };
  const attached = await client.attachDisk({ vmId, disk });
  assert.equal(attached.hotPlugged, true);
  const plugged = (await blocks(vmId)).find((b) => b.inserted?.file === file);
  assert.ok(plugged, "query-block lists the volume's file");
  assert.equal(plugged.inserted!.ro, false);
  assert.equal(BigInt(plugged.inserted!.image["virtual-size"]), 64n * MIB);
  const device = (await pciIds(vmId)).find((id) => /^hp[0-9a-f]{12}-dev$/.test(id));
  assert.ok(device, "a virtio-blk-pci device with an id-derived name is on the PCI bus");
  assert.equal((await client.getVmInfo({ vmId })).config?.storage.map((d) => d.id).join(","), "data", "the config has the disk");
  assert.equal((await client.attachDisk({ vmId, disk })).hotPlugged, false, "the same disk again changes nothing");
  const other = await rejection(client.attachDisk({ vmId, disk: { ...disk, readOnly: true } }));
  assert.equal(other.code, Code.AlreadyExists);

  const grown = await client.resizeDisk({ vmId, diskId: "data", sizeBytes: 128n * MIB });
  assert.equal(grown.sizeBytes, 128n * MIB);
  const after = (await blocks(vmId)).find((b) => b.inserted?.file === file);
  assert.equal(BigInt(after!.inserted!.image["virtual-size"]), 128n * MIB, "QEMU's view of the disk grew");
  const info = JSON.parse((await run("qemu-img", ["info", "-U", "--output=json", file])).stdout) as { "virtual-size": number };
  assert.equal(BigInt(info["virtual-size"]), 128n * MIB, "the file grew");
  const shrink = await rejection(client.resizeDisk({ vmId, diskId: "data", sizeBytes: 64n * MIB }));
  assert.equal(shrink.code, Code.InvalidArgument);

  const tick = await lastTick(backend, vmId);
  const detached = await client.detachDisk({ vmId, diskId: "data", timeoutSeconds: 60 });
  assert.equal(detached.hotUnplugged, true);
  assert.equal((await blocks(vmId)).some((b) => b.inserted?.file === file), false, "the file is no longer open in QEMU");
  assert.equal((await pciIds(vmId)).includes(device), false, "the device left the PCI bus");
  assert.equal((await client.getVmInfo({ vmId })).config?.storage.length, 0);
  assert.equal((await client.detachDisk({ vmId, diskId: "data" })).hotUnplugged, false, "detaching again changes nothing");
  await ticksPast(backend, vmId, tick, "the guest still running after the unplug", BOOT_MS);
  // QEMU released its lock: qemu-img may open the file for writing again.
  await run("qemu-img", ["resize", "-q", "-f", "qcow2", file, "192M"]);
  await client.deleteVm({ vmId, force: true });
});

test("a hot-plugged disk is in the VM's config at the next start; refusals name the state, the path or the capability", { timeout: 240_000 }, async () => {
  const vmId = `hp2-${process.pid}`;
  const file = await volume("keep", 32);
  await client.createVm({ vmId, config: guestVmConfig(guest, 128) });
  const stopped = await rejection(client.attachDisk({ vmId, disk: { id: "keep", path: file } }));
  assert.equal(stopped.code, Code.FailedPrecondition);
  assert.match(stopped.rawMessage, /CREATED/);
  await client.bootVm({ vmId });
  await ticksPast(backend, vmId, 1, "the guest booted", BOOT_MS);
  const outside = await rejection(client.attachDisk({ vmId, disk: { id: "etc", path: "/etc/hostname" } }));
  assert.equal(outside.code, Code.InvalidArgument);
  assert.match(outside.rawMessage, /config\.storage\[0\]\.path/);
  const scsi = await rejection(client.attachDisk({ vmId, disk: { id: "s", path: file, interfaceType: StorageInterfaceType.VIRTIO_SCSI } }));
  assert.equal(scsi.code, Code.FailedPrecondition);
  assert.equal((await client.attachDisk({ vmId, disk: { id: "keep", path: file } })).hotPlugged, true);
  await client.shutdownVm({ vmId, force: true });
  await client.bootVm({ vmId });
  const pid = (await backend.getVMInfo(vmId)).pid!;
  const cmdline = (await readFile(`/proc/${pid}/cmdline`, "utf8")).split("\0");
  assert.ok(cmdline.some((a) => a.includes('"node-name":"disk0"')), "the disk is one of QEMU's disks at start");
  await until(async () => ((await blocks(vmId)).some((b) => b.inserted?.["node-name"] === "disk0") ? true : undefined), "disk0 in query-block", 10_000);
  // A disk that was there at start unplugs too (positional names), once the guest runs
  // again (the console keeps the first boot's output: wait for a tick after the second marker).
  await until(async () => (/QUANTIX-GUEST-BOOTED[^]*QUANTIX-GUEST-BOOTED[^]*quantix-tick 3\b/.test(await consoleText(backend, vmId)) ? true : undefined), "the guest booted again", BOOT_MS);
  assert.equal((await client.detachDisk({ vmId, diskId: "keep", timeoutSeconds: 60 })).hotUnplugged, true);
  assert.equal((await blocks(vmId)).some((b) => b.inserted?.["node-name"] === "disk0"), false);
  await client.deleteVm({ vmId, force: true });
});

test("through the control plane: a volume hot-attached to a VM running on a QEMU agent, grown online, and detached", { timeout: 300_000 }, async () => {
  const cpState = await mkdtemp(path.join(os.tmpdir(), "quantix-hotplug-cp-"));
  const s = await startTestServer({ demo: false, defaultQuota: {} });
  const qemu = new QemuBackend({ stateDir: path.join(cpState, "agent"), kvm: false, imageDirs: [guest.imageDir, path.join(cpState, "agent", "pools")] });
  const agent = new TestAgent(qemu, path.join(cpState, "agent"), `hotplug-agent-${process.pid}`, 200, [guest.imageDir]);
  blocksOf = qemu;
  try {
    await agent.start(s.url);
    const nodeId = await until(async () => (await s.nodes.listNodes({})).nodes.find((n) => n.hostname === agent.name && n.status?.phase === NodePhase.READY)?.id, "the agent's node READY", 30_000);
    assert.ok((await s.nodes.getNode({ id: nodeId })).status?.hypervisor?.capabilities.includes("disk-hotplug"), "the QEMU agent registers disk-hotplug");
    const pools = createClient(StoragePoolService, s.transport);
    const volumes = createClient(VolumeService, s.transport);
    const poolId = (await pools.createStoragePool({ name: "hp-local", spec: { type: StoragePoolType.LOCAL_DIR, nodeIds: [nodeId], isDefault: true } })).id;
    const vol = await volumes.createVolume({ name: "hot", spec: { sizeGib: 1n, poolId } });
    await until(async () => ((await volumes.getVolume({ id: vol.id })).status?.state === VolumeState.AVAILABLE ? true : undefined), "volume AVAILABLE", 30_000);
    const vm = await s.vms.createVM({ name: "hp-vm", startOnCreate: true, spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot: { directBoot: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, cmdline: guest.kernelArgs } } } });
    await until(async () => ((await s.vms.getVM({ id: vm.id })).status?.state === VmStatus_State.RUNNING ? true : undefined), "VM RUNNING", BOOT_MS);
    await ticksPast(qemu, vm.id, 3, "the guest booted", BOOT_MS);
    const file = path.join(cpState, "agent", "pools", poolId, `${vol.id}.qcow2`);

    const attached = await volumes.attachVolume({ id: vol.id, vmId: vm.id, diskId: "hot" });
    assert.deepEqual(attached.status?.attachments.map((a) => [a.vmId, a.diskId, a.nodeId]), [[vm.id, "hot", nodeId]]);
    assert.ok((await blocks(vm.id)).some((b) => b.inserted?.file === file), "QEMU has the volume's file open");
    assert.deepEqual((await s.vms.getVM({ id: vm.id })).spec?.disks.map((d) => [d.id, d.volumeId]), [["hot", vol.id]]);
    await until(async () => ((await volumes.getVolume({ id: vol.id })).status?.state === VolumeState.IN_USE ? true : undefined), "IN_USE");

    await volumes.resizeVolume({ id: vol.id, newSizeGib: 2n });
    const size = async () => BigInt((await blocks(vm.id)).find((b) => b.inserted?.file === file)?.inserted?.image["virtual-size"] ?? 0);
    assert.equal(await size(), 2n << 30n, "the running VM's disk grew (block_resize)");
    await until(async () => ((await volumes.getVolume({ id: vol.id })).status?.virtualSizeBytes === 2n << 30n ? true : undefined), "the volume's measured size follows");
    assert.equal((await volumes.getVolume({ id: vol.id })).status?.state, VolumeState.IN_USE, "no offline resize was tried on the locked file");

    const refused = await rejection(volumes.deleteVolume({ id: vol.id }));
    assert.equal(refused.code, Code.FailedPrecondition);
    const detached = await volumes.detachVolume({ id: vol.id });
    assert.equal(detached.status?.attachments.length, 0);
    assert.equal((await blocks(vm.id)).some((b) => b.inserted?.file === file), false, "QEMU let the file go");
    assert.equal((await s.vms.getVM({ id: vm.id })).spec?.disks.length, 0);
    await s.vms.deleteVM({ id: vm.id, force: true });
    await volumes.deleteVolume({ id: vol.id });
  } finally {
    for (const v of await qemu.listVMs().catch(() => [])) if (v.pid) process.kill(v.pid, "SIGKILL");
    await agent.kill().catch(() => undefined);
    await qemu.close();
    await s.close();
    await rm(cpState, { recursive: true, force: true });
  }
});
