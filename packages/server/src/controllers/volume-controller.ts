import { VolumeFormat, type StoragePool } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { VolumeState, type Volume } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { allOf, isLocalPool, QuantixError, SNAPSHOT_KIND, STORAGE_POOL_KIND, VOLUME_CONTROLLER, VM_KIND, VOLUME_FINALIZER, VOLUME_KIND, type Clock, type Resource, type Store, type Timers } from "@quantix/core";
import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { Logger } from "@quantix/rpc";
import { Controller, watching } from "../runtime/controller.js";
import { QuotaLedger } from "../quota/quota-ledger.js";
import { volumeCharging } from "../services/volume-service.js";
import type { NodeVolume, NodeVolumeSource } from "../storage/node-storage.js";
import type { NodeStorages } from "../storage/node-storages.js";
import { setCondition } from "./conditions.js";
import { imageCopyMissing } from "./image-copy.js";
import { reasonOf, volumeNode, writeStatusOf } from "./storage-steps.js";


const GIB = 1n << 30n;
/** How soon a volume in ERROR is tried again (an agent wired, space freed, a node back). */
const ERROR_RETRY_MS = 15_000;
/** How soon a volume waiting for its image's copy looks again. */
const IMAGE_WAIT_MS = 500;

type V = Volume & Resource;

/**
 * Makes each volume's node match its spec through NodeStorage, level-based: a PENDING
 * volume is bound to a node (its own in a local pool) and marked CREATING; its pool is
 * set up there and the file created (blank, or from its source volume); a spec larger
 * than the file grows it (RESIZING); the observed sizes are written with AVAILABLE (or
 * IN_USE when attached). A volume being deleted goes DELETING, its file is removed, and
 * its finalizer dropped, which deletes it and releases its quota in the same commit.
 * Every failure becomes ERROR with the Ready condition's reason (`CreateFailedPrecondition`,
 * `ResizeResourceExhausted`, ...) and message, and is tried again later.
 */
