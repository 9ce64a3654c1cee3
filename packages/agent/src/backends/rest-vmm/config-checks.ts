import { closeSync, openSync, readSync } from "node:fs";
import { ConsoleOutput, ConsoleType, NetworkInterfaceType, StorageInterfaceType, type VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";
import type { BackendCapability } from "../../backend.js";

/** FAILED_PRECONDITION naming the capability (or feature) a config needs and the backend lacks. */
export function lacks(type: string, what: string, field: string): QuantixError {
  return new QuantixError("failed_precondition", `the ${type} backend lacks the capability "${what}" needed by ${field}`);
}

/**
 * Checks the device models and features of `config` against `capabilities`, the rules
 * both REST VMM backends share; throws {@link lacks} for the first one missing.
 */
export function checkDevices(type: string, capabilities: ReadonlySet<BackendCapability>, config: VmConfig): void {
  const need = (cap: BackendCapability, field: string): void => {
    if (!capabilities.has(cap)) throw lacks(type, cap, field);
  };
  const cpu = config.cpu;
  if (cpu && cpu.maxVcpuCount > cpu.vcpuCount) need("cpu-hotplug", "cpu.max_vcpu_count");
  if (config.memory?.hotplugEnabled) need("memory-hotplug", "memory.hotplug_enabled");
  if (!config.boot?.kernelPath) need("firmware-boot", "an empty boot.kernel_path");
  config.storage.forEach((disk, i) => {
    const field = `storage[${i}].interface_type`;
    switch (disk.interfaceType) {
      case StorageInterfaceType.UNSPECIFIED:
      case StorageInterfaceType.VIRTIO_BLK:
        break;
      case StorageInterfaceType.VIRTIO_SCSI:
        need("virtio-scsi", field);
        break;
      case StorageInterfaceType.NVME:
        need("nvme", field);
        break;
      case StorageInterfaceType.SATA:
        need("sata", field);
        break;
      default: {
        const _never: never = disk.interfaceType;
        throw new QuantixError("invalid_argument", `unknown storage interface ${String(_never)}`);
      }
    }
    if (isQcow2(disk.path)) need("qcow2", `storage[${i}].path (a qcow2 image)`);
  });
  config.network.forEach((nic, i) => {
    const field = `network[${i}].interface_type`;
    switch (nic.interfaceType) {
      case NetworkInterfaceType.UNSPECIFIED:
      case NetworkInterfaceType.VIRTIO_NET:
        break;
      case NetworkInterfaceType.E1000:
        need("e1000", field);
        break;
      case NetworkInterfaceType.RTL8139:
        need("rtl8139", field);
        break;
      default: {
        const _never: never = nic.interfaceType;
        throw new QuantixError("invalid_argument", `unknown network interface ${String(_never)}`);
      }
    }
  });
  // Neither backend wires a virtio console yet; "virtio-console" is vmm.v1's name for it.
  if (config.console?.consoleType === ConsoleType.VIRTIO) throw lacks(type, "virtio-console", "console.console_type");
}

/** Where serial output goes: "buffer" (the agent's ring), "null" (discarded) or "off" (no device). */
export function consoleMode(config: VmConfig): "buffer" | "null" | "off" {
  const c = config.console;
  if (!c) return "buffer";
  if (!c.enabled) return "off";
  return c.output === ConsoleOutput.NULL ? "null" : "buffer";
}

/** Whether the image at `path` is qcow2, by its magic bytes (or its name when it cannot be read). */
export function isQcow2(path: string): boolean {
  try {
    const fd = openSync(path, "r");
    try {
      return qcow2At(fd);
    } finally {
      closeSync(fd);
    }
  } catch {
    return path.endsWith(".qcow2");
  }
}

/** Whether the image open on `fd` is qcow2, by its magic bytes. */
export function qcow2At(fd: number): boolean {
  const head = Buffer.alloc(4);
  return readSync(fd, head, 0, 4, 0) === 4 && head.equals(Buffer.from([0x51, 0x46, 0x49, 0xfb]));
}
