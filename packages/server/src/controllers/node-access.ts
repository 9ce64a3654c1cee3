import type { VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { QuantixError, type HypervisorConsole, type HypervisorPort } from "@quantix/core";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";

/**
 * The hypervisor of a VM's node, for reads any replica may serve (console, metrics).
 * UNAVAILABLE when the VM has no node or its node is not connected.
 */
export function driverOf(drivers: NodeDrivers, vm: VirtualMachine): HypervisorPort {
  const nodeId = vm.status?.nodeId ?? "";
  const driver = nodeId ? drivers.get(nodeId) : undefined;
  if (!driver) throw new QuantixError("unavailable", `VM '${vm.id}' has no reachable node${nodeId ? ` (node '${nodeId}' is not connected)` : ""}; retry when its node is READY`);
  return driver;
}

/**
 * The console of a VM's node. FAILED_PRECONDITION when the VM is not placed or its node's
 * hypervisor lacks the "console" capability; UNAVAILABLE when the node is not connected.
 */
export function consoleOf(drivers: NodeDrivers, vm: VirtualMachine): HypervisorConsole {
  if (!vm.status?.nodeId) throw new QuantixError("failed_precondition", `VM '${vm.id}' is not placed on a node, so it has no console yet; start it first`);
  const driver = driverOf(drivers, vm);
  if (!driver.capabilities.has("console") || !driver.console) {
    throw new QuantixError("failed_precondition", `VM '${vm.id}' runs on a ${driver.kind} hypervisor, which lacks the 'console' capability`);
  }
  return driver.console;
}
