import { createContext, useContext, type ReactNode } from "react";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { NodeService } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { EventService } from "@quantix/api/gen/Quantixkvm/event/v1/event_service_pb.js";
import type { VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { Event } from "@quantix/api/gen/Quantixkvm/event/v1/event_pb.js";
import { client } from "./client.js";
import { mapStream, useWatch, type WatchState } from "./watch.js";

const vms = client(VMService);
const nodes = client(NodeService);
const events = client(EventService);

export interface Live {
  vms: ReadonlyMap<string, VirtualMachine>;
  nodes: ReadonlyMap<string, Node>;
  events: ReadonlyMap<string, Event>;
  state: WatchState;
  error: string | undefined;
}

const LiveContext = createContext<Live | undefined>(undefined);

/** The cluster as the Watch streams tell it, shared by every page. */
export function LiveProvider({ children }: { children: ReactNode }) {
  const v = useWatch((rv, signal) => mapStream(vms.watchVMs({ resourceVersion: rv }, { signal }), (m) => ({ type: m.type, item: m.vm, resourceVersion: m.resourceVersion })), (x) => x.id);
  const n = useWatch((rv, signal) => mapStream(nodes.watchNodes({ resourceVersion: rv }, { signal }), (m) => ({ type: m.type, item: m.node, resourceVersion: m.resourceVersion })), (x) => x.id);
  const e = useWatch((rv, signal) => mapStream(events.watchEvents({ resourceVersion: rv }, { signal }), (m) => ({ type: m.type, item: m.event, resourceVersion: m.resourceVersion })), (x) => x.id);
  const states = [v.state, n.state, e.state];
  const state: WatchState = states.includes("reconnecting") ? "reconnecting" : states.includes("connecting") ? "connecting" : "live";
  return <LiveContext.Provider value={{ vms: v.items, nodes: n.items, events: e.items, state, error: v.error ?? n.error ?? e.error }}>{children}</LiveContext.Provider>;
}

export function useLive(): Live {
  const l = useContext(LiveContext);
  if (!l) throw new Error("useLive outside LiveProvider");
  return l;
}
