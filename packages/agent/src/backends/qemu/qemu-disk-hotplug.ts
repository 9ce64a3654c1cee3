import type { StorageDevice } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";
import { detectDiskSource, type DiskFormat } from "./disk-format.js";
import { backingLayerNodes } from "./qemu-args.js";
import { FIRST_PCI_SLOT, LAST_PCI_SLOT } from "./qemu-pci-layout.js";
import { QmpError, type QmpClient } from "./qmp-client.js";

/**
 * Disk hot-plug, hot-unplug and online resize over QMP, for a running QEMU.
 *
 * Names: a disk that was in the config when QEMU started has the names buildQemuArgs gave
 * it by position (`disk<i>` format node, `disk<i>-dev` device); a hot-plugged one gets
 * names derived from its id (`hp<12 hex>`, `hp<12 hex>-file`, `hp<12 hex>-dev`), never the
 * id itself, which is a user's string. Node names are at most 31 characters in QEMU.
 */

/** The QMP names of one disk in a running QEMU. */
export interface DiskNodeNames {
  /** The file (protocol) node. */
  readonly file: string;
  /** The format node the device reads through (block_resize names it). */
  readonly format: string;
  /** The device's qdev id (device_del names it). */
  readonly device: string;
}

/**
 * The names of disk `diskId` in a QEMU started with the disks `launchedIds` (in config
 * order): positional for those, id-derived for a disk plugged in later.
 */
export function diskNodeNames(diskId: string, launchedIds: readonly string[]): DiskNodeNames {
  const i = launchedIds.indexOf(diskId);
  if (i >= 0) return { file: `disk${i}-file`, format: `disk${i}`, device: `disk${i}-dev` };
  const h = `hp${hash48(diskId)}`;
  return { file: `${h}-file`, format: h, device: `${h}-dev` };
}


interface PciBus {
  bus: number;
  devices: { slot: number; qdev_id?: string }[];
}

/** A hot-plugged disk as the agent checked it (host-files.ts checkDiskChain): its resolved path and its backing chain, nearest first. */
export interface CheckedDisk {
  readonly real: string;
  readonly backing: readonly { readonly real: string; readonly format: DiskFormat; readonly blockDevice: boolean }[];
}

/**
 * Hot-plugs a virtio-blk-pci disk: its file is opened by QEMU at the resolved path the
 * agent checked against the allow-list, its format given (detected from its magic, never
 * probed), a linked clone's backing layers each added read-only below it (base first,
 * the nodes a boot gives them: backingLayerNodes) so a qcow2 opens no file by the name in
 * its header, and the device put on the first free slot of pci.0. A failure takes back
 * what was added. Returns the detected source and the slot.
 */
export async function hotPlugDisk(qmp: QmpClient, disk: StorageDevice, names: DiskNodeNames, checked: CheckedDisk): Promise<{ format: DiskFormat; blockDevice: boolean; slot: number }> {
  const source = await detectDiskSource(checked.real);
  const ro = disk.readOnly;
  const layers = backingLayerNodes(names.format, checked.backing.map((b) => ({ format: b.format, blockDevice: b.blockDevice, path: b.real })));
  const added: string[] = [];
  let slot = 0;
  const add = async (args: Record<string, unknown>) => {
    await qmpCall(qmp, "blockdev-add", args);
    added.push(args["node-name"] as string);
  };
  try {
    for (const node of layers.nodes) await add(node);
    await add({ driver: source.blockDevice ? "host_device" : "file", "node-name": names.file, filename: checked.real, "read-only": ro });
    await add({ driver: source.format, "node-name": names.format, file: names.file, "read-only": ro, ...(source.format === "qcow2" ? { backing: layers.top } : {}) });
    slot = await freeSlot(qmp);
    await qmpCall(qmp, "device_add", { driver: "virtio-blk-pci", id: names.device, drive: names.format, bus: "pci.0", addr: `0x${slot.toString(16)}` });
  } catch (err) {
    for (const node of added.reverse()) await qmp.execute("blockdev-del", { "node-name": node }).catch(() => undefined);
    throw err;
  }
  return { ...source, slot };
}

/**
 * Unplugs a disk: device_del asks the guest (ACPI PCI hot-plug) to release the device;
 * once QEMU reports DEVICE_DELETED its block nodes are removed. A guest that does not
 * release it within `timeoutMs` leaves it attached: DEADLINE_EXCEEDED.
 */
export async function hotUnplugDisk(qmp: QmpClient, names: DiskNodeNames, timeoutMs: number): Promise<void> {
  await waitDeviceDeleted(qmp, names.device, timeoutMs, "disk");
  await deleteNode(qmp, names.format);
  await deleteNode(qmp, names.file);
  // A linked clone's backing layers, upper first (each is the backing of the one above).
  const nodes = await qmp.execute<{ "node-name": string }[]>("query-named-block-nodes", { flat: true });
  const layer = new RegExp(`^${names.format}-b(\\d+)$`);
  const layers = nodes.map((n) => Number(layer.exec(n["node-name"])?.[1] ?? -1)).filter((j) => j >= 0).sort((a, b) => a - b);
  for (const j of layers) {
    await deleteNode(qmp, `${names.format}-b${j}`);
    await deleteNode(qmp, `${names.format}-b${j}-file`);
  }
}

/**
 * device_del of `device`, then waits for QEMU's DEVICE_DELETED (the guest released it).
 * A device already gone is fine; one still there after `timeoutMs` is DEADLINE_EXCEEDED
 * (it stays attached). Disk and NIC hot-unplug share it.
 */
