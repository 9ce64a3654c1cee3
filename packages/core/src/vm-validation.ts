import type { DescEnum } from "@bufbuild/protobuf";
import type { CreateVMRequest } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import {
  BootDeviceSchema,
  DiskBusSchema,
  DiskCacheSchema,
  FirmwareSchema,
  NicModelSchema,
  PowerStateSchema,
  TaintEffectSchema,
  TolerationOperatorSchema,
  type VmSpec,
} from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { CLOUD_INIT_MAX_BYTES, validateCloudInit } from "./cloud-init.js";
import type { FieldViolation } from "./errors.js";
import { CONTROL_CHARS, NAME_PATTERN, validateLabels, validateRef, Violations } from "./violations.js";
import { PROJECT_ID_FORMAT } from "./resource/id-format.js";

/** Limits of a VM, from the seed's validation table and what hypervisors accept. */
export const VM_LIMITS = {
  nameMax: 255,
  descriptionMax: 1024,
  coresMin: 1,
  coresMax: 256,
  socketsMax: 16,
  threadsMax: 8,
  vcpusMax: 1024,
  memoryMinMib: 256,
  memoryMaxMib: 1_048_576,
  diskMinGib: 1,
  diskMaxGib: 65_536,
  disksMax: 32,
  nicsMax: 16,
  securityGroupsMax: 16,
  pathMax: 4096,
  cmdlineMax: 4096,
  cloudInitMaxBytes: CLOUD_INIT_MAX_BYTES,
} as const;

/** The default project of the seeds' demo data, used when a request names none. */
export const DEFAULT_PROJECT_ID = "00000000-0000-0000-0000-000000000001";

const MAC_PATTERN = /^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$/;
const CPU_MODEL_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,63}$/;
const CAPABILITY_PATTERN = /^[a-z][a-z0-9-]{0,62}$/;

const numbers = (e: DescEnum): number[] => e.values.map((x) => x.number);

/** Validates a CreateVMRequest; returns every violation. */
export function validateCreateVm(req: CreateVMRequest): FieldViolation[] {
  const v = new Violations();
  if (v.required("name", req.name !== "")) {
    if (v.length("name", req.name, 1, VM_LIMITS.nameMax)) {
      v.pattern("name", req.name, NAME_PATTERN, "must start with a letter and contain only letters, digits, '-' and '_'");
    }
  }
  if (req.projectId !== "") {
    v.pattern("project_id", req.projectId, PROJECT_ID_FORMAT.pattern, PROJECT_ID_FORMAT.description);
  }
  if (req.description.length > VM_LIMITS.descriptionMax) {
    v.add("description", "INVALID_LENGTH", `must be at most ${VM_LIMITS.descriptionMax} characters long`);
  }
  validateLabels(v, "labels", req.labels);
  validateRef(v, "node_id", req.nodeId);
  if (v.required("spec", req.spec !== undefined)) validateSpecInto(v, "spec", req.spec as VmSpec);
  return v.list;
}

/** Validates a whole VmSpec under a field path prefix (e.g. "spec"). */
export function validateVmSpec(spec: VmSpec, prefix = "spec"): FieldViolation[] {
  const v = new Violations();
  validateSpecInto(v, prefix, spec);
  return v.list;
}

function validateSpecInto(v: Violations, p: string, spec: VmSpec): void {
  if (v.required(`${p}.cpu`, spec.cpu !== undefined) && spec.cpu) {
    const { cores, sockets, threadsPerCore, model } = spec.cpu;
    v.range(`${p}.cpu.cores`, cores, VM_LIMITS.coresMin, VM_LIMITS.coresMax);
    if (sockets !== 0) v.range(`${p}.cpu.sockets`, sockets, 1, VM_LIMITS.socketsMax);
    if (threadsPerCore !== 0) v.range(`${p}.cpu.threads_per_core`, threadsPerCore, 1, VM_LIMITS.threadsMax);
    const total = cores * Math.max(1, sockets) * Math.max(1, threadsPerCore);
    if (total > VM_LIMITS.vcpusMax && cores <= VM_LIMITS.coresMax) {
      v.add(`${p}.cpu`, "OUT_OF_RANGE", `sockets × cores × threads_per_core must be at most ${VM_LIMITS.vcpusMax}, got ${total}`);
    }
    if (model !== "") v.pattern(`${p}.cpu.model`, model, CPU_MODEL_PATTERN, "must be a CPU model name: letters, digits, '.', '_' or '-'");
  }
  if (v.required(`${p}.memory`, spec.memory !== undefined) && spec.memory) {
    const { sizeMib, maxSizeMib } = spec.memory;
    v.range(`${p}.memory.size_mib`, sizeMib, VM_LIMITS.memoryMinMib, VM_LIMITS.memoryMaxMib, "MiB");
    if (maxSizeMib !== 0n && (maxSizeMib < sizeMib || maxSizeMib > VM_LIMITS.memoryMaxMib)) {
      v.add(`${p}.memory.max_size_mib`, "OUT_OF_RANGE", `must be 0 or between size_mib and ${VM_LIMITS.memoryMaxMib} MiB`);
    }
  }
  validateDisks(v, p, spec);
  validateNics(v, p, spec);
  validateBoot(v, p, spec);
  const ci = spec.provisioning?.cloudInit;
  if (ci) validateCloudInit(v, `${p}.provisioning.cloud_init`, ci);
  validatePlacement(v, p, spec);
  if (spec.haPolicy) {
    v.range(`${p}.ha_policy.priority`, spec.haPolicy.priority, 0, 1000);
    v.range(`${p}.ha_policy.max_restarts`, spec.haPolicy.maxRestarts, 0, 100);
    v.range(`${p}.ha_policy.restart_delay_sec`, spec.haPolicy.restartDelaySec, 0, 3600, "s");
  }
  v.enumValue(`${p}.desired_power_state`, spec.desiredPowerState, numbers(PowerStateSchema));
}

