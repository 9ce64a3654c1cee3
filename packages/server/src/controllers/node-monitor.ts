import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { Clock, Store } from "@quantix/core";
import type { Logger } from "@quantix/rpc";
import { HEARTBEAT_INTERVAL_SEC } from "../services/node-service.js";
import { setCondition } from "./conditions.js";
import { NODE_KIND } from "@quantix/core";
import { updateWithEvents } from "../events/record.js";
import { nodeEvents } from "../events/node-events.js";

/** Missed heartbeats after which a node is NOT_READY (its VMs' status says it is unreachable). */
export const MISSED_HEARTBEATS = 3;
/** Default silence after which a node is declared OFFLINE (lost, as for HA); QUANTIX_NODE_LOST_AFTER_SEC. */
export const OFFLINE_AFTER_SEC = 300;

/**
 * Marks nodes whose agent stopped heartbeating: NOT_READY after MISSED_HEARTBEATS
 * intervals, OFFLINE after `offlineAfterSec` (OFFLINE_AFTER_SEC by default), each with a
 * condition saying since when. A lost-after shorter than the NOT_READY limit (tests)
 * makes a silent node OFFLINE directly, and the check runs often enough to notice it.
 */
export class NodeMonitor {
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: { store: Store; clock: Clock; log: Logger; intervalMs?: number; offlineAfterSec?: number }) {}

  start(): void {
    this.timer = setInterval(() => void this.check().catch((err: unknown) => this.deps.log.log("warn", "node check failed", { error: String(err) })), this.deps.intervalMs ?? Math.min(5000, ((this.deps.offlineAfterSec ?? OFFLINE_AFTER_SEC) * 1000) / 2));
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  async check(): Promise<void> {
    const now = this.deps.clock.now();
    const offlineMs = (this.deps.offlineAfterSec ?? OFFLINE_AFTER_SEC) * 1000;
    const notReadyMs = Math.min(MISSED_HEARTBEATS * HEARTBEAT_INTERVAL_SEC * 1000, offlineMs);
    const nodes = await this.deps.store.of(NODE_KIND).list({ where: { phase: [Phase.READY, Phase.NOT_READY] }, order: { field: "hostname", desc: false }, limit: 100_000 });
    for (const node of nodes.items) {
      const last = node.status?.lastHeartbeat ? timestampMs(node.status.lastHeartbeat) : 0;
      const silent = now - last;
      if (silent <= notReadyMs) continue;
      const phase = silent >= offlineMs ? Phase.OFFLINE : Phase.NOT_READY;
      if (node.status?.phase === phase) continue;
      await updateWithEvents(
        this.deps.store,
        NODE_KIND,
        node.id,
        (cur) => {
          if (!cur.status || (cur.status.phase !== Phase.READY && cur.status.phase !== Phase.NOT_READY) || cur.status.phase === phase) return undefined;
          cur.status.phase = phase;
          const limit = phase === Phase.OFFLINE ? offlineMs : notReadyMs;
          cur.status.conditions = setCondition(cur.status.conditions, { type: "Heartbeat", status: false, reason: "HeartbeatMissed", message: `no heartbeat for ${Math.round(silent / 1000)} s (limit ${limit / 1000} s)`, generation: 0n }, now);
          cur.updatedAt = timestampFromMs(now);
          return cur;
        },
        nodeEvents,
        { actor: "node-monitor", nowMs: now },
      );
      this.deps.log.log("warn", phase === Phase.OFFLINE ? "node offline" : "node not ready: heartbeats missed", { node_id: node.id, hostname: node.hostname });
    }
  }
}
