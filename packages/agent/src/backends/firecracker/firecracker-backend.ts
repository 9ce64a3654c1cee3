import { RestVmmBackend, type RestVmmBackendOptions } from "../rest-vmm/rest-vmm-backend.js";
import { firecrackerDriver } from "./firecracker-driver.js";

/** Options of the Firecracker backend: the `firecracker` binary and the agent's state dir. */
export type FirecrackerBackendOptions = RestVmmBackendOptions;

/**
 * The Firecracker backend: one `firecracker --api-sock <stateDir>/vms/<id>/api.sock`
 * process per VM. Firecracker boots a process once, so every BootVm starts a new process
 * (configured from the stored VmConfig) and a shutdown ends it.
 */
export function createFirecrackerBackend(options: FirecrackerBackendOptions): RestVmmBackend {
  return new RestVmmBackend(firecrackerDriver, options);
}
