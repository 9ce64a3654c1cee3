import { EventService } from "@quantix/api/gen/Quantixkvm/event/v1/event_service_pb.js";
import { EVENT_KIND, type Store } from "@quantix/core";
import { resourceRoute } from "../resources/index.js";
import type { Route } from "@quantix/rpc";

/** Quantixkvm.event.v1.EventService: ListEvents and WatchEvents, the event kind's generic reads. */
export function eventServiceRoute(store: Store): Route {
  return resourceRoute(EventService, EVENT_KIND as never, store);
}
