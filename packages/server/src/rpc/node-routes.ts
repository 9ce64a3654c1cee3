import type { ServiceImpl } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { EmptySchema } from "@bufbuild/protobuf/wkt";
import { NodeService } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { NODE_KIND, type Store } from "@quantix/core";
import { resourceRoute } from "../resources/resource-routes.js";
import type { NodeDrainService } from "../services/node-drain.js";
import type { Route } from "@quantix/rpc";
import { nodeMetrics } from "../services/node-metrics.js";
import type { NodeService as Nodes } from "../services/node-service.js";

/**
 * Quantixkvm.compute.v1.NodeService, for every protocol: GetNode, ListNodes and WatchNodes
 * are the node kind's generic reads; the rest has the node's own rules.
 */
export function nodeServiceRoute(store: Store, nodes: Nodes, drains: NodeDrainService): Route {
  return resourceRoute(NodeService, NODE_KIND as never, store, { impl: nodeServiceImpl(nodes, drains), filters: { schedulable_only: (v) => (v ? { schedulable: true } : {}) } });
}

function nodeServiceImpl(nodes: Nodes, drains: NodeDrainService): Partial<ServiceImpl<typeof NodeService>> {
  return {
    registerNode: (req) => nodes.register(req),
    updateNode: (req) => nodes.update(req),
    decommissionNode: async (req, ctx) => {
      // The response is Empty: a forced decommission of an unreachable node says in a header
      // (and the log) that copies of its VMs may remain on it until it is fenced.
      const { warning } = await nodes.decommission(req);
      if (warning) ctx.responseHeader.set("quantix-warning", warning);
      return create(EmptySchema);
    },
    enableNode: (req) => nodes.setSchedulable(req.id, true),
    disableNode: (req) => nodes.setSchedulable(req.id, false),
    updateHeartbeat: (req) => nodes.heartbeat(req),
    drainNode: (req, ctx) => drains.drain(req, ctx.signal),
    getNodeMetrics: async (req) => nodeMetrics(await nodes.get(req.id)),
  };
}
