import { NetworkAllocationSchema } from "@quantix/api/gen/Quantixkvm/network/v1/network_allocation_pb.js";
import { boolField, defineKind, intField, textField, timeField } from "../resource/kind.js";

/** The id of the allocation of `address` on network `networkId`: two claims of one address are one id. */
export function addressAllocationId(networkId: string, address: string): string {
  return `${networkId}.${address}`;
}

/**
 * The id of the claim of port name `name` on network `networkId` (names are unique per
 * network; a network id has no dot, so no two (network, name) pairs share an id, and
 * "name." is never the start of an address).
 */
export function portNameAllocationId(networkId: string, name: string): string {
  return `${networkId}.name.${name}`;
}

/** The id of the allocation of a VXLAN network identifier, cluster-wide. */
export function vniAllocationId(vni: number): string {
  return `vni.${vni}`;
}

/**
 * IPAM records (Quantixkvm.network.v1.NetworkAllocation): an address of a network held by
 * a port, a VNI held by a network, or a port name on a network held by a port. Their ids
 * derive from what they hold, so the store's id uniqueness is what keeps two ports (on any
 * replica) from one address or one name: the claim is created in the port's transaction,
 * and the second of two fails as a whole.
 */
export const NETWORK_ALLOCATION_KIND = defineKind(NetworkAllocationSchema, {
  name: "network allocation",
  table: "quantix_network_allocations",
  fields: {
    project_id: textField((a) => a.projectId, { column: "project_id", filter: "eq" }),
    network_id: textField((a) => a.networkId, { column: "network_id", filter: "eq" }),
    port_id: textField((a) => a.portId, { column: "port_id", filter: "eq" }),
    vni: intField((a) => a.vni, { column: "vni", filter: "eq" }),
    requested: boolField((a) => a.requested, { column: "requested", filter: "eq" }),
    created_at: timeField((a) => a.createdAt, { column: "created_ms", order: true }),
  },
  orderBy: ["created_at"],
  projectScoped: true,
});