function validateDisks(v: Violations, p: string, spec: VmSpec): void {
  if (spec.disks.length > VM_LIMITS.disksMax) v.add(`${p}.disks`, "TOO_MANY", `at most ${VM_LIMITS.disksMax} disks`);
  const ids = new Set<string>();
  const bootIndexes = new Set<number>();
  spec.disks.forEach((d, i) => {
    const f = `${p}.disks[${i}]`;
    checkDeviceId(v, `${f}.id`, d.id, ids);
    // A new disk needs its size, but one from an image may take the image's (size_gib 0).
    if ((d.volumeId === "" && d.hostPath === "" && d.imageId === "") || d.sizeGib !== 0n) {
      v.range(`${f}.size_gib`, d.sizeGib, VM_LIMITS.diskMinGib, VM_LIMITS.diskMaxGib, "GiB");
    }
    if (d.hostPath !== "") {
      if (!d.hostPath.startsWith("/") || d.hostPath.length > 4096 || /[\u0000-\u001f\u007f]/.test(d.hostPath)) {
        v.add(`${f}.host_path`, "INVALID_FORMAT", "must be an absolute path of at most 4096 characters, without control characters");
      }
      if (d.volumeId !== "" || d.imageId !== "") v.add(`${f}.host_path`, "CONFLICT", "excludes volume_id and image_id: a disk comes from one source");
    }
    validateRef(v, `${f}.volume_id`, d.volumeId);
    validateRef(v, `${f}.image_id`, d.imageId);
    v.enumValue(`${f}.bus`, d.bus, numbers(DiskBusSchema));
    v.enumValue(`${f}.cache`, d.cache, numbers(DiskCacheSchema));
    if (d.bootIndex !== 0) {
      v.range(`${f}.boot_index`, d.bootIndex, 1, 1000);
      if (bootIndexes.has(d.bootIndex)) v.add(`${f}.boot_index`, "DUPLICATE", `boot_index ${d.bootIndex} is used by another disk`);
      bootIndexes.add(d.bootIndex);
    }
  });
}

function validateNics(v: Violations, p: string, spec: VmSpec): void {
  if (spec.nics.length > VM_LIMITS.nicsMax) v.add(`${p}.nics`, "TOO_MANY", `at most ${VM_LIMITS.nicsMax} NICs`);
  const ids = new Set<string>();
  const macs = new Set<string>();
  spec.nics.forEach((n, i) => {
    const f = `${p}.nics[${i}]`;
    checkDeviceId(v, `${f}.id`, n.id, ids);
    validateRef(v, `${f}.network_id`, n.networkId, n.portId === "");
    validateRef(v, `${f}.port_id`, n.portId);
    if (n.macAddress !== "") {
      if (v.pattern(`${f}.mac_address`, n.macAddress, MAC_PATTERN, "must be six colon-separated hex bytes, e.g. 52:54:00:12:34:56")) {
        if ((parseInt(n.macAddress.slice(0, 2), 16) & 1) === 1) {
          v.add(`${f}.mac_address`, "INVALID_FORMAT", "must be a unicast address (the first byte must be even)");
        }
        const mac = n.macAddress.toLowerCase();
        if (macs.has(mac)) v.add(`${f}.mac_address`, "DUPLICATE", `MAC ${mac} is used by another NIC`);
        macs.add(mac);
      }
    }
    v.enumValue(`${f}.model`, n.model, numbers(NicModelSchema));
    if (n.securityGroups.length > VM_LIMITS.securityGroupsMax) {
      v.add(`${f}.security_groups`, "TOO_MANY", `at most ${VM_LIMITS.securityGroupsMax} security groups`);
    }
    n.securityGroups.forEach((g, j) => validateRef(v, `${f}.security_groups[${j}]`, g, true));
  });
}