export async function waitDeviceDeleted(qmp: QmpClient, device: string, timeoutMs: number, what: string): Promise<void> {
  const names = { device };
  let off: (() => void) | undefined;
  const deleted = new Promise<void>((resolve) => {
    off = qmp.onEvent((e) => {
      const data = e.data as { device?: string } | undefined;
      if (e.event === "DEVICE_DELETED" && data?.device === names.device) resolve();
    });
  });
  let timer: NodeJS.Timeout | undefined;
  try {
    // The device was there when device_del took it (the event is listened for since before), so
    // DEVICE_DELETED will come; only a device_del that found no device needs a look at the bus.
    let present = true;
    try {
      await qmpCall(qmp, "device_del", { id: names.device });
    } catch (err) {
      if (!(err instanceof QuantixError && err.code === "not_found")) throw err;
      present = false;
    }
    const late = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), timeoutMs)));
    // Not found: already gone (an earlier unplug completed after its caller gave up: it sends no
    // event again), or still leaving as the guest releases it (its event comes).
    const already = present ? new Promise<never>(() => {}) : devicePresent(qmp, names.device).then((p) => (p ? new Promise<never>(() => {}) : ("gone" as const)));
    const gone = await Promise.race([deleted.then(() => "gone" as const), late, already]);
    if (gone === "late") throw new QuantixError("deadline_exceeded", `the guest did not release ${what} device ${names.device} within ${Math.round(timeoutMs / 1000)} s; it stays attached`);
  } finally {
    clearTimeout(timer);
    off?.();
  }
}

/** How long blockdev-del is retried while QEMU still finishes releasing a node after DEVICE_DELETED. */
const NODE_RELEASE_MS = 5_000;
/** How often meanwhile (it was 50 ms: most of a hot-unplug on an idle guest). */
const NODE_RELEASE_POLL_MS = 10;

/** blockdev-del of a node; one already gone is fine, one still "in use" right after its device left is tried again briefly. */
async function deleteNode(qmp: QmpClient, nodeName: string): Promise<void> {
  const deadline = Date.now() + NODE_RELEASE_MS;
  for (;;) {
    try {
      await qmp.execute("blockdev-del", { "node-name": nodeName });
      return;
    } catch (err) {
      if (err instanceof QmpError && /not found|Cannot find|no node/i.test(err.message)) return;
      if (!(err instanceof QmpError && /in use/i.test(err.message)) || Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, NODE_RELEASE_POLL_MS));
    }
  }
}

/** Grows the disk whose format node is `names.format` to `sizeBytes` (block_resize); answers the size QEMU reports after. */
export async function resizeDiskOnline(qmp: QmpClient, names: DiskNodeNames, sizeBytes: bigint): Promise<bigint> {
  const before = await virtualSize(qmp, names.format);
  if (sizeBytes < before) throw new QuantixError("invalid_argument", `size_bytes: must be at least the disk's current size (${before} bytes): disks only grow`, [{ field: "size_bytes", reason: "OUT_OF_RANGE", description: `must be at least ${before}` }]);
  if (sizeBytes === before) return before;
  await qmpCall(qmp, "block_resize", { "node-name": names.format, size: Number(sizeBytes) });
  return virtualSize(qmp, names.format);
}

/** The virtual size QEMU reports for a format node (query-named-block-nodes). */
async function virtualSize(qmp: QmpClient, nodeName: string): Promise<bigint> {
  const nodes = await qmp.execute<{ "node-name": string; image: { "virtual-size": number } }[]>("query-named-block-nodes", { flat: true });
  const n = nodes.find((x) => x["node-name"] === nodeName);
  if (!n) throw new QuantixError("not_found", `the running VM has no block node ${nodeName}`);
  return BigInt(n.image["virtual-size"]);
}

async function devicePresent(qmp: QmpClient, device: string): Promise<boolean> {
  const buses = await qmp.execute<PciBus[]>("query-pci");
  return buses.some((b) => b.devices.some((d) => d.qdev_id === device));
}

/** The lowest slot of PCI bus 0 no device uses (RESOURCE_EXHAUSTED naming `what` when none is free). */
export async function freeSlot(qmp: QmpClient, what = "disk"): Promise<number> {
  const buses = await qmp.execute<PciBus[]>("query-pci");
  const used = new Set((buses.find((b) => b.bus === 0)?.devices ?? []).map((d) => d.slot));
  for (let s = FIRST_PCI_SLOT; s <= LAST_PCI_SLOT; s++) if (!used.has(s)) return s;
  throw new QuantixError("resource_exhausted", `the VM's PCI bus has no free slot for another ${what}`);
}

/** A QMP command whose error becomes a QuantixError (a missing device or node NOT_FOUND, else FAILED_PRECONDITION with QEMU's words). */
export async function qmpCall(qmp: QmpClient, command: string, args: Record<string, unknown>): Promise<void> {
  try {
    await qmp.execute(command, args);
  } catch (err) {
    if (err instanceof QmpError) {
      if (err.errorClass === "DeviceNotFound") throw new QuantixError("not_found", `QEMU ${command}: ${err.message}`);
      throw new QuantixError("failed_precondition", `QEMU refused ${command}: ${err.message}`);
    }
    throw err;
  }
}

/** 48 bits of two FNV-1a hashes, as 12 hex digits. */
export function hash48(text: string): string {
  let a = 0x811c9dc5;
  let b = 0x01000193;
  for (let i = 0; i < text.length; i++) {
    a = Math.imul(a ^ text.charCodeAt(i), 0x01000193) >>> 0;
    b = Math.imul(b ^ text.charCodeAt(text.length - 1 - i), 0x01000193) >>> 0;
  }
  return (a.toString(16).padStart(8, "0") + b.toString(16).padStart(8, "0")).slice(0, 12);
}
