import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ImageCopySchema, ImageFormat, ImageState, type Image } from "@quantix/api/gen/Quantixkvm/storage/v1/image_pb.js";
import type { StoragePool } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { VolumeState } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { allOf, IMAGE_CONTROLLER, IMAGE_FINALIZER, IMAGE_KIND, isLocalPool, QuantixError, STORAGE_POOL_KIND, VOLUME_KIND, type Clock, type Resource, type Store, type Timers } from "@quantix/core";
import type { Logger } from "@quantix/rpc";
import { Controller, watching } from "../runtime/controller.js";
import type { NodeStorages } from "../storage/node-storages.js";
import type { NodeImportProgress, NodeStorage, NodeVolumeFormat } from "../storage/node-storage.js";
import { setCondition } from "./conditions.js";
import { detectedFormat, ProgressThrottle, storedFormatOf, writeError, writeProgress, writeReady } from "./image-import.js";
import { reasonOf, volumeNode } from "./storage-steps.js";
import { imageSourceVolume } from "../services/image-source.js";
import { poolNodes } from "./storage-pool-controller.js";

type I = Image & Resource;

/** How soon a failed copy to a node is tried again. */
const COPY_RETRY_MS = 15_000;

/** Where a copy of an image is (or is to be): a node ("" for a pool every node shares) and a pool. */
interface Target {
  readonly nodeId: string;
  readonly poolId: string;
}

const keyOf = (id: string, t: Target) => `${id}/${t.nodeId}/${t.poolId}`;

/**
 * Drives images, level-based, through NodeStorage.importImage (the agent's ImportVolume):
 * an image QUEUED, or left IMPORTING/CONVERTING by a control plane that stopped, or in
 * ERROR with a newer generation (ImportImage's retry), is imported into its pool on a node
 * of the pool, its progress written at a bounded rate, then AVAILABLE with what the node
 * measured, or ERROR with the node's reason. Once AVAILABLE, a copy is made on each node
 * (and pool) where a volume is being made from the image and none is yet (the per-node
 * cache, status.copies; the volume controller waits for it). A deleted image's import is
 * cancelled and its copies removed before its finalizer goes. The imports run beside the
 * reconcile passes (a pass never waits for a download), one per image and target; they
 * stop with the controller and start again on the next leader.
 */
