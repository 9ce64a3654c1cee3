import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { Code, createClient, createRouterTransport, type Client, type ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { VmService } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { buildTestGuest, consoleText, ensureDebianPackages, guestVmConfig, lastTick, rejection, ticksPast, until, type TestGuest } from "@quantix/testing";
import { vmmRouter } from "../../rpc/vmm-router.js";
import { VmManager } from "../../vm-manager.js";
import { QemuBackend } from "./qemu-backend.js";

// NIC hot-plug and hot-unplug on a real QEMU (TCG), through the agent's vmm.v1 VmService
// (AttachNic, DetachNic). The NIC names a port whose TAP the test made (the agent resolves
// it as CreateVm does: the portTaps lookup stands in for NetworkService). The busybox guest
// configures no hot-plugged interface, so what it is given is checked from the agent's
// side with QMP: query-pci (the device on the bus, at the slot recorded for the VM) and
// query-rx-filter (the NIC's MAC); the guest's ACPI hot-plug releases it on DetachNic.
const run = promisify(execFile);
const BOOT_MS = 60_000;
const TAP = `qxhnt${process.pid % 100000}`;
const PORT = "0c0c0c0c-0000-4000-8000-00000000000a";
const MAC = "52:54:00:6e:69:63";
let guest: TestGuest;
let stateDir: string;
let backend: QemuBackend;
let manager: VmManager;
let client: Client<typeof VmService>;

before(async () => {
  await ensureDebianPackages(["qemu-system-x86", "busybox-static", "cpio", "iproute2"]);
  guest = await buildTestGuest();
  stateDir = await mkdtemp(path.join(os.tmpdir(), "quantix-nic-hotplug-"));
  await run("ip", ["tuntap", "add", "dev", TAP, "mode", "tap"]);
  await run("ip", ["link", "set", TAP, "up"]);
  backend = new QemuBackend({ stateDir, kvm: false, imageDirs: [guest.imageDir] });
  manager = new VmManager({ backend, imageDirs: [guest.imageDir], portTaps: (id) => (id === PORT ? { tap: TAP, mac: MAC } : undefined) });
  await manager.start();
  const r = vmmRouter(manager, "test", { log: (level, msg, fields) => void (level === "error" && console.error(msg, fields)) });
  client = createClient(VmService, createRouterTransport(r.routes, { router: { interceptors: r.interceptors } }));
});

after(async () => {
  for (const vm of await backend.listVMs().catch(() => [])) if (vm.pid) process.kill(vm.pid, "SIGKILL");
  manager?.close();
  await backend?.close();
  await run("ip", ["link", "del", TAP]).catch(() => undefined);
  await rm(stateDir, { recursive: true, force: true });
});

interface PciDevice {
  slot: number;
  qdev_id?: string;
  class_info?: { class: number };
}
const pci = async (vmId: string) => (await backend.executeQmp<{ bus: number; devices: PciDevice[] }[]>(vmId, "query-pci")).filter((b) => b.bus === 0).flatMap((b) => b.devices);
const rxMacs = async (vmId: string) => (await backend.executeQmp<{ name: string; "main-mac": string }[]>(vmId, "query-rx-filter")).map((f) => `${f.name}=${f["main-mac"]}`);
const fields = (e: ConnectError) => e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));

