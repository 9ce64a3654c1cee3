import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { PciDeviceKind, PciSlotSchema, VmConfigSchema } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { checkDeviceLayout, toPciSlot } from "./migration-layout.js";

const config = create(VmConfigSchema, {
  storage: [{ id: "root", path: "/p/root.qcow2" }, { id: "data", path: "/p/data.qcow2" }],
  network: [{ id: "eth0", macAddress: "52:54:00:00:00:01", tapDevice: "qtap0" }],
  cloudInit: { userData: "#cloud-config\n" },
});
const slot = (kind: PciDeviceKind, deviceId: string, n: number) => create(PciSlotSchema, { kind, deviceId, slot: n });
const full = [slot(PciDeviceKind.DISK, "root", 2), slot(PciDeviceKind.CLOUD_INIT_SEED, "", 3), slot(PciDeviceKind.NIC, "eth0", 4), slot(PciDeviceKind.DISK, "data", 6)];
const fields = (layout: ReturnType<typeof slot>[], c = config) => checkDeviceLayout(c, layout).violations.map((v) => `${v.field} ${v.reason}`);

test("a layout that places every device of the config once is taken as it is; an empty one means the default", () => {
  const ok = checkDeviceLayout(config, full);
  assert.deepEqual(ok.violations, []);
  assert.deepEqual(ok.placements, [{ kind: "disk", id: "root", slot: 2 }, { kind: "cloud-init-seed", id: "", slot: 3 }, { kind: "nic", id: "eth0", slot: 4 }, { kind: "disk", id: "data", slot: 6 }]);
  assert.deepEqual(ok.placements.map(toPciSlot), full.map((p) => ({ kind: p.kind, deviceId: p.deviceId, slot: p.slot })), "the wire form round-trips");
  assert.deepEqual(checkDeviceLayout(config, []), { violations: [], placements: [] });
});

test("a layout that does not fit the config is refused naming the entry's field", () => {
  assert.deepEqual(fields(full.slice(1)), ["device_layout INCOMPLETE"]);
  assert.deepEqual(fields([...full.slice(0, 3), slot(PciDeviceKind.DISK, "data", 2)]), ["device_layout[3].slot DUPLICATE"]);
  assert.deepEqual(fields([...full.slice(0, 3), slot(PciDeviceKind.DISK, "data", 1)]), ["device_layout[3].slot OUT_OF_RANGE"]);
  assert.deepEqual(fields([...full.slice(0, 3), slot(PciDeviceKind.DISK, "data", 32)]), ["device_layout[3].slot OUT_OF_RANGE"]);
  assert.deepEqual(fields([...full, slot(PciDeviceKind.DISK, "other", 7)]), ["device_layout[4].device_id NOT_FOUND"]);
  assert.deepEqual(fields([...full, slot(PciDeviceKind.DISK, "root", 7)]), ["device_layout[4].device_id DUPLICATE"]);
  assert.deepEqual(fields([...full.slice(0, 3), slot(PciDeviceKind.UNSPECIFIED, "data", 6)]), ["device_layout[3].kind INVALID_VALUE"]);
  assert.deepEqual(fields([slot(PciDeviceKind.CLOUD_INIT_SEED, "x", 3)]), ["device_layout[0].device_id NOT_ALLOWED"]);
  const noSeed = create(VmConfigSchema, { storage: [{ id: "root", path: "/p/root.qcow2" }] });
  assert.deepEqual(fields([slot(PciDeviceKind.DISK, "root", 2), slot(PciDeviceKind.CLOUD_INIT_SEED, "", 3)], noSeed), ["device_layout[1].device_id NOT_FOUND"]);
  assert.deepEqual(checkDeviceLayout(config, full.slice(1)).placements, [], "nothing is placed from a refused layout");
});
