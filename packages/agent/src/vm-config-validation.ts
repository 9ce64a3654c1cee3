import {
  ConsoleOutput,
  ConsoleType,
  NetworkInterfaceType,
  StorageInterfaceType,
  type VmConfig,
} from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { CONTROL_CHARS, validateCloudInit, Violations, type FieldViolation } from "@quantix/core";

import { VM_ID_PATTERN } from "./vm-id.js";

export const DEVICE_ID = /^[a-zA-Z][a-zA-Z0-9_-]{0,62}$/;
const MAC = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;
/** Linux interface names: no '/', whitespace or ':'; "." and ".." are not names. */
const TAP = /^(?!\.{1,2}$)[a-zA-Z0-9_.-]{1,15}$/;
const PORT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const MIB = 1024n * 1024n;
const MAX_PATH = 4096;

/** Checks a vm_id against {@link VM_ID_PATTERN}; returns the violations. */
export function validateVmId(field: string, vmId: string): FieldViolation[] {
  const v = new Violations();
  if (v.required(field, vmId !== "")) v.pattern(field, vmId, VM_ID_PATTERN, "must be 1-63 letters, digits, '_' or '-', starting with a letter or digit");
  return v.list;
}

/** Every rule of vm.proto's VmConfig comments, all violations at once, under `prefix`. */
export function validateVmConfig(config: VmConfig | undefined, prefix = "config"): FieldViolation[] {
  const v = new Violations();
  if (!v.required(prefix, config !== undefined) || !config) return v.list;
  const cpu = config.cpu;
  if (v.required(`${prefix}.cpu`, cpu !== undefined) && cpu) {
    v.range(`${prefix}.cpu.vcpu_count`, cpu.vcpuCount, 1, 256);
    if (cpu.maxVcpuCount !== 0) v.range(`${prefix}.cpu.max_vcpu_count`, cpu.maxVcpuCount, Math.max(1, cpu.vcpuCount), 256);
    const t = cpu.topology;
    if (t) {
      v.range(`${prefix}.cpu.topology.sockets`, t.sockets, 1, 16);
      v.range(`${prefix}.cpu.topology.cores_per_socket`, t.coresPerSocket, 1, 256);
      v.range(`${prefix}.cpu.topology.threads_per_core`, t.threadsPerCore, 1, 8);
      const want = cpu.maxVcpuCount || cpu.vcpuCount;
      const got = t.sockets * t.coresPerSocket * t.threadsPerCore;
      if (got !== want) v.add(`${prefix}.cpu.topology`, "MISMATCH", `sockets × cores_per_socket × threads_per_core is ${got}; it must equal ${cpu.maxVcpuCount ? "max_vcpu_count" : "vcpu_count"} (${want})`);
    }
  }
  const mem = config.memory;
  if (v.required(`${prefix}.memory`, mem !== undefined) && mem) {
    if (mem.sizeBytes < 128n * MIB || mem.sizeBytes % MIB !== 0n) v.add(`${prefix}.memory.size_bytes`, "OUT_OF_RANGE", `must be a multiple of 1 MiB (1048576) and at least 128 MiB, got ${mem.sizeBytes}`);
    if (mem.hotplugEnabled && mem.maxSizeBytes !== 0n && (mem.maxSizeBytes < mem.sizeBytes || mem.maxSizeBytes % MIB !== 0n)) {
      v.add(`${prefix}.memory.max_size_bytes`, "OUT_OF_RANGE", `must be 0 or a multiple of 1 MiB at least size_bytes, got ${mem.maxSizeBytes}`);
    }
  }
  const boot = config.boot;
  if (boot) {
    if (boot.kernelPath !== "") path(v, `${prefix}.boot.kernel_path`, boot.kernelPath);
    if (boot.initrdPath !== "") path(v, `${prefix}.boot.initrd_path`, boot.initrdPath);
    if (boot.kernelArgs.length > MAX_PATH) v.add(`${prefix}.boot.kernel_args`, "INVALID_LENGTH", `must be at most ${MAX_PATH} characters, got ${boot.kernelArgs.length}`);
    else if (CONTROL_CHARS.test(boot.kernelArgs)) v.add(`${prefix}.boot.kernel_args`, "INVALID_FORMAT", "must not contain control characters or newlines");
  }
  if (config.storage.length > 32) v.add(`${prefix}.storage`, "TOO_MANY", `at most 32 disks, got ${config.storage.length}`);
  const diskIds = new Set<string>();
  let roots = 0;
  config.storage.forEach((d, i) => {
    const f = `${prefix}.storage[${i}]`;
    deviceId(v, `${f}.id`, d.id, diskIds);
    if (v.required(`${f}.path`, d.path !== "")) path(v, `${f}.path`, d.path);
    if (d.isRootDevice) roots++;
    v.enumValue(`${f}.interface_type`, d.interfaceType, Object.values(StorageInterfaceType).filter((x) => typeof x === "number"));
  });
  if (roots > 1) v.add(`${prefix}.storage`, "TOO_MANY", `at most one disk may set is_root_device, got ${roots}`);
  if (config.network.length > 16) v.add(`${prefix}.network`, "TOO_MANY", `at most 16 network interfaces, got ${config.network.length}`);
  const nicIds = new Set<string>();
  config.network.forEach((n, i) => {
    const f = `${prefix}.network[${i}]`;
    deviceId(v, `${f}.id`, n.id, nicIds);
    if (v.required(`${f}.mac_address`, n.macAddress !== "") && v.pattern(`${f}.mac_address`, n.macAddress, MAC, "must be six colon-separated hex bytes, e.g. 52:54:00:12:34:56")) {
      if ((parseInt(n.macAddress.slice(0, 2), 16) & 1) === 1) v.add(`${f}.mac_address`, "INVALID_FORMAT", "must be a unicast address (the first byte's lowest bit clear)");
    }
    if (n.portId !== "") v.pattern(`${f}.port_id`, n.portId, PORT_ID, "must be a lowercase canonical UUID");
    if (n.tapDevice !== "" || v.required(`${f}.tap_device`, n.portId !== "", "is required unless port_id is set")) {
      if (n.tapDevice !== "") v.pattern(`${f}.tap_device`, n.tapDevice, TAP, "must be an interface name: 1-15 letters, digits, '_', '.' or '-'");
    }
    v.enumValue(`${f}.interface_type`, n.interfaceType, Object.values(NetworkInterfaceType).filter((x) => typeof x === "number"));
  });
  if (config.console) {
    v.enumValue(`${prefix}.console.output`, config.console.output, Object.values(ConsoleOutput).filter((x) => typeof x === "number"));
    v.enumValue(`${prefix}.console.console_type`, config.console.consoleType, Object.values(ConsoleType).filter((x) => typeof x === "number"));
  }
  const keys = Object.keys(config.metadata);
  if (keys.length > 64) v.add(`${prefix}.metadata`, "TOO_MANY", `at most 64 entries, got ${keys.length}`);
  for (const key of keys) {
    const f = `${prefix}.metadata[${JSON.stringify(key)}]`;
    if (key.length < 1 || key.length > 63 || CONTROL_CHARS.test(key)) v.add(f, "INVALID_FORMAT", "keys must be 1-63 characters without control characters");
    if ((config.metadata[key] ?? "").length > 1024) v.add(f, "INVALID_LENGTH", "values must be at most 1024 characters");
  }
  if (config.cloudInit) validateCloudInit(v, `${prefix}.cloud_init`, config.cloudInit);
  return v.list;
}

