import { PciDeviceKind, type PciSlot, type VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import type { FieldViolation, PciPlacement } from "@quantix/core";

/**
 * The PCI layout a migration's source reports (PlanMigration's device_layout) and its
 * target starts with (PrepareMigration's device_layout): checked here against the
 * target's config, converted to the backends' PciPlacement.
 */

const KINDS = new Map<PciDeviceKind, PciPlacement["kind"]>([
  [PciDeviceKind.DISK, "disk"],
  [PciDeviceKind.NIC, "nic"],
  [PciDeviceKind.CLOUD_INIT_SEED, "cloud-init-seed"],
]);
const KIND_OF = new Map([...KINDS].map(([k, v]) => [v, k]));

/** The wire form of a placement. */
export function toPciSlot(p: PciPlacement): { kind: PciDeviceKind; deviceId: string; slot: number } {
  return { kind: KIND_OF.get(p.kind)!, deviceId: p.id, slot: p.slot };
}

/**
 * Checks `layout` against `config`: each entry names a device of the config (a disk or
 * NIC by id, the seed only with cloud_init) once, on its own slot from 2 to 31; a
 * non-empty layout places every device. Answers the violations and, without any, the
 * placements (empty for an empty layout: the backend's default).
 */
export function checkDeviceLayout(config: VmConfig, layout: readonly PciSlot[]): { violations: FieldViolation[]; placements: PciPlacement[] } {
  const violations: FieldViolation[] = [];
  if (layout.length === 0) return { violations, placements: [] };
  const field = (i: number, f: string) => `device_layout[${i}].${f}`;
  if (layout.length > 64) return { violations: [{ field: "device_layout", reason: "OUT_OF_RANGE", description: "must have at most 64 entries" }], placements: [] };
  const devices = new Set([...config.storage.map((d) => `disk\u0000${d.id}`), ...config.network.map((n) => `nic\u0000${n.id}`), ...(config.cloudInit ? ["cloud-init-seed\u0000"] : [])]);
  const slots = new Map<number, number>();
  const seen = new Map<string, number>();
  const placements: PciPlacement[] = [];
  layout.forEach((p, i) => {
    const kind = KINDS.get(p.kind);
    if (!kind) return void violations.push({ field: field(i, "kind"), reason: "INVALID_VALUE", description: "must be DISK, NIC or CLOUD_INIT_SEED" });
    if (!Number.isInteger(p.slot) || p.slot < 2 || p.slot > 31) violations.push({ field: field(i, "slot"), reason: "OUT_OF_RANGE", description: "must be 2 to 31" });
    else if (slots.has(p.slot)) violations.push({ field: field(i, "slot"), reason: "DUPLICATE", description: `slot ${p.slot} is also device_layout[${slots.get(p.slot)}]'s` });
    else slots.set(p.slot, i);
    const key = `${kind}\u0000${kind === "cloud-init-seed" ? "" : p.deviceId}`;
    if (kind === "cloud-init-seed" && p.deviceId !== "") violations.push({ field: field(i, "device_id"), reason: "NOT_ALLOWED", description: "must be empty for the cloud-init seed" });
    else if (!devices.has(key)) violations.push({ field: field(i, "device_id"), reason: "NOT_FOUND", description: kind === "cloud-init-seed" ? "the config has no cloud_init" : `the config has no ${kind === "disk" ? "disk" : "network interface"} with this id` });
    else if (seen.has(key)) violations.push({ field: field(i, "device_id"), reason: "DUPLICATE", description: `also device_layout[${seen.get(key)}]` });
    else seen.set(key, i);
    placements.push({ kind, id: kind === "cloud-init-seed" ? "" : p.deviceId, slot: p.slot });
  });
  const missing = [...devices].filter((d) => !seen.has(d)).map((d) => d.replace("\u0000", " ").trim());
  if (violations.length === 0 && missing.length > 0) violations.push({ field: "device_layout", reason: "INCOMPLETE", description: `must place every PCI device of the config; missing: ${missing.join(", ")}` });
  return { violations, placements: violations.length > 0 ? [] : placements };
}
