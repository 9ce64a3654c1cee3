import { PortSchema } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { defineKind, intField, textField, timeField } from "../resource/kind.js";

/**
 * Ports (Quantixkvm.network.v1.Port): a MAC and fixed IPs on a virtual network. The MAC is
 * the unique key within the network, so two ports never share one; addresses are held by
 * NetworkAllocation records written in the port's transaction.
 */
export const PORT_KIND = defineKind(PortSchema, {
  name: "port",
  table: "quantix_ports",
  fields: {
    project_id: textField((p) => p.projectId, { column: "project_id", filter: "eq" }),
    name: textField((p) => p.name, { column: "name", filter: "eq", order: true }),
    network_id: textField((p) => p.spec?.networkId ?? "", { column: "network_id", filter: "eq" }),
    device_id: textField((p) => p.status?.deviceId ?? "", { column: "device_id", filter: "eq" }),
    device_owner: intField((p) => p.status?.deviceOwner ?? 0, { column: "device_owner", filter: "eq" }),
    state: intField((p) => p.status?.state ?? 0, { column: "state", filter: "in" }),
    mac_address: textField((p) => p.spec?.macAddress ?? "", { column: "mac_address", filter: "eq" }),
    // ListPorts' ip_address: a port's first fixed IP (ports have one unless given more).
    ip_address: textField((p) => p.spec?.fixedIps[0] ?? "", { column: "ip_address", filter: "eq" }),
    node_id: textField((p) => p.status?.nodeId ?? "", { column: "node_id", filter: "eq" }),
    created_at: timeField((p) => p.createdAt, { column: "created_ms", order: true }),
  },
  orderBy: ["created_at", "name"],
  labels: (p) => p.labels,
  unique: { key: (p) => `${p.spec?.networkId ?? ""}/${p.spec?.macAddress ?? ""}`, describe: (p) => `MAC address ${p.spec?.macAddress ?? ""} is already used by another port on network '${p.spec?.networkId ?? ""}'` },
  projectScoped: true,
});
