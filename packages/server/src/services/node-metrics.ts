import { create } from "@bufbuild/protobuf";
import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { NodeMetricsSchema, type NodeMetrics } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { QuantixError } from "@quantix/core";

/**
 * A node's host usage as its agent measured it at the last heartbeat (GetNodeMetrics).
 * FAILED_PRECONDITION when no agent has reported usage: simulated demo nodes heartbeat
 * without it, and a made-up zero would read as an idle host.
 */
export function nodeMetrics(node: Node): NodeMetrics {
  const usage = node.status?.usage;
  const at = node.status?.lastHeartbeat;
  if (!usage || !at) {
    throw new QuantixError("failed_precondition", `node '${node.hostname}' has no measured usage: no agent has reported it (a simulated node measures nothing)`);
  }
  return create(NodeMetricsSchema, { nodeId: node.id, usage, sampledAt: at });
}
