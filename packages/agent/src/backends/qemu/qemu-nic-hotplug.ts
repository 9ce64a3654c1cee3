import type { NetworkInterface } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";
import { nicDriver } from "./qemu-args.js";
import { freeSlot, hash48, qmpCall, waitDeviceDeleted } from "./qemu-disk-hotplug.js";
import { QmpError, type QmpClient } from "./qmp-client.js";

/**
 * NIC hot-plug and hot-unplug over QMP, for a running QEMU.
 *
 * Names: a NIC that was in the config when QEMU started has the names buildQemuArgs gave
 * it by position (`net<i>` netdev, `nic<i>` device); a hot-plugged one gets names derived
 * from its id (`hn<12 hex>` netdev, `hn<12 hex>-dev` device), never the id itself, which
 * is a user's string.
 */

/** The QMP names of one NIC in a running QEMU. */
export interface NicNames {
  /** The netdev (the TAP backend). */
  readonly netdev: string;
  /** The device's qdev id (device_del names it). */
  readonly device: string;
}

/** The names of NIC `nicId` in a QEMU started with the NICs `launchedIds` (in config order). */
export function nicNames(nicId: string, launchedIds: readonly string[]): NicNames {
  const i = launchedIds.indexOf(nicId);
  if (i >= 0) return { netdev: `net${i}`, device: `nic${i}` };
  const h = `hn${hash48(nicId)}`;
  return { netdev: h, device: `${h}-dev` };
}

/**
 * Hot-plugs a NIC: netdev_add of its TAP (already on the host: a port's TAP, resolved by
 * the agent as for CreateVm; QEMU runs no script, and no vhost, as at boot), then
 * device_add of the emulated NIC with the NIC's MAC on the first free slot of pci.0. A
 * failed device_add takes the netdev back. Returns the slot.
 */
export async function hotPlugNic(qmp: QmpClient, nic: NetworkInterface, names: NicNames): Promise<number> {
  const driver = nicDriver(nic.interfaceType, 0);
  await qmpCall(qmp, "netdev_add", { type: "tap", id: names.netdev, ifname: nic.tapDevice, script: "no", downscript: "no" });
  try {
    const slot = await freeSlot(qmp, "network interface");
    await qmpCall(qmp, "device_add", { driver, id: names.device, netdev: names.netdev, mac: nic.macAddress.toLowerCase(), bus: "pci.0", addr: `0x${slot.toString(16)}` });
    return slot;
  } catch (err) {
    await qmp.execute("netdev_del", { id: names.netdev }).catch(() => undefined);
    throw err;
  }
}

/**
 * Unplugs a NIC: device_del asks the guest (ACPI PCI hot-plug) to release it; once QEMU
 * reports DEVICE_DELETED its netdev is removed (the TAP stays: the network data plane
 * owns it). A guest that does not release it within `timeoutMs` leaves it attached:
 * DEADLINE_EXCEEDED.
 */
export async function hotUnplugNic(qmp: QmpClient, names: NicNames, timeoutMs: number): Promise<void> {
  await waitDeviceDeleted(qmp, names.device, timeoutMs, "network interface");
  try {
    await qmp.execute("netdev_del", { id: names.netdev });
  } catch (err) {
    // Already gone (an earlier unplug completed after its caller gave up).
    if (!(err instanceof QmpError && /not found/i.test(err.message))) throw err instanceof QmpError ? new QuantixError("failed_precondition", `QEMU refused netdev_del: ${err.message}`) : err;
  }
}
