import { NodeSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { boolField, defineKind, intField, textField, timeField } from "../resource/kind.js";

/** The component that alone keeps a node's status.unmanaged_guests (STYLE rule 2). */
export const UNMANAGED_GUESTS = "unmanaged-guests";

/** Hypervisor hosts (Quantixkvm.compute.v1.Node). */
export const NODE_KIND = defineKind(NodeSchema, {
  name: "node",
  table: "quantix_nodes",
  fields: {
    hostname: textField((n) => n.hostname, { column: "hostname", filter: "eq", order: true }),
    phase: intField((n) => n.status?.phase ?? 0, { column: "phase", filter: "in" }),
    schedulable: boolField((n) => n.spec?.schedulable ?? false, { column: "schedulable", filter: "eq" }),
    created_at: timeField((n) => n.createdAt, { column: "created_ms", order: true }),
  },
  orderBy: ["hostname", "created_at"],
  labels: (n) => n.labels,
  unique: { key: (n) => n.hostname, describe: (n) => `a node with hostname '${n.hostname}' is already registered` },
  projectScoped: false,
  owned: [
    {
      path: "status.unmanaged_guests",
      value: (n) => (n.status?.unmanagedGuests ?? []).map((g) => `${g.id}/${g.state}/${g.ownerClusterId}`).join(","),
      owners: [UNMANAGED_GUESTS],
    },
  ],
});
