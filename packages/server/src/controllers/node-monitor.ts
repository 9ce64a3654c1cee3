import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { Clock, Store } from "@quantix/core";
import type { Logger } from "../log.js";
import { HEARTBEAT_INTERVAL_SEC } from "../services/node-service.js";
import { setCondition } from "./conditions.js";

/** Missed heartbeats after which a node is OFFLINE. */
export const MISSED_HEARTBEATS = 4;

/** Marks nodes whose agent stopped heartbeating as OFFLINE, with a condition saying since when. */
export class NodeMonitor {
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly deps: { store: Store; clock: Clock; log: Logger; intervalMs?: number }) {}

  start(): void {
    this.timer = setInterval(() => void this.check().catch((err: unknown) => this.deps.log.log("warn", "node check failed", { error: String(err) })), this.deps.intervalMs ?? 5000);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  async check(): Promise<void> {
    const now = this.deps.clock.now();
    const limitMs = MISSED_HEARTBEATS * HEARTBEAT_INTERVAL_SEC * 1000;
    const nodes = await this.deps.store.nodes.list({ phases: [Phase.READY, Phase.NOT_READY], order: { field: "hostname", desc: false }, limit: 100_000 });
    for (const node of nodes.items) {
      const last = node.status?.lastHeartbeat ? timestampMs(node.status.lastHeartbeat) : 0;
      if (now - last <= limitMs) continue;
      await this.deps.store.nodes.update(node.id, (cur) => {
        if (!cur.status || (cur.status.phase !== Phase.READY && cur.status.phase !== Phase.NOT_READY)) return undefined;
        cur.status.phase = Phase.OFFLINE;
        cur.status.conditions = setCondition(cur.status.conditions, { type: "Heartbeat", status: false, reason: "HeartbeatMissed", message: `no heartbeat for ${Math.round((now - last) / 1000)} s (limit ${limitMs / 1000} s)`, generation: 0n }, now);
        cur.updatedAt = timestampFromMs(now);
        return cur;
      });
      this.deps.log.log("warn", "node offline", { node_id: node.id, hostname: node.hostname });
    }
  }
}
