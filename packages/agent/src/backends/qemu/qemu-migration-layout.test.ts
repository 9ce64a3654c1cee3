import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { Code, createClient, createRouterTransport, type Client } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { PciDeviceKind, StorageInterfaceType, VmConfigSchema, VmService, VmState } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { buildTestGuest, ensureDebianPackages, guestVmConfig, lastTick, rejection, ticksPast, until, type TestGuest } from "@quantix/testing";
import { vmmRouter } from "../../rpc/vmm-router.js";
import { VmManager } from "../../vm-manager.js";
import { QemuBackend } from "./qemu-backend.js";

// A VM whose disks were hot-plugged and unplugged since it started migrates live: the
// source reports where each PCI device sits (PlanMigration's device_layout, from QEMU's
// query-pci) and the target starts QEMU with every device at that address. Two QEMU
// agents (TCG) on one machine sharing the directory that holds the guest and the disks.
const run = promisify(execFile);
const BOOT_MS = 60_000;
let guest: TestGuest;
let root: string;
let diskDir: string;
const agents: { backend: QemuBackend; manager: VmManager; client: Client<typeof VmService> }[] = [];

interface PciDev { bus: number; slot: number; function: number; qdev_id?: string; id: { vendor: number; device: number }; class_info: { class: number } }

before(async () => {
  await ensureDebianPackages(["qemu-system-x86", "qemu-utils", "busybox-static", "cpio", "genisoimage"]);
  guest = await buildTestGuest();
  root = await mkdtemp(path.join(os.tmpdir(), "quantix-mig-layout-"));
  diskDir = path.join(root, "shared");
  await mkdir(diskDir, { recursive: true });
  for (const name of ["a", "b"]) {
    const dirs = [guest.imageDir, diskDir];
    const backend = new QemuBackend({ stateDir: path.join(root, name), kvm: false, imageDirs: dirs });
    const manager = new VmManager({ backend, imageDirs: dirs, sharedDirs: dirs });
    await manager.start();
    const r = vmmRouter(manager, "test", { log: (level, msg, fields) => void (level === "error" && console.error(msg, fields)) });
    agents.push({ backend, manager, client: createClient(VmService, createRouterTransport(r.routes, { router: { interceptors: r.interceptors } })) });
  }
});

after(async () => {
  for (const a of agents) {
    for (const vm of await a.backend.listVMs().catch(() => [])) if (vm.pid) process.kill(vm.pid, "SIGKILL");
    a.manager.close();
    await a.backend.close();
  }
  await rm(root, { recursive: true, force: true });
});

async function disk(name: string): Promise<string> {
  const file = path.join(diskDir, `${name}.qcow2`);
  await run("qemu-img", ["create", "-q", "-f", "qcow2", file, "16M"]);
  return file;
}

/** The devices on bus 0 by slot: qdev id, vendor:device and class, as QEMU reports them. */
async function pci(backend: QemuBackend, vmId: string): Promise<Map<number, { qdev: string; what: string }>> {
  const buses = await backend.executeQmp<{ bus: number; devices: PciDev[] }[]>(vmId, "query-pci");
  return new Map(buses.filter((b) => b.bus === 0).flatMap((b) => b.devices).filter((d) => d.function === 0).map((d) => [d.slot, { qdev: d.qdev_id ?? "", what: `${d.id.vendor.toString(16)}:${d.id.device.toString(16)}/${d.class_info.class.toString(16)}` }]));
}

