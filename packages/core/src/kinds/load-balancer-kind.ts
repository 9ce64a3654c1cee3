import { LoadBalancerSchema } from "@quantix/api/gen/Quantixkvm/network/v1/load_balancer_pb.js";
import { defineKind, intField, textField, timeField } from "../resource/kind.js";

/**
 * Load balancers (Quantixkvm.network.v1.LoadBalancer): L4 listeners and pools on a VIP,
 * in a project. The VIP is a port of the VIP network (device owner LOAD_BALANCER, device
 * id the load balancer's id) created and deleted in the load balancer's own commits; the
 * router of that network hosts it. The name is unique within the project.
 */
export const LOAD_BALANCER_KIND = defineKind(LoadBalancerSchema, {
  name: "load balancer",
  table: "quantix_load_balancers",
  fields: {
    project_id: textField((l) => l.projectId, { column: "project_id", filter: "eq" }),
    name: textField((l) => l.name, { column: "name", filter: "eq", order: true }),
    vip_network_id: textField((l) => l.spec?.vipNetworkId ?? "", { column: "vip_network_id", filter: "eq" }),
    vip_port_id: textField((l) => l.status?.vipPortId ?? "", { column: "vip_port_id", filter: "eq" }),
    state: intField((l) => l.status?.state ?? 0, { column: "state", filter: "in" }),
    created_at: timeField((l) => l.createdAt, { column: "created_ms", order: true }),
  },
  orderBy: ["name", "created_at"],
  labels: (l) => l.labels,
  unique: { key: (l) => `${l.projectId}/${l.name}`, describe: (l) => `a load balancer named '${l.name}' already exists in project '${l.projectId}'` },
  projectScoped: true,
});