/** A capability a config needs, and the field that needs it. */
export interface CapabilityNeed {
  readonly capability: string;
  readonly field: string;
}

/** The backend capabilities a (valid) config needs, per vm.proto's comments. */
export function requiredCapabilities(config: VmConfig, prefix = "config"): CapabilityNeed[] {
  const out: CapabilityNeed[] = [];
  const need = (capability: string, field: string) => out.push({ capability, field });
  if (config.cpu && config.cpu.maxVcpuCount > config.cpu.vcpuCount) need("cpu-hotplug", `${prefix}.cpu.max_vcpu_count`);
  if (config.memory?.hotplugEnabled) need("memory-hotplug", `${prefix}.memory.hotplug_enabled`);
  if ((config.boot?.kernelPath ?? "") === "") need("firmware-boot", `${prefix}.boot.kernel_path`);
  const disk: Partial<Record<StorageInterfaceType, string>> = { [StorageInterfaceType.VIRTIO_SCSI]: "virtio-scsi", [StorageInterfaceType.NVME]: "nvme", [StorageInterfaceType.SATA]: "sata" };
  config.storage.forEach((d, i) => {
    const c = disk[d.interfaceType];
    if (c) need(c, `${prefix}.storage[${i}].interface_type`);
  });
  const nic: Partial<Record<NetworkInterfaceType, string>> = { [NetworkInterfaceType.E1000]: "e1000", [NetworkInterfaceType.RTL8139]: "rtl8139" };
  config.network.forEach((n, i) => {
    const c = nic[n.interfaceType];
    if (c) need(c, `${prefix}.network[${i}].interface_type`);
  });
  if (config.console?.consoleType === ConsoleType.VIRTIO) need("virtio-console", `${prefix}.console.console_type`);
  if (config.cloudInit) need("cloud-init", `${prefix}.cloud_init`);
  return out;
}

/** Whether the console is buffered for GetConsoleOutput/StreamConsole (unset means enabled, BUFFER). */
export function consoleBuffered(config: VmConfig): boolean {
  if (!config.console) return true;
  return config.console.enabled && config.console.output !== ConsoleOutput.NULL;
}

function path(v: Violations, field: string, value: string): void {
  if (value.length > MAX_PATH) v.add(field, "INVALID_LENGTH", `must be at most ${MAX_PATH} characters, got ${value.length}`);
  else if (!value.startsWith("/")) v.add(field, "INVALID_FORMAT", "must be an absolute path");
  else if (CONTROL_CHARS.test(value)) v.add(field, "INVALID_FORMAT", "must not contain control characters or newlines");
}

function deviceId(v: Violations, field: string, id: string, seen: Set<string>): void {
  if (!v.required(field, id !== "")) return;
  if (v.pattern(field, id, DEVICE_ID, "must be 1-63 letters, digits, '_' or '-', starting with a letter") && seen.has(id)) v.add(field, "DUPLICATE", `'${id}' is used by another device of this VM`);
  seen.add(id);
}
