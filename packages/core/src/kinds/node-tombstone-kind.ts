import { NodeTombstoneSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { defineKind, textField, timeField } from "../resource/kind.js";

/**
 * What DecommissionNode leaves of a node (Quantixkvm.compute.v1.NodeTombstone), by the
 * node's id: RegisterNode tells a decommissioned node's agent apart from one whose node
 * this control plane never knew.
 */
export const NODE_TOMBSTONE_KIND = defineKind(NodeTombstoneSchema, {
  name: "node tombstone",
  table: "quantix_node_tombstones",
  fields: {
    hostname: textField((t) => t.hostname, { column: "hostname", filter: "eq" }),
    decommissioned_at: timeField((t) => t.decommissionedAt, { column: "decommissioned_ms", order: true }),
  },
  orderBy: ["decommissioned_at"],
  projectScoped: false,
});
