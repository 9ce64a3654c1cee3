import type { HandlerContext, ServiceImpl } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { EmptySchema } from "@bufbuild/protobuf/wkt";
import { NodeService } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { NODE_KIND, type Store } from "@quantix/core";
import { resourceRoute } from "../resources/resource-routes.js";
import type { NodeDrainService } from "../services/node-drain.js";
import { peerKey, type Peer, type Route } from "@quantix/rpc";
import { nodeMetrics } from "../services/node-metrics.js";
import type { AgentCaller, NodeService as Nodes } from "../services/node-service.js";
import type { AgentIdentity } from "../enrollment/agent-identity.js";

/**
 * How RegisterNode and UpdateHeartbeat learn which agent calls: where agents must prove it
 * (TLS configured), the enrolled agent the peer's certificate names; absent: anyone may.
 */
export type AgentOfPeer = (peer: Peer) => AgentIdentity | undefined;

/**
 * Quantixkvm.compute.v1.NodeService, for every protocol: GetNode, ListNodes and WatchNodes
 * are the node kind's generic reads; the rest has the node's own rules.
 */
export function nodeServiceRoute(store: Store, nodes: Nodes, drains: NodeDrainService, agentOf?: AgentOfPeer): Route {
  const caller = (ctx: HandlerContext): AgentCaller | undefined => (agentOf ? { agent: agentOf(ctx.values.get(peerKey)) } : undefined);
  return resourceRoute(NodeService, NODE_KIND as never, store, { impl: nodeServiceImpl(nodes, drains, caller), filters: { schedulable_only: (v) => (v ? { schedulable: true } : {}) } });
}

function nodeServiceImpl(nodes: Nodes, drains: NodeDrainService, caller: (ctx: HandlerContext) => AgentCaller | undefined): Partial<ServiceImpl<typeof NodeService>> {
  return {
    registerNode: (req, ctx) => nodes.register(req, caller(ctx)),
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
    updateHeartbeat: (req, ctx) => nodes.heartbeat(req, caller(ctx)),
    drainNode: (req, ctx) => drains.drain(req, ctx.signal),
    getNodeMetrics: async (req) => nodeMetrics(await nodes.get(req.id)),
  };
}
