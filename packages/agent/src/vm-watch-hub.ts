import { PushIterable, type PushSink } from "@quantix/core";
import type { BackendVmState } from "./backend.js";

/** One WatchVms event, before it becomes a vmm.v1 VmEvent. */
export interface VmChange {
  readonly type: "existing" | "synced" | "changed" | "deleted";
  /** Empty for "synced". */
  readonly vmId: string;
  readonly state?: BackendVmState | undefined;
  readonly reason: string;
  readonly pid?: number | undefined;
  readonly startedAtMs?: number | undefined;
  readonly metadata: Readonly<Record<string, string>>;
}

/** Changes a slow watcher may leave unread before it is cut off (it reconnects for a fresh snapshot). */
const MAX_BACKLOG = 10_000;

/**
 * Fans VM changes out to watchers. A new watcher gets the snapshot, then SYNCED, then
 * every change published after it subscribed; changes that arrive while the snapshot is
 * read are held back until after SYNCED, so none is lost (one may repeat a state the
 * snapshot already showed, which a level-based consumer ignores).
 */
export class VmWatchHub {
  private readonly sinks = new Set<PushSink<VmChange>>();

  /** Delivers a change to every watcher. */
  publish(change: VmChange): void {
    for (const s of this.sinks) s.push([change]);
  }

  /** Snapshot, SYNCED, then live changes, until `signal` aborts or the hub closes. */
  watch(snapshot: () => Promise<VmChange[]>, signal: AbortSignal): AsyncIterable<VmChange> {
    return new PushIterable<VmChange>((sink) => {
      let held: VmChange[] | undefined = [];
      const live: PushSink<VmChange> = {
        push: (items) => (held ? held.push(...items) : sink.push(items)),
        fail: (err) => sink.fail(err),
        end: () => sink.end(),
      };
      this.sinks.add(live);
      const onAbort = () => sink.end();
      signal.addEventListener("abort", onAbort, { once: true });
      if (signal.aborted) sink.end();
      snapshot().then(
        (list) => {
          sink.push([...list, { type: "synced", vmId: "", reason: "", metadata: {} }]);
          const rest = held ?? [];
          held = undefined;
          if (rest.length > 0) sink.push(rest);
        },
        (err: unknown) => sink.fail(err),
      );
      return () => {
        signal.removeEventListener("abort", onAbort);
        this.sinks.delete(live);
      };
    }, MAX_BACKLOG);
  }

  /** Ends every watch (the agent is shutting down). */
  close(): void {
    for (const s of this.sinks) s.end();
    this.sinks.clear();
  }
}