export function imageController(deps: { store: Store; storages: NodeStorages; clock: Clock; timers?: Timers; log: Logger; resyncMs?: number }): { start(): Promise<void>; stop(): Promise<void>; controller: Controller } {
  const images = deps.store.of(IMAGE_KIND);
  const running = new Map<string, { ac: AbortController; done: Promise<void> }>();
  const failedCopies = new Map<string, number>();

  /** Writes the status `change` makes (nothing when it changes nothing); undefined when the image is gone. */
  async function writeStatus(id: string, change: (i: I) => void): Promise<I | undefined> {
    try {
      return await images.update(
        id,
        (cur) => {
          const before = JSON.stringify(cur.status ?? {}, big);
          change(cur);
          return JSON.stringify(cur.status ?? {}, big) === before ? undefined : cur;
        },
        { actor: IMAGE_CONTROLLER },
      );
    } catch (err) {
      if (err instanceof QuantixError && err.code === "not_found") return undefined;
      throw err;
    }
  }

  /** Runs one import (the image's first, or a copy for a node) beside the passes; its end asks for a pass. */
  function start(i: I, pool: StoragePool, target: Target, first: boolean): void {
    const key = keyOf(i.id, target);
    const ac = new AbortController();
    const done = importOne(i, pool, target, first, ac.signal)
      .catch((err: unknown) => deps.log.log("warn", "an image import's status write failed", { image_id: i.id, error: String(err) }))
      .finally(() => {
        running.delete(key);
        controller.enqueue(i.id);
      });
    running.set(key, { ac, done });
  }

  async function importOne(i: I, pool: StoragePool, target: Target, first: boolean, signal: AbortSignal): Promise<void> {
    const generation = i.generation;
    const url = i.spec?.source?.source.case === "url" ? i.spec.source.source.value : "";
    // A copy for a node must be the same data: the first import's digest, verified.
    const sha256 = first ? (i.spec?.source?.expectedSha256 ?? "") : (i.status?.checksumSha256 ?? "");
    const format = storedFormatOf(i, pool);
    const throttle = new ProgressThrottle(deps.clock);
    try {
      const src = i.spec?.source?.source;
      // An image from a volume or a snapshot is copied on the volume's node, checked again now.
      const from = first && (src?.case === "volumeId" || src?.case === "snapshotId") ? await imageSourceVolume(deps.store, src, i.projectId) : undefined;
      const node = await volumeNode(deps.store, deps.storages, from ? (from.volume.status?.nodeId ?? "") : target.nodeId, pool);
      const storage = deps.storages.of(node);
      const at = { nodeId: isLocalPool(pool.spec?.type ?? 0) ? node.id : "", poolId: pool.id };
      if (first) {
        const nowMs = deps.clock.now();
        // A retry starts clean: the last error goes, the phase is the download's (or the copy's).
        const marked = await writeStatus(i.id, (cur) => {
          if (cur.deletionRequestedAt) return;
          const st = cur.status!;
          st.state = ImageState.IMPORTING;
          st.errorMessage = "";
          st.transferredBytes = 0n;
          st.importProgressPercent = 0;
          st.conditions = setCondition(st.conditions, from ? { type: "Imported", status: false, reason: "Copying", message: `copying volume '${from.node.volumeId}'${from.node.snapshotId ? ` at snapshot '${from.node.snapshotId}'` : ""} on node '${node.id}'`, generation } : { type: "Imported", status: false, reason: "Downloading", message: `downloading on node '${node.id}'`, generation }, nowMs);
        });
        // Deleted before anything reached a node (it went at once, with no finalizer to wait for): nothing to import.
        if (!marked || marked.deletionRequestedAt || marked.status?.state !== ImageState.IMPORTING) return;
      }
      if (!first && src?.case !== "url") {
        // No URL to fetch again (uploaded, or made from a volume): the stored file of a node that has it, streamed into this one's upload.
        await copyFromHolder(i, pool.id, storage, format, signal);
        await recordCopy(i.id, at);
        failedCopies.delete(keyOf(i.id, target));
        return;
      }
      if (from) {
        // A flat copy (qemu-img convert; at a snapshot with -l snapshot.name=) into the image's volume, then its file's sha256.
        const volume = await storage.createVolume({ poolId: pool.id, volumeId: i.id, format, sizeBytes: 0n, source: from.node });
        const sha256 = await storage.volumeSha256({ poolId: pool.id, volumeId: i.id });
        const expected = i.spec?.source?.expectedSha256 ?? "";
        if (expected !== "" && expected !== sha256) {
          await storage.deleteVolume({ poolId: pool.id, volumeId: i.id, force: false }).catch(() => undefined);
          throw new QuantixError("failed_precondition", `sha256 mismatch: expected ${expected}, the copy is ${sha256}`);
        }
        const detected = (await storage.volumeInfo({ poolId: pool.id, volumeId: from.node.volumeId }))?.format ?? volume.format;
        const p: NodeImportProgress = { phase: "ready", bytesDone: volume.actualSizeBytes, bytesTotal: volume.actualSizeBytes, sha256, detectedFormat: detected, volume };
        const nowMs = deps.clock.now();
        await writeStatus(i.id, (cur) => writeReady(cur, p, volume, at, generation, nowMs));
        return;
      }
      let ready: NodeImportProgress | undefined;
      for await (const p of storage.importImage({ poolId: pool.id, volumeId: i.id, format, url, sha256 }, signal)) {
        if (p.phase === "ready") ready = p;
        else if (first && throttle.due(p)) {
          const nowMs = deps.clock.now();
          await writeStatus(i.id, (cur) => writeProgress(cur.status!, p, generation, nowMs));
        }
      }
      // Written once the node's stream has ended: by then the node has removed its temporary files.
      if (!ready) throw new QuantixError("internal", `node '${node.id}' ended the import without the image`);
      const p = ready;
      const declared = i.spec?.diskFormat ?? ImageFormat.UNSPECIFIED;
      if (first && declared !== ImageFormat.UNSPECIFIED && declared !== detectedFormat(p.detectedFormat)) {
        await storage.deleteVolume({ poolId: pool.id, volumeId: i.id, force: false }).catch(() => undefined);
        throw new QuantixError("failed_precondition", `the data is ${p.detectedFormat}, not the ${ImageFormat[declared]} that spec.disk_format declares`);
      }
      const volume = p.volume ?? (await storage.volumeInfo({ poolId: pool.id, volumeId: i.id }));
      if (!volume) throw new QuantixError("internal", `node '${node.id}' reported the import ready without its volume`);
      const nowMs = deps.clock.now();
      if (first) await writeStatus(i.id, (cur) => writeReady(cur, p, volume, at, generation, nowMs));
      else await recordCopy(i.id, at);
      failedCopies.delete(keyOf(i.id, target));
    } catch (err) {
      if (signal.aborted) return;
      const { reason, message } = reasonOf(first ? "Import" : "Copy", err, "image");
      if (!(err instanceof QuantixError)) deps.log.log("warn", "an image import failed on its node", { image_id: i.id, error: String(err) });
      const nowMs = deps.clock.now();
      if (first) await writeStatus(i.id, (cur) => writeError(cur.status!, reason, message, generation, nowMs));
      else {
        failedCopies.set(keyOf(i.id, target), nowMs);
        await writeStatus(i.id, (cur) => void (cur.status!.conditions = setCondition(cur.status!.conditions, { type: "Copied", status: false, reason, message: `node '${target.nodeId}' pool '${target.poolId}': ${message}`, generation: cur.generation }, nowMs)));
      }
    }
  }

  /** Records a copy of the image made on a node and pool (status.copies, Copied=True). */
  async function recordCopy(imageId: string, at: { nodeId: string; poolId: string }): Promise<void> {
    const nowMs = deps.clock.now();
    await writeStatus(imageId, (cur) => {
      cur.status!.copies = [...cur.status!.copies.filter((c) => c.nodeId !== at.nodeId || c.poolId !== at.poolId), create(ImageCopySchema, { ...at, createdAt: timestampFromMs(nowMs) })];
      cur.status!.conditions = setCondition(cur.status!.conditions, { type: "Copied", status: true, reason: "Copied", message: `copied to node '${at.nodeId}' pool '${at.poolId}'`, generation: cur.generation }, nowMs);
    });
  }

  /**
   * Copies an image that has no URL from a node holding it into `storage`: the holder's
   * file (ReadVolume) streamed into the target's upload (UploadVolume: checked against the
   * holder's file's sha256 and its format, inspected and converted as any upload).
   */
  async function copyFromHolder(i: I, poolId: string, storage: NodeStorage, format: NodeVolumeFormat, signal: AbortSignal): Promise<void> {
    const holder = i.status?.copies[0];
    if (!holder) throw new QuantixError("failed_precondition", `image '${i.id}' has no copy on any node to copy from`);
    const holderPool = await deps.store.of(STORAGE_POOL_KIND).get(holder.poolId);
    if (!holderPool) throw new QuantixError("failed_precondition", `the pool '${holder.poolId}' of image '${i.id}''s copy no longer exists`);
    const from = deps.storages.of(await volumeNode(deps.store, deps.storages, holder.nodeId, holderPool));
    const ref = { poolId: holder.poolId, volumeId: i.id };
    const info = await from.volumeInfo(ref);
    if (!info) throw new QuantixError("failed_precondition", `image '${i.id}''s copy on node '${holder.nodeId}' pool '${holder.poolId}' is missing`);
    const sha256 = await from.volumeSha256(ref);
    await storage.uploadImage({ poolId, volumeId: i.id, format, sizeBytes: 0n, sha256, expectedFormat: info.format }, from.readVolume(ref, signal), signal);
  }

  /** Where volumes being made from the image need a copy of it that is not there yet. */
  async function wantedCopies(i: I): Promise<Target[]> {
    const out = new Map<string, Target>();
    for await (const v of allOf(deps.store.of(VOLUME_KIND), { where: { source_image_id: i.id } })) {
      if (v.deletionRequestedAt || v.status?.state !== VolumeState.CREATING) continue;
      const t = { nodeId: v.status.nodeId, poolId: v.spec?.poolId ?? "" };
      if (!i.status?.copies.some((c) => c.nodeId === t.nodeId && c.poolId === t.poolId)) out.set(keyOf(i.id, t), t);
    }
    return [...out.values()];
  }

  /** Removes every copy the image may have: those recorded, and any in its own pool on the pool's nodes (an import that ended as it was cancelled). */
  async function removeCopies(i: I): Promise<void> {
    const forced = (await allOf(deps.store.of(VOLUME_KIND), { where: { source_image_id: i.id } }).next()).done !== true;
    const remove = async (t: Target) => {
      const pool = await deps.store.of(STORAGE_POOL_KIND).get(t.poolId);
      if (!pool) return;
      const storage = deps.storages.of(await volumeNode(deps.store, deps.storages, t.nodeId, pool));
      await storage.deleteVolume({ poolId: pool.id, volumeId: i.id, force: forced }).catch((err: unknown) => {
        if (!(err instanceof QuantixError && err.code === "not_found")) throw err;
      });
    };
    // The recorded copies must go; the probes of the own pool's nodes are a best effort (a node gone holds nothing to remove).
    for (const c of i.status?.copies ?? []) await remove(c);
    const own = await deps.store.of(STORAGE_POOL_KIND).get(i.spec?.poolId ?? "");
    if (own && isLocalPool(own.spec?.type ?? 0)) for (const n of await poolNodes(deps.store, own)) await remove({ nodeId: n.id, poolId: own.id }).catch(() => undefined);
  }

  async function reconcile(id: string): Promise<{ requeueAfterMs: number } | void> {
    const i = await images.get(id);
    const mine = [...running.entries()].filter(([k]) => k.startsWith(`${id}/`));
    if (!i || i.deletionRequestedAt) {
      for (const [, r] of mine) r.ac.abort();
      await Promise.all(mine.map(([, r]) => r.done));
      if (!i?.finalizers.includes(IMAGE_FINALIZER)) return;
      await writeStatus(id, (cur) => void (cur.status!.state = ImageState.DELETING));
      try {
        await removeCopies(i);
      } catch (err) {
        const { reason, message } = reasonOf("Delete", err, "image");
        const nowMs = deps.clock.now();
        await writeStatus(id, (cur) => void (cur.status!.conditions = setCondition(cur.status!.conditions, { type: "Ready", status: false, reason, message, generation: cur.generation }, nowMs)));
        return { requeueAfterMs: COPY_RETRY_MS };
      }
      await images
        .update(id, (cur) => (cur.finalizers.includes(IMAGE_FINALIZER) ? ((cur.finalizers = cur.finalizers.filter((f) => f !== IMAGE_FINALIZER)), cur) : undefined), { actor: IMAGE_CONTROLLER })
        .catch((err: unknown) => {
          if (!(err instanceof QuantixError && err.code === "not_found")) throw err;
        });
      return;
    }
    const state = i.status?.state ?? ImageState.UNSPECIFIED;
    const current = (i.status?.observedGeneration ?? 0n) >= i.generation;
    const pool = await deps.store.of(STORAGE_POOL_KIND).get(i.spec?.poolId ?? "");
    if (state === ImageState.AVAILABLE) {
      // A metadata update: nothing to import again.
      if (!current) await writeStatus(id, (cur) => void (cur.status!.observedGeneration = cur.generation));
      if (!pool) return;
      let retryIn: number | undefined;
      for (const t of await wantedCopies(i)) {
        const failedAt = failedCopies.get(keyOf(id, t));
        const wait = failedAt === undefined ? 0 : failedAt + COPY_RETRY_MS - deps.clock.now();
        if (wait > 0) retryIn = Math.min(retryIn ?? wait, wait);
        else if (!running.has(keyOf(id, t))) {
          const copyPool = await deps.store.of(STORAGE_POOL_KIND).get(t.poolId);
          if (copyPool) start(i, copyPool, t, false);
        }
      }
      return retryIn === undefined ? undefined : { requeueAfterMs: retryIn };
    }
    if (i.spec?.source?.source.case === "upload") {
      // UploadImage's handler imports it (only it has the data). A retry (ImportImage on ERROR) waits for the upload again.
      if (state === ImageState.ERROR && !current) {
        const nowMs = deps.clock.now();
        await writeStatus(id, (cur) => {
          const st = cur.status!;
          st.state = ImageState.QUEUED;
          st.errorMessage = "";
          st.observedGeneration = cur.generation;
          st.conditions = setCondition(st.conditions, { type: "Imported", status: false, reason: "WaitingForUpload", message: "send the data with UploadImage", generation: cur.generation }, nowMs);
        });
      }
      return;
    }
    if (state === ImageState.ERROR && current) return;
    if (mine.length > 0) return;
    if (!pool) {
      const nowMs = deps.clock.now();
      await writeStatus(id, (cur) => writeError(cur.status!, "ImportNotFound", `storage pool '${i.spec?.poolId}' not found`, cur.generation, nowMs));
      return;
    }
    start(i, pool, { nodeId: "", poolId: pool.id }, true);
  }

  const controller = new Controller(
    {
      name: IMAGE_CONTROLLER,
      watches: [
        watching(images, (e) => [e.object.id]),
        // A volume being made from an image may need a copy of it on its node.
        watching(deps.store.of(VOLUME_KIND), (e) => (e.object.spec?.source?.source.case === "imageId" ? [e.object.spec.source.source.value] : [])),
      ],
      keys: async function* () {
        for await (const i of allOf(images)) yield i.id;
      },
      reconcile,
      resyncMs: deps.resyncMs ?? 60_000,
      concurrency: 4,
    },
    { clock: deps.clock, ...(deps.timers ? { timers: deps.timers } : {}), log: deps.log, revision: () => deps.store.revision() },
  );
  return {
    controller,
    start: () => controller.start(),
    // Imports end with the controller (the next leader starts them again from the start).
    stop: async () => {
      await controller.stop();
      for (const r of running.values()) r.ac.abort();
      await Promise.all([...running.values()].map((r) => r.done));
    },
  };
}

function big(_k: string, v: unknown): unknown {
  return typeof v === "bigint" ? v.toString() : v;
}
