import type { VmSpec } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { QuantixError, type FieldViolation } from "@quantix/core";

/**
 * Refuses NICs that cannot work: a NIC attaches to a virtual network, and networks and
 * ports exist only in the control plane so far (no node sets them up, no NIC is bound to
 * a port), so a VM with a NIC would boot with a TAP device that is down and on no
 * bridge, and be reported RUNNING. FAILED_PRECONDITION names each NIC's field path and
 * network. Only NICs the write adds or moves to another network are checked (`cur` is
 * the VM before an update): VMs stored with NICs before (the demo's) can still be updated.
 */
export function refuseNicsWithoutNetwork(spec: VmSpec, cur: VmSpec | undefined): void {
  const before = new Map((cur?.nics ?? []).map((n) => [n.id, n.networkId]));
  const violations: FieldViolation[] = [];
  spec.nics.forEach((nic, i) => {
    if (before.has(nic.id) && before.get(nic.id) === nic.networkId) return;
    const what = nic.networkId === "" ? "names no network" : `attaches to network '${nic.networkId}', which does not exist or cannot take a VM's NIC yet`;
    violations.push({
      field: `spec.nics[${i}].network_id`,
      reason: "NETWORK_NOT_FOUND",
      description: `${what}: VirtualNetworkService and PortService store networks and ports, but no NIC is bound to a port until the network data plane is connected; create the VM without spec.nics`,
    });
  });
  if (violations.length === 0) return;
  throw new QuantixError("failed_precondition", `cannot attach the VM's NICs: ${violations.map((v) => `${v.field}: ${v.description}`).join("; ")}`, violations);
}
