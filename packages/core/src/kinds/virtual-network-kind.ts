import { VirtualNetworkSchema } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { defineKind, intField, textField, timeField } from "../resource/kind.js";
import { VOLUME_ATTACHER } from "./volume-kind.js";

/** The component that alone will write a network's observed state (state, nodes, conditions), once the data plane is connected. */
export const NETWORK_CONTROLLER = "network-controller";

/**
 * The writer of the address counts of networks and of the port counts of security groups:
 * the commits of PortService that claim and release addresses (server/src/services/ipam.ts),
 * in the same transaction as the port.
 */
export const NETWORK_IPAM = "network-ipam";

/** Virtual networks (Quantixkvm.network.v1.VirtualNetwork): an IPv4 subnet on an overlay, in a project. */
export const VIRTUAL_NETWORK_KIND = defineKind(VirtualNetworkSchema, {
  name: "virtual network",
  table: "quantix_virtual_networks",
  fields: {
    project_id: textField((n) => n.projectId, { column: "project_id", filter: "eq" }),
    name: textField((n) => n.name, { column: "name", filter: "eq", order: true }),
    type: intField((n) => n.spec?.type ?? 0, { column: "type", filter: "in" }),
    state: intField((n) => n.status?.state ?? 0, { column: "state", filter: "in" }),
    created_at: timeField((n) => n.createdAt, { column: "created_ms", order: true }),
  },
  orderBy: ["name", "created_at"],
  labels: (n) => n.labels,
  unique: { key: (n) => `${n.projectId}/${n.name}`, describe: (n) => `a virtual network named '${n.name}' already exists in project '${n.projectId}'` },
  projectScoped: true,
  owned: [
    {
      path: "status",
      value: (n) => (n.status ? { ...n.status, portCount: 0, allocatedIpCount: 0, availableIpCount: 0 } : undefined),
      owners: [NETWORK_CONTROLLER],
    },
    {
      path: "status.port_count",
      value: (n) => [n.status?.portCount ?? 0, n.status?.allocatedIpCount ?? 0, n.status?.availableIpCount ?? 0],
      // CreateVM's commit (written as the attacher, which claims a VM's volumes and ports) makes its NICs' ports.
      owners: [NETWORK_IPAM, VOLUME_ATTACHER],
    },
  ],
});