export function volumeController(deps: { store: Store; storages: NodeStorages; clock: Clock; timers?: Timers; log: Logger; resyncMs?: number }): Controller {
  const volumes = deps.store.of(VOLUME_KIND);
  const ledger = new QuotaLedger({ store: deps.store, clock: deps.clock, defaults: {} });

  /** Writes the status `change` makes (nothing when it changes nothing); undefined when the volume is gone. */
  const writeStatus = (id: string, change: (v: V) => void) => writeStatusOf(deps.store, VOLUME_KIND, VOLUME_CONTROLLER, id, change);

  async function fail(v: V, step: string, err: unknown): Promise<{ requeueAfterMs: number }> {
    const { reason, message } = reasonOf(step, err, "volume");
    if (!(err instanceof QuantixError)) deps.log.log("warn", "a volume step failed on its node", { volume_id: v.id, step, error: String(err) });
    const nowMs = deps.clock.now();
    await writeStatus(v.id, (cur) => {
      const s = cur.status!;
      // A volume no node has started to make stays PENDING (nothing exists anywhere), with the reason.
      const waiting = s.state === VolumeState.PENDING || s.state === VolumeState.UNSPECIFIED;
      s.state = cur.deletionRequestedAt ? VolumeState.DELETING : waiting ? VolumeState.PENDING : VolumeState.ERROR;
      s.errorMessage = message;
      s.progressPercent = 0;
      s.conditions = setCondition(s.conditions, { type: "Ready", status: false, reason, message, generation: cur.generation }, nowMs);
    });
    return { requeueAfterMs: ERROR_RETRY_MS };
  }

  const nodeFor = (v: V, pool: StoragePool) => volumeNode(deps.store, deps.storages, v.status?.nodeId ?? "", pool);

  /** What the node makes the volume from: its source volume, or the volume a snapshot was taken of, at that snapshot. */
  async function sourceOf(v: V): Promise<NodeVolumeSource | undefined> {
    const src = v.spec?.source?.source;
    if (src?.case === "volumeId") return { volumeId: src.value, linked: v.spec?.source?.linked ?? false };
    if (src?.case !== "snapshotId") return undefined;
    const snap = await deps.store.of(SNAPSHOT_KIND).get(src.value);
    if (!snap || snap.spec?.target.case !== "volumeId") throw new QuantixError("failed_precondition", `snapshot '${src.value}' the volume is made from is gone`);
    return { volumeId: snap.spec.target.value, linked: false, snapshotId: snap.id };
  }

  /** A volume waiting for something another controller makes (its image's copy): still CREATING, the Ready condition says why; looked at again soon. */
  async function wait(v: V, w: { reason: string; message: string }): Promise<{ requeueAfterMs: number }> {
    const nowMs = deps.clock.now();
    await writeStatus(v.id, (cur) => void (cur.status!.conditions = setCondition(cur.status!.conditions, { type: "Ready", status: false, reason: w.reason, message: w.message, generation: cur.generation }, nowMs)));
    return { requeueAfterMs: IMAGE_WAIT_MS };
  }

  return new Controller(
    {
      name: VOLUME_CONTROLLER,
      watches: [
        watching(volumes, (e) => (e.type === "DELETED" ? [] : [e.object.id])),
        // A VM's own volumes follow its placement.
        watching(deps.store.of(VM_KIND), (e) => (e.type === "DELETED" || (e.object.status?.nodeId ?? "") === (e.previous?.status?.nodeId ?? "") ? [] : (e.object.spec?.disks ?? []).map((d) => d.volumeId).filter((x) => x !== ""))),
      ],
      keys: async function* () {
        for await (const v of allOf(volumes)) yield v.id;
      },
      reconcile: async (id) => {
        const v = await volumes.get(id);
        if (!v) return;
        const state = v.status?.state ?? VolumeState.UNSPECIFIED;
        const pool = await deps.store.of(STORAGE_POOL_KIND).get(v.spec?.poolId ?? "");
        if (v.deletionRequestedAt) {
          if (!v.finalizers.includes(VOLUME_FINALIZER)) return;
          if (pool) {
            if (state !== VolumeState.DELETING) await writeStatus(id, (cur) => void (cur.status!.state = VolumeState.DELETING));
            try {
              const storage = deps.storages.of(await nodeFor(v, pool));
              // The service refused this delete while clones needed it, unless forced: clones still there mean force.
              let forced = false;
              for await (const c of allOf(volumes, { where: { source_volume_id: v.id } })) forced ||= c.id !== v.id;
              await storage.deleteVolume({ poolId: pool.id, volumeId: v.id, force: forced });
            } catch (err) {
              if (!(err instanceof QuantixError && err.code === "not_found")) return fail(v, "Delete", err);
            }
          }
          // The update that drops the last finalizer deletes the volume, its quota released with it.
          await ledger.update(
            VOLUME_KIND,
            id,
            (cur) => {
              if (!cur.finalizers.includes(VOLUME_FINALIZER)) return undefined;
              cur.finalizers = cur.finalizers.filter((f) => f !== VOLUME_FINALIZER);
              return cur;
            },
            volumeCharging(ledger),
            { actor: VOLUME_CONTROLLER },
          ).catch((err: unknown) => {
            if (!(err instanceof QuantixError && err.code === "not_found")) throw err;
          });
          return;
        }
        if (!pool) return fail(v, "Create", new QuantixError("not_found", `storage pool '${v.spec?.poolId}' not found`));
        // A VM's own new disk in a local pool is made on the node the scheduler places the VM on.
        if ((state === VolumeState.PENDING || state === VolumeState.UNSPECIFIED) && (v.spec?.ownerVmId ?? "") !== "" && (v.status?.nodeId ?? "") === "" && isLocalPool(pool.spec?.type ?? 0)) {
          const owner = await deps.store.of(VM_KIND).get(v.spec!.ownerVmId);
          const placed = owner?.status?.nodeId ?? "";
          if (placed === "") return wait(v, { reason: "WaitingForVm", message: `made on the node VM '${v.spec!.ownerVmId}' is placed on, once the scheduler has placed it` });
          const pinned = await writeStatus(id, (cur) => void (cur.status!.nodeId = placed));
          if (pinned) return;
        }
        let node: Node;
        try {
          node = await nodeFor(v, pool);
        } catch (err) {
          return fail(v, "Schedule", err);
        }
        if (state === VolumeState.PENDING || state === VolumeState.UNSPECIFIED) {
          // Bound before anything is made: from now on its file may exist, and deleting it waits for the finalizer.
          await writeStatus(id, (cur) => {
            cur.status!.state = VolumeState.CREATING;
            if (isLocalPool(pool.spec?.type ?? 0)) cur.status!.nodeId = node.id;
          });
          return;
        }
        const storage = deps.storages.of(node);
        const ref = { poolId: pool.id, volumeId: v.id };
        const want = (v.spec?.sizeGib ?? 0n) * GIB;
        let info: NodeVolume | undefined;
        let step = "Create";
        try {
          info = await storage.volumeInfo(ref);
          if (!info) {
            if (state !== VolumeState.CREATING && !(state === VolumeState.ERROR && (v.status?.virtualSizeBytes ?? 0n) === 0n)) {
              return fail(v, "Observe", new QuantixError("failed_precondition", `the file of volume '${v.id}' is missing on node '${node.id}'`));
            }
            const src = v.spec?.source?.source;
            if (src?.case === "imageId") {
              // The image's copy on this node and pool is the clone's source; the image controller makes it.
              const waiting = await imageCopyMissing(deps.store, src.value, { nodeId: isLocalPool(pool.spec?.type ?? 0) ? node.id : "", poolId: pool.id });
              if (waiting?.reason === "ImageNotFound") return fail(v, "Create", new QuantixError("not_found", waiting.message));
              if (waiting) return wait(v, waiting);
            }
            const source = src?.case === "imageId" ? { volumeId: src.value, linked: v.spec?.source?.linked ?? false } : await sourceOf(v);
            info = await storage.createVolume({ ...ref, format: v.spec?.format === VolumeFormat.RAW ? "raw" : "qcow2", sizeBytes: want, ...(source ? { source } : {}) });
          }
          if (info.virtualSizeBytes < want) {
            step = "Resize";
            await writeStatus(id, (cur) => void (cur.status!.state = VolumeState.RESIZING));
            info = await storage.resizeVolume({ ...ref, sizeBytes: want });
          }
        } catch (err) {
          return fail(v, step, err);
        }
        const observed = info;
        const nowMs = deps.clock.now();
        await writeStatus(id, (cur) => {
          const s = cur.status!;
          s.state = s.attachments.length > 0 ? VolumeState.IN_USE : VolumeState.AVAILABLE;
          s.usedBytes = observed.actualSizeBytes;
          s.virtualSizeBytes = observed.virtualSizeBytes;
          s.errorMessage = "";
          s.progressPercent = 0;
          s.observedGeneration = cur.generation;
          s.conditions = setCondition(s.conditions, { type: "Ready", status: true, reason: "Available", message: `${observed.virtualSizeBytes} bytes on node '${node.id}'`, generation: cur.generation }, nowMs);
        });
      },
      resyncMs: deps.resyncMs ?? 60_000,
      concurrency: 4,
    },
    { clock: deps.clock, ...(deps.timers ? { timers: deps.timers } : {}), log: deps.log, revision: () => deps.store.revision() },
  );
}
