import type { VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { consoleMode, isQcow2 } from "../rest-vmm/config-checks.js";
import type { VmPaths } from "../rest-vmm/vm-dir.js";

/** Maps a vmm.v1 VmConfig to the body of Cloud Hypervisor's `PUT /api/v1/vm.create`. */
export function cloudHypervisorVmConfig(config: VmConfig, paths: VmPaths): Record<string, unknown> {
  const cpu = config.cpu;
  const vcpus = cpu?.vcpuCount ?? 1;
  const topology = cpu?.topology;
  const memory = config.memory;
  const size = Number(memory?.sizeBytes ?? 0n);
  const maxSize = Number(memory?.maxSizeBytes ?? 0n);
  const boot = config.boot;
  // Cloud Hypervisor has no boot order: the root disk goes first, where firmware and the kernel look.
  const disks = [...config.storage].sort((a, b) => Number(b.isRootDevice) - Number(a.isRootDevice));
  const mode = consoleMode(config);
  return {
    cpus: {
      boot_vcpus: vcpus,
      max_vcpus: Math.max(vcpus, cpu?.maxVcpuCount ?? 0),
      ...(topology
        ? { topology: { threads_per_core: topology.threadsPerCore, cores_per_die: topology.coresPerSocket, dies_per_package: 1, packages: topology.sockets } }
        : {}),
    },
    memory: {
      size,
      ...(memory?.hotplugEnabled && maxSize > size ? { hotplug_size: maxSize - size } : {}),
    },
    payload: {
      kernel: boot?.kernelPath ?? "",
      ...(boot?.kernelArgs ? { cmdline: boot.kernelArgs } : {}),
      ...(boot?.initrdPath ? { initramfs: boot.initrdPath } : {}),
    },
    // The image type is given, never probed by the VMM: a guest could otherwise write a qcow2 header into a raw disk.
    disks: disks.map((d) => ({ id: d.id, path: d.path, readonly: d.readOnly, image_type: isQcow2(d.path) ? "Qcow2" : "Raw" })),
    net: config.network.map((n) => ({ id: n.id, tap: n.tapDevice, mac: n.macAddress })),
    serial: mode === "buffer" ? { mode: "File", file: paths.consoleFile } : { mode: mode === "null" ? "Null" : "Off" },
    console: { mode: "Off" },
  };
}