test("a running VM gets a NIC on a port hot-plugged and hot-unplugged, kept across a restart at its slot; the guest keeps running", { timeout: 300_000 }, async () => {
  const vmId = `hn-${process.pid}`;
  await client.createVm({ vmId, config: guestVmConfig(guest, 128) });
  const stopped = await rejection(client.attachNic({ vmId, nic: { id: "eth1", macAddress: MAC, portId: PORT } }));
  assert.equal(stopped.code, Code.FailedPrecondition, stopped.message);
  assert.match(stopped.rawMessage, /CREATED/);
  await client.bootVm({ vmId });
  await ticksPast(backend, vmId, 3, "the guest booted", BOOT_MS);

  // Refusals first: each names what is wrong, and nothing is plugged.
  const unknown = await rejection(client.attachNic({ vmId: "0d0d0d0d-0000-4000-8000-000000000000", nic: { id: "eth1", macAddress: MAC, portId: PORT } }));
  assert.equal(unknown.code, Code.NotFound, unknown.message);
  const badId = await rejection(client.attachNic({ vmId, nic: { id: "1eth", macAddress: MAC, portId: PORT } }));
  assert.equal(badId.code, Code.InvalidArgument, badId.message);
  assert.deepEqual(fields(badId), ["config.network[0].id"]);
  const noPort = await rejection(client.attachNic({ vmId, nic: { id: "eth1", macAddress: MAC, portId: "0c0c0c0c-0000-4000-8000-00000000000b" } }));
  assert.equal(noPort.code, Code.FailedPrecondition, noPort.message);
  assert.match(noPort.rawMessage, /port '0c0c0c0c-0000-4000-8000-00000000000b' is not declared on this host/);
  const wrongMac = await rejection(client.attachNic({ vmId, nic: { id: "eth1", macAddress: "52:54:00:00:00:01", portId: PORT } }));
  assert.equal(wrongMac.code, Code.InvalidArgument, wrongMac.message);
  assert.deepEqual(fields(wrongMac), ["config.network[0].mac_address"]);
  const before = await pci(vmId);

  const nic = { id: "eth1", macAddress: MAC, portId: PORT };
  const attached = await client.attachNic({ vmId, nic });
  assert.equal(attached.hotPlugged, true);
  const device = (await pci(vmId)).find((d) => /^hn[0-9a-f]{12}-dev$/.test(d.qdev_id ?? ""));
  assert.ok(device, "a virtio-net-pci device with an id-derived name is on pci.0");
  assert.equal(before.some((d) => d.slot === device.slot), false, "on a slot that was free");
  assert.ok((await rxMacs(vmId)).includes(`${device.qdev_id}=${MAC}`), "QEMU's NIC has the port's MAC");
  const cfg = (await client.getVmInfo({ vmId })).config!;
  assert.deepEqual(cfg.network.map((n) => [n.id, n.tapDevice, n.portId]), [["eth1", TAP, PORT]], "the config has the NIC on the port's TAP");
  assert.equal((await client.attachNic({ vmId, nic })).hotPlugged, false, "the same NIC again changes nothing");
  const taken = await rejection(client.attachNic({ vmId, nic: { ...nic, macAddress: "52:54:00:00:00:02", portId: "", tapDevice: TAP } }));
  assert.equal(taken.code, Code.AlreadyExists, taken.message);
  // The layout a migration's target reproduces has the NIC where it is.
  const layout = (await client.planMigration({ vmId })).deviceLayout;
  assert.equal(layout.find((p) => p.deviceId === "eth1")?.slot, device.slot);

  // Hot-unplugged: the device and its netdev go (the TAP is free: plugging it again works).
  const tick0 = await lastTick(backend, vmId);
  assert.equal((await client.detachNic({ vmId, nicId: "eth1", timeoutSeconds: 60 })).hotUnplugged, true);
  assert.equal((await pci(vmId)).some((d) => d.qdev_id === device.qdev_id), false, "the device left the PCI bus");
  assert.deepEqual(await rxMacs(vmId), [], "no NIC left in QEMU");
  assert.equal((await client.getVmInfo({ vmId })).config?.network.length, 0);
  assert.equal((await client.detachNic({ vmId, nicId: "eth1" })).hotUnplugged, false, "detaching again changes nothing");
  await ticksPast(backend, vmId, tick0, "the guest still running after the unplug", BOOT_MS);
  assert.equal((await client.attachNic({ vmId, nic })).hotPlugged, true);

  // A restart keeps it, at the same slot, now with the names of a NIC QEMU started with.
  await client.shutdownVm({ vmId, force: true });
  await client.bootVm({ vmId });
  // The console keeps the first boot's output: wait for a tick after the second boot's marker (ACPI hot-plug needs the guest up).
  await until(async () => (/QUANTIX-GUEST-BOOTED[^]*QUANTIX-GUEST-BOOTED[^]*quantix-tick 3\b/.test(await consoleText(backend, vmId)) ? true : undefined), "the guest booted again", BOOT_MS);
  const again = (await pci(vmId)).find((d) => d.qdev_id === "nic0");
  assert.equal(again?.slot, device.slot, "the NIC is back at its slot");
  assert.ok((await rxMacs(vmId)).includes(`nic0=${MAC}`));

  const tick = await lastTick(backend, vmId);
  const detached = await client.detachNic({ vmId, nicId: "eth1", timeoutSeconds: 60 });
  assert.equal(detached.hotUnplugged, true);
  assert.equal((await pci(vmId)).some((d) => d.qdev_id === "nic0"), false, "the device left the PCI bus");
  assert.deepEqual(await rxMacs(vmId), [], "no NIC left in QEMU");
  assert.equal((await client.getVmInfo({ vmId })).config?.network.length, 0);
  assert.equal((await client.detachNic({ vmId, nicId: "eth1" })).hotUnplugged, false, "detaching again changes nothing");
  await ticksPast(backend, vmId, tick, "the guest still running after the unplug", BOOT_MS);
  await client.deleteVm({ vmId, force: true });
});
