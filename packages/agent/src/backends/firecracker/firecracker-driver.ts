import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";
import type { BackendCapability } from "../../backend.js";
import { checkDevices, consoleMode, lacks } from "../rest-vmm/config-checks.js";
import type { VmPaths } from "../rest-vmm/vm-dir.js";
import type { ObservedGuest, VmmDriver, VmmFiles } from "../rest-vmm/vmm-driver.js";

/**
 * What Firecracker does, honestly: no in-process reboot (a guest reboot ends the
 * process), virtio-blk raw disks and virtio-net only, direct kernel boot only, no
 * hotplug, no migration, at most 32 vCPUs.
 */
const CAPABILITIES: ReadonlySet<BackendCapability> = new Set<BackendCapability>(["pause", "graceful-shutdown", "console", "readopt", "metrics"]);

const MIB = 1024n * 1024n;

/**
 * Firecracker's request bodies for one VM, in the order they are sent before
 * InstanceStart; the kernel, initrd and disks are named as `files` says (the descriptors
 * the VMM inherited).
 */
export function firecrackerRequests(config: VmConfig, paths: VmPaths, files: VmmFiles): { path: string; body: Record<string, unknown> }[] {
  const cpu = config.cpu;
  const boot = config.boot;
  const requests: { path: string; body: Record<string, unknown> }[] = [
    {
      path: "/machine-config",
      // SMT is Firecracker's only topology knob: two threads per core.
      body: { vcpu_count: cpu?.vcpuCount ?? 1, mem_size_mib: Number((config.memory?.sizeBytes ?? 0n) / MIB), smt: cpu?.topology?.threadsPerCore === 2 },
    },
    {
      path: "/boot-source",
      body: {
        kernel_image_path: files.kernel ?? "",
        ...(boot?.kernelArgs ? { boot_args: boot.kernelArgs } : {}),
        ...(files.initrd ? { initrd_path: files.initrd } : {}),
      },
    },
    { path: "/logger", body: { log_path: join(paths.dir, "firecracker.log"), level: "Warning" } },
  ];
  const mode = consoleMode(config);
  if (mode !== "off") requests.push({ path: "/serial", body: { serial_out_path: mode === "buffer" ? paths.consoleFile : "/dev/null" } });
  for (const [i, disk] of config.storage.entries()) {
    requests.push({
      path: `/drives/${encodeURIComponent(disk.id)}`,
      body: { drive_id: disk.id, path_on_host: files.disks[i]!.path, is_root_device: disk.isRootDevice, is_read_only: disk.readOnly },
    });
  }
  for (const nic of config.network) {
    requests.push({
      path: `/network-interfaces/${encodeURIComponent(nic.id)}`,
      body: { iface_id: nic.id, host_dev_name: nic.tapDevice, guest_mac: nic.macAddress },
    });
  }
  return requests;
}

/** The Firecracker {@link VmmDriver}: pre-boot PUTs, then InstanceStart exactly once per process. */
export const firecrackerDriver: VmmDriver = {
  type: "firecracker",
  capabilities: CAPABILITIES,

  checkConfig(config) {
    checkDevices("firecracker", CAPABILITIES, config);
    const vcpus = config.cpu?.vcpuCount ?? 1;
    if (vcpus > 32) throw lacks("firecracker", "more than 32 vCPUs", "cpu.vcpu_count");
    const threads = config.cpu?.topology?.threadsPerCore ?? 1;
    if (threads > 2 || (threads === 2 && vcpus > 1 && vcpus % 2 !== 0)) throw lacks("firecracker", "this CPU topology (1 or 2 threads per core, even vCPUs with 2)", "cpu.topology");
    if ((config.cpu?.topology?.sockets ?? 1) > 1) throw lacks("firecracker", "more than one socket", "cpu.topology.sockets");
  },

  args(_vmId, paths) {
    return ["--api-sock", paths.apiSocket];
  },

  async boot(api, config, paths, files) {
    // Firecracker opens the log file without creating it.
    await writeFile(join(paths.dir, "firecracker.log"), "", { flag: "a", mode: 0o600 });
    for (const r of firecrackerRequests(config, paths, files)) await api.call("PUT", r.path, r.body);
    await api.call("PUT", "/actions", { action_type: "InstanceStart" });
  },

  async requestPowerOff(api) {
    // Firecracker has no ACPI; Ctrl+Alt+Del makes an x86 guest reboot, which ends the process.
    await api.call("PUT", "/actions", { action_type: "SendCtrlAltDel" });
  },

  async stopNow() {
    return false; // Firecracker's API has no "stop now"; the process is killed.
  },

  async pause(api) {
    await api.call("PATCH", "/vm", { state: "Paused" });
  },

  async resume(api) {
    await api.call("PATCH", "/vm", { state: "Resumed" });
  },

  async reboot() {
    throw new QuantixError("failed_precondition", 'the firecracker backend lacks the capability "reboot"');
  },

  async observe(api): Promise<ObservedGuest> {
    const info = (await api.call("GET", "/")) as { state?: string };
    return info.state === "Running" ? "running" : info.state === "Paused" ? "paused" : "stopped";
  },

  async ping(api) {
    await api.call("GET", "/version");
  },

  parseVersion(output) {
    return /v?(\d+\.\d+[^\s]*)/.exec(output)?.[1] ?? output.trim();
  },
};
