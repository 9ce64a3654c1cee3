import { setTimeout as delay } from "node:timers/promises";
import type { Client } from "@connectrpc/connect";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { VmEventType, type VmEvent, type VmService, type VmState } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { CLUSTER_METADATA_KEY } from "@quantix/core";
import type { Logger } from "@quantix/rpc";

/** What the last WatchVms event said about one VM on an agent. */
export interface AgentVmEntry {
  readonly state: VmState;
  /** Why the state last changed, e.g. "QEMU exited with signal SIGKILL". */
  readonly reason: string;
  readonly pid: number;
  readonly startedAtMs?: number;
  /** The cluster that created the VM (its CLUSTER_METADATA_KEY), if it says. */
  readonly owner?: string;
}

/** What the watch tells its owner. */
export interface AgentWatchHooks {
  /** A VM's state may have changed (also for every VM after a fresh snapshot, and on a disconnect). */
  readonly changed: (vmId: string) => void;
  /** The stream is up and synced (true) or broken (false), with the reason. */
  readonly connection: (up: boolean, reason: string) => void;
}

/**
 * Follows an agent's WatchVms and keeps the last event per VM. The stream is reopened
 * with exponential backoff when it breaks; each reopening starts with a fresh snapshot,
 * which replaces the cache whole (VMs deleted meanwhile disappear), so no event needs
 * replaying. Every VM of the old and the new snapshot is reported changed, so that a
 * level-based reconciler looks at all of them again.
 */
export class AgentWatch {
  readonly vms = new Map<string, AgentVmEntry>();
  private readonly abort = new AbortController();
  private running: Promise<void> | undefined;

  constructor(
    private readonly client: Client<typeof VmService>,
    private readonly hooks: AgentWatchHooks,
    private readonly log: Logger,
    private readonly backoff = { firstMs: 200, maxMs: 5000 },
  ) {}

  start(): void {
    this.running ??= this.loop();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.running;
  }

  private async loop(): Promise<void> {
    let failures = 0;
    while (!this.abort.signal.aborted) {
      let reason = "the agent ended the stream";
      try {
        let snapshot: Map<string, AgentVmEntry> | undefined = new Map();
        for await (const ev of this.client.watchVms({}, { signal: this.abort.signal })) {
          if (snapshot) {
            if (ev.type === VmEventType.EXISTING) snapshot.set(ev.vmId, entryOf(ev));
            if (ev.type !== VmEventType.SYNCED) continue;
            const before = [...this.vms.keys()];
            this.vms.clear();
            for (const [id, e] of snapshot) this.vms.set(id, e);
            snapshot = undefined;
            failures = 0;
            this.hooks.connection(true, "synced");
            for (const id of new Set([...before, ...this.vms.keys()])) this.hooks.changed(id);
            continue;
          }
          if (ev.type === VmEventType.DELETED) this.vms.delete(ev.vmId);
          else if (ev.type === VmEventType.CHANGED) this.vms.set(ev.vmId, entryOf(ev, this.vms.get(ev.vmId)));
          else continue;
          this.hooks.changed(ev.vmId);
        }
      } catch (err) {
        reason = err instanceof Error ? err.message : String(err);
      }
      if (this.abort.signal.aborted) return;
      failures++;
      this.hooks.connection(false, reason);
      for (const id of this.vms.keys()) this.hooks.changed(id);
      const waitMs = Math.min(this.backoff.maxMs, this.backoff.firstMs * 2 ** Math.min(failures - 1, 10));
      if (failures === 1 || failures % 10 === 0) this.log.log("warn", "agent watch broken; reconnecting", { reason, attempt: failures, retry_in_ms: waitMs });
      await delay(waitMs, undefined, { signal: this.abort.signal }).catch(() => undefined);
    }
  }
}

/** An entry from an event; a change event without metadata (the backend's own) keeps the owner known before. */
function entryOf(ev: VmEvent, before?: AgentVmEntry): AgentVmEntry {
  const owner = ev.metadata[CLUSTER_METADATA_KEY] ?? before?.owner;
  return { state: ev.state, reason: ev.reason, pid: ev.processId, ...(ev.startedAt ? { startedAtMs: timestampMs(ev.startedAt) } : {}), ...(owner !== undefined ? { owner } : {}) };
}
