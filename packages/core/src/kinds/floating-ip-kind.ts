import { FloatingIpSchema } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_pb.js";
import { defineKind, textField, timeField } from "../resource/kind.js";

/**
 * Floating IPs (Quantixkvm.network.v1.FloatingIp): an address of an EXTERNAL network
 * allocated to a project, mapped to a port's fixed IP or not. The address is held by a
 * NetworkAllocation record of the external network written in the floating IP's own
 * transaction (as ports' addresses), so no two floating IPs (or a floating IP and a
 * router) ever share one.
 */
export const FLOATING_IP_KIND = defineKind(FloatingIpSchema, {
  name: "floating IP",
  table: "quantix_floating_ips",
  fields: {
    project_id: textField((f) => f.projectId, { column: "project_id", filter: "eq" }),
    external_network_id: textField((f) => f.externalNetworkId, { column: "external_network_id", filter: "eq" }),
    port_id: textField((f) => f.portId, { column: "port_id", filter: "eq" }),
    vm_id: textField((f) => f.vmId, { column: "vm_id", filter: "eq" }),
    address: textField((f) => f.address, { column: "address", filter: "eq" }),
    created_at: timeField((f) => f.createdAt, { column: "created_ms", order: true }),
  },
  orderBy: ["created_at"],
  labels: (f) => f.labels,
  projectScoped: true,
});
