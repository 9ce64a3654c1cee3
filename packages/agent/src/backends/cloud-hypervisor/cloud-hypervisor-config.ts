import type { VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { consoleMode } from "../rest-vmm/config-checks.js";
import type { VmPaths } from "../rest-vmm/vm-dir.js";
import type { VmmFiles } from "../rest-vmm/vmm-driver.js";

/**
 * Maps a vmm.v1 VmConfig to the body of Cloud Hypervisor's `PUT /api/v1/vm.create`; the
 * kernel, initrd and disks are named as `files` says (the descriptors the VMM inherited).
 */
export function cloudHypervisorVmConfig(config: VmConfig, paths: VmPaths, files: VmmFiles): Record<string, unknown> {
  const cpu = config.cpu;
  const vcpus = cpu?.vcpuCount ?? 1;
  const topology = cpu?.topology;
  const memory = config.memory;
  const size = Number(memory?.sizeBytes ?? 0n);
  const maxSize = Number(memory?.maxSizeBytes ?? 0n);
  const boot = config.boot;
  // Cloud Hypervisor has no boot order: the root disk goes first, where firmware and the kernel look.
  const disks = config.storage.map((d, i) => ({ d, file: files.disks[i]! })).sort((a, b) => Number(b.d.isRootDevice) - Number(a.d.isRootDevice));
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
      kernel: files.kernel ?? "",
      ...(boot?.kernelArgs ? { cmdline: boot.kernelArgs } : {}),
      ...(files.initrd ? { initramfs: files.initrd } : {}),
    },
    // The image type is given, never probed by the VMM: a guest could otherwise write a qcow2 header into a raw disk.
    disks: disks.map(({ d, file }) => ({ id: d.id, path: file.path, readonly: d.readOnly, image_type: file.qcow2 ? "Qcow2" : "Raw" })),
    net: config.network.map((n) => ({ id: n.id, tap: n.tapDevice, mac: n.macAddress })),
    serial: mode === "buffer" ? { mode: "File", file: paths.consoleFile } : { mode: mode === "null" ? "Null" : "Off" },
    console: { mode: "Off" },
  };
}
