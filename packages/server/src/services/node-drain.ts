import { create } from "@bufbuild/protobuf";
import { DrainNodeResponseSchema, DrainFailureSchema, type DrainNodeRequest, type DrainNodeResponse } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { DrainRequestSchema, DrainStatus_Phase as DPhase, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { NODE_KIND, QuantixError, type Clock, type Store } from "@quantix/core";
import type { Logger } from "@quantix/rpc";
import type { NodeService } from "./node-service.js";
import { waitFor } from "./wait.js";

/** Dependencies of {@link NodeDrainService}. */
export interface NodeDrainDeps {
  readonly store: Store;
  readonly nodes: NodeService;
  readonly clock: Clock;
  readonly log: Logger;
}

/**
 * DrainNode: marks the node unschedulable (nothing new lands on it) and asks for a drain
 * in its spec (spec.drain, a new sequence), which the drain controller carries out on the
 * leader (controllers/drain-controller.ts); returns its report once it has ended. The
 * node's Drained condition and status.drain show the progress to WatchNodes clients. A
 * caller that goes away cancels the drain: it handles no further VM (each one left is
 * reported failed, "drain cancelled").
 */
export class NodeDrainService {
  constructor(private readonly deps: NodeDrainDeps) {}

  async drain(req: DrainNodeRequest, signal: AbortSignal): Promise<DrainNodeResponse> {
    const node = await this.deps.nodes.get(req.id);
    if (req.targetNodeId === node.id) throw new QuantixError("invalid_argument", `target_node_id: must differ from the node being drained ('${node.hostname}')`, [{ field: "target_node_id", reason: "INVALID", description: "must differ from id" }]);
    if (req.targetNodeId) await this.deps.nodes.get(req.targetNodeId);
    if (req.gracePeriodSec < 0 || req.gracePeriodSec > 3600) throw new QuantixError("invalid_argument", "grace_period_sec: must be between 0 and 3600 (0 means 60)", [{ field: "grace_period_sec", reason: "OUT_OF_RANGE", description: "must be between 0 and 3600" }]);
    const nodes = this.deps.store.of(NODE_KIND);
    const asked = await nodes.update(
      node.id,
      (cur) => {
        cur.spec!.schedulable = false;
        cur.spec!.drain = create(DrainRequestSchema, { sequence: (cur.spec?.drain?.sequence ?? 0n) + 1n, gracePeriodSec: req.gracePeriodSec, force: req.force, targetNodeId: req.targetNodeId, cancelled: signal.aborted });
        return cur;
      },
      { actor: "api" },
    );
    const sequence = asked.spec!.drain!.sequence;
    const onCancel = () =>
      void nodes.update(node.id, (cur) => (cur.spec?.drain?.sequence !== sequence || cur.spec.drain.cancelled ? undefined : ((cur.spec.drain.cancelled = true), cur)), { actor: "api" }).catch(() => undefined);
    signal.addEventListener("abort", onCancel, { once: true });
    try {
      const ended = (n: Node) => n.status?.drain?.sequence === sequence && (n.status.drain.phase === DPhase.COMPLETED || n.status.drain.phase === DPhase.INCOMPLETE);
      // Drains end by themselves (each migration has its own timeout); the caller's cancel only cancels.
      const done = await waitFor(nodes, "node", node.id, ended, 2 ** 31 - 1, new AbortController().signal);
      const d = done.status!.drain!;
      return create(DrainNodeResponseSchema, {
        node: done,
        migratedVmIds: d.migratedVmIds,
        stoppedVmIds: d.stoppedVmIds,
        failures: d.failures.map((f) => create(DrainFailureSchema, { vmId: f.vmId, reason: f.reason })),
      });
    } finally {
      signal.removeEventListener("abort", onCancel);
    }
  }
}
