import { RestVmmBackend, type RestVmmBackendOptions } from "../rest-vmm/rest-vmm-backend.js";
import { cloudHypervisorDriver } from "./cloud-hypervisor-driver.js";

/** Options of the Cloud Hypervisor backend: the `cloud-hypervisor` binary and the agent's state dir. */
export type CloudHypervisorBackendOptions = RestVmmBackendOptions;

/**
 * The Cloud Hypervisor backend: one `cloud-hypervisor --api-socket path=<stateDir>/vms/<id>/api.sock`
 * process per VM, started by BootVm (vm.create + vm.boot) and ended by a shutdown, so
 * every boot starts from the stored VmConfig and the rules match the Firecracker backend's.
 */
export function createCloudHypervisorBackend(options: CloudHypervisorBackendOptions): RestVmmBackend {
  return new RestVmmBackend(cloudHypervisorDriver, options);
}
