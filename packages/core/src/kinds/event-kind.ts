import { EventSchema } from "@quantix/api/gen/Quantixkvm/event/v1/event_pb.js";
import { defineKind, textField, timeField } from "../resource/kind.js";

/** Lifecycle events (Quantixkvm.event.v1.Event): written by the components that act, kept for a bounded time. */
export const EVENT_KIND = defineKind(EventSchema, {
  name: "event",
  table: "quantix_events",
  fields: {
    project_id: textField((e) => e.projectId, { column: "project_id", filter: "eq" }),
    object_kind: textField((e) => e.objectKind, { column: "object_kind", filter: "eq" }),
    object_id: textField((e) => e.objectId, { column: "object_id", filter: "eq" }),
    type: textField((e) => e.type, { column: "type", filter: "in" }),
    node_id: textField((e) => e.nodeId, { column: "node_id", filter: "eq" }),
    time: timeField((e) => e.time, { column: "time_ms", order: true }),
  },
  orderBy: ["time"],
  projectScoped: true,
});
