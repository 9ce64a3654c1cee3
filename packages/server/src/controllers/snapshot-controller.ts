import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { SnapshotState, type Snapshot } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_pb.js";
import { allOf, QuantixError, SNAPSHOT_CONTROLLER, SNAPSHOT_FINALIZER, SNAPSHOT_KIND, SNAPSHOT_TAKING_PERCENT, STORAGE_POOL_KIND, VOLUME_KIND, type Clock, type Resource, type Store, type Timers } from "@quantix/core";
import type { Logger } from "@quantix/rpc";
import { Controller, watching } from "../runtime/controller.js";
import type { NodeStorage, SnapshotRef } from "../storage/node-storage.js";
import type { NodeStorages } from "../storage/node-storages.js";
import { setCondition } from "./conditions.js";
import { reasonOf, transient, volumeNode, writeStatusOf } from "./storage-steps.js";

/** How soon a step that failed for a passing reason (a node away) is tried again. */
const RETRY_MS = 15_000;
/** Keys of this prefix name a deleted volume whose snapshots go with it. */
const VOLUME_KEY = "volume/";

type S = Snapshot & Resource;

/**
 * Makes each volume snapshot's node match it, level-based, one target volume at a time:
 * - CREATING: records its parent (the snapshot of the volume that is current), takes the
 *   snapshot on the volume's node (idempotent: tagged with the snapshot's id), makes it
 *   the volume's current snapshot, AVAILABLE;
 * - generation above status.observed_generation (RevertToSnapshot): REVERTING, the volume
 *   rolled back on its node, the snapshot current again, AVAILABLE;
 * - being deleted: DELETING, removed from the node, its children re-parented to its
 *   parent (which becomes current if it was), the finalizer dropped;
 * - its volume gone: deleted too (the snapshot lived in the volume's file).
 * A failure that may pass (node unavailable) keeps the state with Ready=False and is
 * tried again; any other is final: a create goes ERROR, a revert leaves the snapshot
 * AVAILABLE with Reverted=False; each with its reason (`CreateFailedPrecondition`, ...).
 */