test("a VM with hot-plugged and unplugged disks migrates live; the target's PCI layout is the source's", { timeout: 300_000 }, async () => {
  const [source, target] = [agents[0]!, agents[1]!];
  const vmId = `mig-layout-${process.pid}`;
  const [a, b, c, d] = await Promise.all(["a", "b", "c", "d"].map(disk));
  const virtio = StorageInterfaceType.VIRTIO_BLK;
  const base = guestVmConfig(guest, 128);
  const config = create(VmConfigSchema, {
    cpu: base.cpu,
    memory: base.memory,
    boot: base.boot,
    storage: [{ id: "a", path: a!, interfaceType: virtio }, { id: "b", path: b!, interfaceType: virtio }],
    cloudInit: { userData: "#cloud-config\n" },
  });
  await source.client.createVm({ vmId, config });
  await source.client.bootVm({ vmId });
  await ticksPast(source.backend, vmId, 3, "the guest booted on the source", BOOT_MS);
  // At start: a 0x2, b 0x3, the seed 0x4. Then c is plugged (0x5), b unplugged (0x3 free), d plugged (0x3).
  await source.client.attachDisk({ vmId, disk: { id: "c", path: c!, interfaceType: virtio } });
  await source.client.detachDisk({ vmId, diskId: "b", timeoutSeconds: 60 });
  await source.client.attachDisk({ vmId, disk: { id: "d", path: d!, interfaceType: virtio } });
  const before = await pci(source.backend, vmId);
  const slotOf = (qdev: RegExp) => [...before].find(([, v]) => qdev.test(v.qdev))?.[0];
  assert.equal(slotOf(/^disk0-dev$/), 2);
  assert.equal(slotOf(/^cidata-dev$/), 4);
  assert.deepEqual((await source.client.getVmInfo({ vmId })).config?.storage.map((x) => x.id), ["a", "c", "d"]);

  // The source's report: QEMU's own layout, by device.
  const plan = await source.client.planMigration({ vmId });
  assert.equal(plan.diskCopies.length, 0, "shared storage: nothing to copy");
  const layout = new Map(plan.deviceLayout.map((p) => [`${PciDeviceKind[p.kind]}:${p.deviceId}`, p.slot]));
  assert.deepEqual(Object.fromEntries(layout), { "DISK:a": 2, "DISK:c": 5, "DISK:d": 3, "CLOUD_INIT_SEED:": 4 }, "the layout names where hot-plug put c and d, not the config's order");
  const targetConfig = (await source.client.getVmInfo({ vmId })).config!;

  // A layout that does not fit the config changes nothing on the target.
  const partial = await rejection(target.client.prepareMigration({ vmId, config: targetConfig, deviceLayout: plan.deviceLayout.slice(1) }));
  assert.equal(partial.code, Code.InvalidArgument);
  assert.match(partial.rawMessage, /device_layout/);
  const clash = await rejection(target.client.prepareMigration({ vmId, config: targetConfig, deviceLayout: plan.deviceLayout.map((p) => ({ ...p, slot: 2 })) }));
  assert.equal(clash.code, Code.InvalidArgument);
  assert.equal((await target.client.listVms({})).vms.length, 0);

  const prepared = await target.client.prepareMigration({ vmId, config: targetConfig, deviceLayout: plan.deviceLayout });
  const tick = await lastTick(source.backend, vmId);
  const progress = [];
  for await (const m of source.client.migrateVm({ vmId, targetUri: prepared.targetUri })) progress.push(m);
  assert.ok(progress.at(-1)?.completed, "the migration completed");
  await until(async () => ((await target.client.getVmInfo({ vmId })).state === VmState.RUNNING ? true : undefined), "the VM running on the target", 30_000, 100);
  await ticksPast(target.backend, vmId, tick, "the guest counting on the target", BOOT_MS);

  // Same slots, same devices: the target's disks are named by position (disk<i>), the source's hot-plugged ones by id.
  const after = await pci(target.backend, vmId);
  assert.deepEqual([...after.keys()].sort(), [...before.keys()].sort(), "the same slots are used");
  for (const [slot, dev] of before) assert.equal(after.get(slot)?.what, dev.what, `slot ${slot}: the same kind of device`);
  const names = { a: "disk0-dev", c: "disk1-dev", d: "disk2-dev" } as const;
  for (const [id, qdev] of Object.entries(names)) assert.equal([...after].find(([, v]) => v.qdev === qdev)?.[0], layout.get(`DISK:${id}`), `disk ${id} at its source slot`);
  assert.equal([...after].find(([, v]) => v.qdev === "cidata-dev")?.[0], 4);
  const blocks = await target.backend.executeQmp<{ qdev?: string; inserted?: { file: string } }[]>(vmId, "query-block");
  assert.deepEqual(blocks.filter((x) => x.inserted).map((x) => /peripheral\/([a-z0-9-]+)\//.exec(x.qdev ?? "")?.[1]).sort(), ["cidata-dev", "disk0-dev", "disk1-dev", "disk2-dev"], "the disks are open on the target (QEMU has them as inherited descriptors)");
  // The target recorded the layout: it plans the same for the next migration.
  assert.deepEqual((await target.client.planMigration({ vmId })).deviceLayout.map((p) => [p.deviceId, p.slot]).sort(), plan.deviceLayout.map((p) => [p.deviceId, p.slot]).sort());
  await target.client.deleteVm({ vmId, force: true });
});
