import type { BackendCapability } from "../../backend.js";
import { checkDevices } from "../rest-vmm/config-checks.js";
import type { ObservedGuest, VmmDriver } from "../rest-vmm/vmm-driver.js";
import { cloudHypervisorVmConfig } from "./cloud-hypervisor-config.js";

/**
 * What this backend drives in Cloud Hypervisor. CH itself can live-migrate and has more
 * device models; only what the backend implements is declared. No firmware boot: vmm.v1
 * has no firmware path to give CH.
 */
const CAPABILITIES: ReadonlySet<BackendCapability> = new Set<BackendCapability>([
  "pause", "reboot", "graceful-shutdown", "console", "cpu-hotplug", "memory-hotplug", "qcow2", "readopt", "metrics",
]);

const API = "/api/v1";

/** The Cloud Hypervisor {@link VmmDriver}: vm.create + vm.boot in a fresh process per boot. */
export const cloudHypervisorDriver: VmmDriver = {
  type: "cloud-hypervisor",
  capabilities: CAPABILITIES,

  checkConfig(config) {
    checkDevices("cloud-hypervisor", CAPABILITIES, config);
  },

  args(_vmId, paths) {
    return ["--api-socket", `path=${paths.apiSocket}`];
  },

  async boot(api, config, paths, files) {
    await api.call("PUT", `${API}/vm.create`, cloudHypervisorVmConfig(config, paths, files));
    await api.call("PUT", `${API}/vm.boot`);
  },

  async requestPowerOff(api) {
    // ACPI power button: the guest powers off, and Cloud Hypervisor exits with it.
    await api.call("PUT", `${API}/vm.power-button`);
  },

  async stopNow(api) {
    await api.call("PUT", `${API}/vm.shutdown`).catch(() => undefined);
    await api.call("PUT", `${API}/vmm.shutdown`);
    return true;
  },

  async pause(api) {
    await api.call("PUT", `${API}/vm.pause`);
  },

  async resume(api) {
    await api.call("PUT", `${API}/vm.resume`);
  },

  async reboot(api) {
    // vm.reboot resets the guest at once; CH has no "ask the guest to reboot", so force changes nothing.
    await api.call("PUT", `${API}/vm.reboot`);
  },

  async observe(api): Promise<ObservedGuest> {
    const info = (await api.call("GET", `${API}/vm.info`)) as { state?: string };
    return info.state === "Running" ? "running" : info.state === "Paused" ? "paused" : "stopped";
  },

  async ping(api) {
    await api.call("GET", `${API}/vmm.ping`);
  },

  parseVersion(output) {
    return /v?(\d+\.\d+[^\s]*)/.exec(output)?.[1] ?? output.trim();
  },
};