function validateBoot(v: Violations, p: string, spec: VmSpec): void {
  const boot = spec.boot;
  if (!boot) return;
  const seen = new Set<number>();
  boot.bootOrder.forEach((d, i) => {
    v.enumValue(`${p}.boot.boot_order[${i}]`, d, numbers(BootDeviceSchema), false);
    if (seen.has(d)) v.add(`${p}.boot.boot_order[${i}]`, "DUPLICATE", "each boot device may appear once");
    seen.add(d);
  });
  v.enumValue(`${p}.boot.firmware`, boot.firmware, numbers(FirmwareSchema));
  const db = boot.directBoot;
  if (db) {
    const f = `${p}.boot.direct_boot`;
    if (v.required(`${f}.kernel_path`, db.kernelPath !== "" || (db.initrdPath === "" && db.cmdline === ""), "is required when initrd_path or cmdline is set")) {
      if (db.kernelPath !== "") checkHostPath(v, `${f}.kernel_path`, db.kernelPath);
    }
    if (db.initrdPath !== "") checkHostPath(v, `${f}.initrd_path`, db.initrdPath);
    if (db.cmdline.length > VM_LIMITS.cmdlineMax) v.add(`${f}.cmdline`, "INVALID_LENGTH", `must be at most ${VM_LIMITS.cmdlineMax} characters long`);
    if (CONTROL_CHARS.test(db.cmdline)) v.add(`${f}.cmdline`, "INVALID_FORMAT", "must not contain control characters or newlines");
  }
}

function validatePlacement(v: Violations, p: string, spec: VmSpec): void {
  const pl = spec.placement;
  if (!pl) return;
  const f = `${p}.placement`;
  validateLabels(v, `${f}.node_selector`, pl.nodeSelector);
  pl.requiredNodeIds.forEach((id, i) => validateRef(v, `${f}.required_node_ids[${i}]`, id, true));
  pl.excludedNodeIds.forEach((id, i) => validateRef(v, `${f}.excluded_node_ids[${i}]`, id, true));
  pl.preferredNodeIds.forEach((id, i) => validateRef(v, `${f}.preferred_node_ids[${i}]`, id, true));
  pl.affinity.forEach((a, i) => {
    if (!a.required) v.range(`${f}.affinity[${i}].weight`, a.weight, 1, 100);
    if (a.selector) validateLabels(v, `${f}.affinity[${i}].selector.match_labels`, a.selector.matchLabels);
    else v.add(`${f}.affinity[${i}].selector`, "REQUIRED", "is required");
  });
  pl.tolerations.forEach((t, i) => {
    v.enumValue(`${f}.tolerations[${i}].operator`, t.operator, numbers(TolerationOperatorSchema));
    v.enumValue(`${f}.tolerations[${i}].effect`, t.effect, numbers(TaintEffectSchema));
  });
  pl.requiredCapabilities.forEach((c, i) => {
    v.pattern(`${f}.required_capabilities[${i}]`, c, CAPABILITY_PATTERN, "must be a capability name such as 'live-migration'");
  });
}

function checkDeviceId(v: Violations, field: string, id: string, seen: Set<string>): void {
  if (!v.required(field, id !== "")) return;
  if (v.length(field, id, 1, 63)) {
    v.pattern(field, id, NAME_PATTERN, "must start with a letter and contain only letters, digits, '-' and '_'");
  }
  if (seen.has(id)) v.add(field, "DUPLICATE", `id '${id}' is used twice`);
  seen.add(id);
}

/** A path on the node: absolute, normalized, printable. It reaches QEMU only as a whole argument. */
function checkHostPath(v: Violations, field: string, path: string): void {
  if (path.length > VM_LIMITS.pathMax) {
    v.add(field, "INVALID_LENGTH", `must be at most ${VM_LIMITS.pathMax} characters long`);
  } else if (!path.startsWith("/")) {
    v.add(field, "INVALID_FORMAT", "must be an absolute path");
  } else if (CONTROL_CHARS.test(path) || path.split("/").includes("..")) {
    v.add(field, "INVALID_FORMAT", "must not contain control characters or '..' segments");
  }
}
