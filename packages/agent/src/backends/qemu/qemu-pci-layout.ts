import type { VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError, type PciPlacement } from "@quantix/core";

/**
 * Where a VM's PCI devices sit on bus 0 (pci.0) of QEMU's "pc" machine. Every disk, the
 * cloud-init seed and every NIC gets an explicit `addr` on the command line, recorded in
 * the VM's record; a hot-plugged disk takes the lowest free slot and is recorded too. So
 * QEMU is always started with a layout the agent knows, and a migration's target starts
 * with the source's (the migration stream names devices by their address), whatever was
 * plugged in or out meanwhile. By default (nothing recorded) the devices sit in the order
 * QEMU gave them before addresses were explicit: disks, the seed, NICs, from slot 2 on.
 */

/** Slots 0 and 1 hold the host bridge and the PIIX3 (ISA, IDE, USB, ACPI). */
export const FIRST_PCI_SLOT = 2;
export const LAST_PCI_SLOT = 31;

/** A PCI device of the config, without its slot. */
export type PciDevice = Omit<PciPlacement, "slot">;

/** The PCI devices a VM with `config` has, in command-line order: its disks, the cloud-init seed (`withSeed`), its NICs. */
export function pciDevices(config: VmConfig, withSeed: boolean): PciDevice[] {
  return [
    ...config.storage.map((d) => ({ kind: "disk" as const, id: d.id })),
    ...(withSeed ? [{ kind: "cloud-init-seed" as const, id: "" }] : []),
    ...config.network.map((n) => ({ kind: "nic" as const, id: n.id })),
  ];
}

const key = (d: PciDevice) => `${d.kind}\u0000${d.id}`;

/**
 * A slot for each of `devices` (in their order): the slot `keep` gives it (a layout
 * recorded earlier or a migration source's), else the lowest slot still free. A `keep`
 * entry for a device not among `devices`, or whose slot another kept device took, is
 * ignored. RESOURCE_EXHAUSTED when the bus is full.
 */
export function assignPciSlots(devices: readonly PciDevice[], keep: readonly PciPlacement[] = []): PciPlacement[] {
  const wanted = new Map(devices.map((d) => [key(d), d]));
  const used = new Set<number>();
  const placed = new Map<string, number>();
  for (const k of keep) {
    if (!wanted.has(key(k)) || placed.has(key(k)) || used.has(k.slot) || k.slot < FIRST_PCI_SLOT || k.slot > LAST_PCI_SLOT) continue;
    placed.set(key(k), k.slot);
    used.add(k.slot);
  }
  let next = FIRST_PCI_SLOT;
  return devices.map((d) => {
    let slot = placed.get(key(d));
    if (slot === undefined) {
      while (used.has(next)) next++;
      if (next > LAST_PCI_SLOT) throw new QuantixError("resource_exhausted", `the VM's PCI bus has no free slot for its ${d.kind} ${d.id}`.trimEnd());
      slot = next;
      used.add(slot);
    }
    return { ...d, slot };
  });
}

/** The slot of `device` in `layout` (as buildQemuArgs' `addr`, "0x<hex>"). */
export function pciAddr(layout: readonly PciPlacement[], device: PciDevice): { bus: string; addr: string } {
  const p = layout.find((x) => x.kind === device.kind && x.id === device.id);
  if (!p) throw new QuantixError("internal", `no PCI slot for the VM's ${device.kind} ${device.id}`);
  return { bus: "pci.0", addr: `0x${p.slot.toString(16)}` };
}