export function snapshotController(deps: { store: Store; storages: NodeStorages; clock: Clock; timers?: Timers; log: Logger; resyncMs?: number }): Controller {
  const snaps = deps.store.of(SNAPSHOT_KIND);
  const writeStatus = (id: string, change: (s: S) => void) => writeStatusOf(deps.store, SNAPSHOT_KIND, SNAPSHOT_CONTROLLER, id, change);
  const chains = new Map<string, Promise<unknown>>();

  /** Runs `fn` after every earlier step on the same volume: parents and "current" are decided one at a time. */
  function serial<R>(key: string, fn: () => Promise<R>): Promise<R> {
    const next = (chains.get(key) ?? Promise.resolve()).then(fn, fn);
    const tail = next.catch(() => undefined);
    chains.set(key, tail);
    void tail.then(() => chains.get(key) === tail && chains.delete(key));
    return next;
  }

  /** The other snapshots of the same volume. */
  async function siblings(s: S): Promise<S[]> {
    const out: S[] = [];
    for await (const x of allOf(snaps, { where: { volume_id: volumeOf(s) } })) if (x.id !== s.id) out.push(x);
    return out;
  }

  /** Makes `s` the volume's only current snapshot (the others first, so that a crash leaves none rather than two). */
  async function makeCurrent(s: S): Promise<void> {
    for (const x of await siblings(s)) if (x.status?.current) await writeStatus(x.id, (cur) => void (cur.status!.current = false));
  }

  /** The node storage of the snapshot's volume, and the snapshot's reference there. */
  async function locate(s: S): Promise<{ storage: NodeStorage; ref: SnapshotRef } | undefined> {
    const volume = await deps.store.of(VOLUME_KIND).get(volumeOf(s));
    if (!volume) return undefined;
    const pool = await deps.store.of(STORAGE_POOL_KIND).get(volume.spec?.poolId ?? "");
    if (!pool) throw new QuantixError("failed_precondition", `storage pool '${volume.spec?.poolId}' of volume '${volume.id}' not found`);
    const node = await volumeNode(deps.store, deps.storages, volume.status?.nodeId ?? "", pool);
    return { storage: deps.storages.of(node), ref: { poolId: pool.id, volumeId: volume.id, snapshotId: s.id } };
  }

  async function fail(s: S, step: "Create" | "Revert" | "Delete", err: unknown): Promise<{ requeueAfterMs: number } | void> {
    const { reason, message } = reasonOf(step, err, "snapshot");
    if (!(err instanceof QuantixError)) deps.log.log("warn", "a snapshot step failed on its node", { snapshot_id: s.id, step, error: String(err) });
    const again = transient(err) || step === "Delete";
    const nowMs = deps.clock.now();
    await writeStatus(s.id, (cur) => {
      const st = cur.status!;
      st.errorMessage = message;
      if (step === "Revert") {
        st.conditions = setCondition(st.conditions, { type: "Reverted", status: false, reason, message, generation: cur.generation }, nowMs);
        if (!again) {
          st.state = SnapshotState.AVAILABLE;
          st.observedGeneration = cur.generation;
        }
        return;
      }
      st.conditions = setCondition(st.conditions, { type: "Ready", status: false, reason, message, generation: cur.generation }, nowMs);
      if (!again) st.state = SnapshotState.ERROR;
    });
    return again ? { requeueAfterMs: RETRY_MS } : undefined;
  }

  async function remove(s: S): Promise<{ requeueAfterMs: number } | void> {
    if (!s.finalizers.includes(SNAPSHOT_FINALIZER)) return;
    if (s.status?.state !== SnapshotState.DELETING) await writeStatus(s.id, (cur) => void (cur.status!.state = SnapshotState.DELETING));
    try {
      const at = await locate(s);
      if (at) await at.storage.deleteSnapshot(at.ref);
    } catch (err) {
      if (!(err instanceof QuantixError && err.code === "not_found")) return fail(s, "Delete", err);
    }
    const parent = s.status?.parentId ?? "";
    for (const x of await siblings(s)) {
      if (x.status?.parentId === s.id) await writeStatus(x.id, (cur) => void (cur.status!.parentId = parent));
      if (x.id === parent && s.status?.current) await writeStatus(x.id, (cur) => void (cur.status!.current = true));
    }
    await snaps
      .update(s.id, (cur) => (cur.finalizers.includes(SNAPSHOT_FINALIZER) ? Object.assign(cur, { finalizers: cur.finalizers.filter((f) => f !== SNAPSHOT_FINALIZER) }) : undefined), { actor: SNAPSHOT_CONTROLLER })
      .catch((err: unknown) => {
        if (!(err instanceof QuantixError && err.code === "not_found")) throw err;
      });
  }

  async function take(s: S): Promise<{ requeueAfterMs: number } | void> {
    // The parent is fixed before the snapshot exists (progress 10: taking), so that a retry after a crash keeps it.
    if ((s.status?.progressPercent ?? 0) < SNAPSHOT_TAKING_PERCENT) {
      const parent = (await siblings(s)).find((x) => x.status?.current && x.status.state === SnapshotState.AVAILABLE)?.id ?? "";
      const fixed = await writeStatus(s.id, (cur) => {
        cur.status!.parentId = parent;
        cur.status!.progressPercent = SNAPSHOT_TAKING_PERCENT;
      });
      if (!fixed) return;
      s = fixed;
    }
    let taken;
    try {
      const at = await locate(s);
      if (!at) return;
      taken = await at.storage.createSnapshot(at.ref);
    } catch (err) {
      return fail(s, "Create", err);
    }
    await makeCurrent(s);
    const nowMs = deps.clock.now();
    await writeStatus(s.id, (cur) => {
      const st = cur.status!;
      st.state = SnapshotState.AVAILABLE;
      st.current = true;
      st.takenAt = timestampFromMs(taken.takenAtMs || nowMs);
      st.memoryIncluded = false;
      st.memorySizeBytes = taken.vmStateBytes;
      st.errorMessage = "";
      st.progressPercent = 100;
      st.observedGeneration = cur.generation;
      st.conditions = setCondition(st.conditions, { type: "Ready", status: true, reason: "Taken", message: `snapshot of volume '${volumeOf(cur)}' taken`, generation: cur.generation }, nowMs);
    });
  }

  async function revert(s: S): Promise<{ requeueAfterMs: number } | void> {
    if (s.status?.state !== SnapshotState.REVERTING) await writeStatus(s.id, (cur) => void (cur.status!.state = SnapshotState.REVERTING));
    try {
      const at = await locate(s);
      if (!at) return;
      await at.storage.revertSnapshot(at.ref);
    } catch (err) {
      return fail(s, "Revert", err);
    }
    await makeCurrent(s);
    const nowMs = deps.clock.now();
    await writeStatus(s.id, (cur) => {
      const st = cur.status!;
      st.state = SnapshotState.AVAILABLE;
      st.current = true;
      st.errorMessage = "";
      st.observedGeneration = cur.generation;
      st.conditions = setCondition(st.conditions, { type: "Reverted", status: true, reason: "Reverted", message: `volume '${volumeOf(cur)}' rolled back to this snapshot`, generation: cur.generation }, nowMs);
    });
  }

  return new Controller(
    {
      name: SNAPSHOT_CONTROLLER,
      watches: [
        watching(snaps, (e) => (e.type === "DELETED" ? [] : [e.object.id])),
        watching(deps.store.of(VOLUME_KIND), (e) => (e.type === "DELETED" ? [`${VOLUME_KEY}${e.object.id}`] : [])),
      ],
      keys: async function* () {
        for await (const s of allOf(snaps)) yield s.id;
      },
      reconcile: async (key) => {
        if (key.startsWith(VOLUME_KEY)) {
          const volumeId = key.slice(VOLUME_KEY.length);
          if (await deps.store.of(VOLUME_KIND).get(volumeId)) return;
          for await (const s of allOf(snaps, { where: { volume_id: volumeId } })) if (!s.deletionRequestedAt) await snaps.delete(s.id, undefined, { actor: SNAPSHOT_CONTROLLER }).catch(() => undefined);
          return;
        }
        const first = await snaps.get(key);
        if (!first || first.spec?.target.case !== "volumeId") return;
        return serial(volumeOf(first), async () => {
          const s = await snaps.get(key);
          if (!s) return;
          if (s.deletionRequestedAt) return remove(s);
          // The snapshot lived in its volume's file: it goes with the volume.
          if (!(await deps.store.of(VOLUME_KIND).get(volumeOf(s)))) {
            await snaps.delete(s.id, undefined, { actor: SNAPSHOT_CONTROLLER }).catch(() => undefined);
            return;
          }
          const state = s.status?.state ?? SnapshotState.UNSPECIFIED;
          if (state === SnapshotState.CREATING || state === SnapshotState.UNSPECIFIED) return take(s);
          if ((state === SnapshotState.AVAILABLE || state === SnapshotState.REVERTING) && (s.status?.observedGeneration ?? 0n) < s.generation) return revert(s);
          return undefined;
        });
      },
      resyncMs: deps.resyncMs ?? 60_000,
      concurrency: 4,
    },
    { clock: deps.clock, ...(deps.timers ? { timers: deps.timers } : {}), log: deps.log, revision: () => deps.store.revision() },
  );
}

function volumeOf(s: S): string {
  return s.spec?.target.case === "volumeId" ? s.spec.target.value : "";
}
