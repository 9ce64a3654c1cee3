import { SecurityGroupSchema } from "@quantix/api/gen/Quantixkvm/network/v1/security_group_pb.js";
import { defineKind, textField, timeField } from "../resource/kind.js";
import { NETWORK_IPAM } from "./virtual-network-kind.js";
import { VOLUME_ATTACHER } from "./volume-kind.js";

/** The name of the group every project has (created with the project's first network, port or group). */
export const DEFAULT_SECURITY_GROUP = "default";

/** Security groups (Quantixkvm.network.v1.SecurityGroup): allow rules applied to ports, in a project. */
export const SECURITY_GROUP_KIND = defineKind(SecurityGroupSchema, {
  name: "security group",
  table: "quantix_security_groups",
  fields: {
    project_id: textField((g) => g.projectId, { column: "project_id", filter: "eq" }),
    name: textField((g) => g.name, { column: "name", filter: "eq", order: true }),
    created_at: timeField((g) => g.createdAt, { column: "created_ms", order: true }),
  },
  orderBy: ["name", "created_at"],
  labels: (g) => g.labels,
  unique: { key: (g) => `${g.projectId}/${g.name}`, describe: (g) => `a security group named '${g.name}' already exists in project '${g.projectId}'` },
  projectScoped: true,
  // How many ports use the group: counted in the ports' own transactions.
  owned: [{ path: "port_count", value: (g) => g.portCount, owners: [NETWORK_IPAM, VOLUME_ATTACHER] }],
});
