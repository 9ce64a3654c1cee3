import { ImageFormat, ImageState, type Image } from "@quantix/api/gen/Quantixkvm/storage/v1/image_pb.js";
import { Code, ConnectError } from "@connectrpc/connect";
import type { UploadImageRequest } from "@quantix/api/gen/Quantixkvm/storage/v1/image_service_pb.js";
import { IMAGE_KIND, IMAGE_UPLOAD, invalidArgument, isLocalPool, notFound, QuantixError, STORAGE_POOL_KIND, type Clock, type Resource, type Store } from "@quantix/core";
import type { Logger } from "@quantix/rpc";
import { setCondition } from "../controllers/conditions.js";
import { formatName, ProgressThrottle, storedFormatOf, writeError, writeProgress, writeReady } from "../controllers/image-import.js";
import { reasonOf, volumeNode, writeStatusOf } from "../controllers/storage-steps.js";
import { requireWellFormedId } from "../resources/resource-service.js";
import type { NodeImportProgress } from "../storage/node-storage.js";
import type { NodeStorages } from "../storage/node-storages.js";

type I = Image & Resource;

/**
 * The bounds of UploadImage's data: a chunk of 1 byte to 4 MiB less 16 bytes (a request
 * message is at most 4 MiB with its framing, ADR 0002's readMaxBytes), at most 1 TiB in
 * all (the agent's UploadVolume limit).
 */
export const UPLOAD_IMAGE_LIMITS = { maxChunkBytes: (4 << 20) - 16, maxBytes: 1n << 40n } as const;

/**
 * UploadImage: the data of an image with an upload source, received here (the replica the
 * client reached; only it has the bytes) and forwarded as it comes to a node of the
 * image's pool (NodeStorage.uploadImage: the agent's UploadVolume, or the agent's code on
 * the demo's simulated hosts), which hashes, verifies, inspects and converts it as an
 * import. This handler writes the image's status while it runs (actor `image-upload`):
 * QUEUED → IMPORTING (receiving: transferred of total bytes) → CONVERTING (the node
 * verifies and converts) → AVAILABLE; a failure of the data itself (sha256 mismatch,
 * refused image, no room) turns it to ERROR with the node's reason; a failure of the
 * stream (short, too long, a message out of place, cancelled) puts it back to QUEUED with
 * the reason, so the upload can be sent again. The node leaves no partial file either way.
 */
export class ImageUploads {
  constructor(private readonly deps: { store: Store; storages: NodeStorages; clock: Clock; log: Logger }) {}

  async upload(reqs: AsyncIterable<UploadImageRequest>, signal: AbortSignal): Promise<Image> {
    const it = reqs[Symbol.asyncIterator]();
    const first = await it.next();
    if (first.done || first.value.content.case !== "header") {
      throw invalidArgument([{ field: "header", reason: "REQUIRED", description: "the first message must carry the header (image_id, size_bytes); the data follows in chunks" }]);
    }
    const h = first.value.content.value;
    requireWellFormedId("header.image_id", h.imageId);
    const images = this.deps.store.of(IMAGE_KIND);
    const i = await images.get(h.imageId);
    if (!i) throw notFound("image", h.imageId);
    const source = i.spec?.source?.source;
    if (source?.case !== "upload") throw new QuantixError("failed_precondition", `image '${i.id}' is imported from its ${source?.case ?? "missing"} source, not uploaded: UploadImage takes images created with an upload source`);
    const created = source.value.sizeBytes;
    if (h.sizeBytes > UPLOAD_IMAGE_LIMITS.maxBytes) throw invalidArgument([{ field: "header.size_bytes", reason: "OUT_OF_RANGE", description: `must be at most ${UPLOAD_IMAGE_LIMITS.maxBytes} bytes` }]);
    if (h.sizeBytes !== 0n && created !== 0n && h.sizeBytes !== created) {
      throw invalidArgument([{ field: "header.size_bytes", reason: "CONFLICT", description: `must be 0 or the ${created} bytes the image's spec.source.upload.size_bytes declares` }]);
    }
    const declared = h.sizeBytes !== 0n ? h.sizeBytes : created;
    refuseState(i);
    const pool = await this.deps.store.of(STORAGE_POOL_KIND).get(i.spec?.poolId ?? "");
    if (!pool) throw new QuantixError("failed_precondition", `storage pool '${i.spec?.poolId}' of image '${i.id}' not found`);
    const node = await volumeNode(this.deps.store, this.deps.storages, "", pool);
    const storage = this.deps.storages.of(node);
    const at = { nodeId: isLocalPool(pool.spec?.type ?? 0) ? node.id : "", poolId: pool.id };

    // Claim the image (one upload at a time): QUEUED → IMPORTING, or refused as it is now.
    const generation = i.generation;
    const claimed = await this.write(i.id, (cur) => {
      refuseState(cur);
      const st = cur.status!;
      st.state = ImageState.IMPORTING;
      st.errorMessage = "";
      st.transferredBytes = 0n;
      st.sourceBytes = declared;
      st.importProgressPercent = 0;
      st.conditions = setCondition(st.conditions, { type: "Imported", status: false, reason: "Uploading", message: `receiving the upload on node '${node.id}'`, generation }, this.deps.clock.now());
    });
    if (!claimed) throw notFound("image", i.id);

    // A volume an earlier upload left (a control plane stopped between the node's end and the status write) goes first: an upload starts over.
    await storage.deleteVolume({ poolId: pool.id, volumeId: i.id, force: false }).catch((err: unknown) => {
      if (!(err instanceof QuantixError && err.code === "not_found")) throw err;
    });

    const ac = new AbortController();
    const onAbort = () => ac.abort();
    signal.addEventListener("abort", onAbort, { once: true });
    const throttle = new ProgressThrottle(this.deps.clock);
    let done = 0n;
    // Set when the client's stream, not the node, ended the upload.
    let streamError: Error | undefined;
    const step = (phase: NodeImportProgress["phase"]): NodeImportProgress => ({ phase, bytesDone: done, bytesTotal: declared, sha256: "", detectedFormat: "" });
    const progress = async (p: NodeImportProgress) => {
      const nowMs = this.deps.clock.now();
      const now = await this.write(i.id, (cur) => {
        writeProgress(cur.status!, p, generation, nowMs);
        cur.status!.conditions = setCondition(cur.status!.conditions, { type: "Imported", status: false, reason: p.phase === "downloading" ? "Uploading" : "Verifying", message: `${p.phase === "downloading" ? "uploading" : "verifying"}: ${p.bytesDone} bytes${p.bytesTotal > 0n ? ` of ${p.bytesTotal}` : ""}`, generation }, nowMs);
      });
      // DeleteImage meanwhile: the upload stops (the node removes what it wrote).
      if (!now || now.deletionRequestedAt) ac.abort();
    };
    async function* chunks(): AsyncGenerator<Uint8Array> {
      try {
        for (;;) {
          const r = await it.next();
          if (r.done) break;
          const c = r.value.content;
          if (c.case !== "chunk") throw invalidArgument([{ field: "header", reason: "NOT_ALLOWED", description: "only the first message carries the header; the others carry chunks" }]);
          if (c.value.length === 0 || c.value.length > UPLOAD_IMAGE_LIMITS.maxChunkBytes) throw invalidArgument([{ field: "chunk", reason: "OUT_OF_RANGE", description: `must be 1 to ${UPLOAD_IMAGE_LIMITS.maxChunkBytes} bytes, not ${c.value.length}` }]);
          done += BigInt(c.value.length);
          if (declared > 0n && done > declared) throw new QuantixError("out_of_range", `the upload carries more than the ${declared} bytes declared (header.size_bytes or spec.source.upload.size_bytes)`);
          if (done > UPLOAD_IMAGE_LIMITS.maxBytes) throw new QuantixError("out_of_range", `the upload passed the limit of ${UPLOAD_IMAGE_LIMITS.maxBytes} bytes`);
          yield c.value;
          const p = step("downloading");
          if (throttle.due(p)) await progress(p);
        }
        // A client that went away ends the request stream as if it were complete; the call's signal tells them apart.
        if (signal.aborted) throw new QuantixError("aborted", `the upload was cancelled after ${done} bytes`);
        if (declared > 0n && done < declared) {
          // Ended, not thrown: the node sees the stream end short of the same declared size, removes what it
          // wrote and answers DATA_LOSS, so this call answers once nothing is left (a throw here would cut
          // the node's call and answer while the node still cleans up).
          streamError = new QuantixError("data_loss", `the upload ended after ${done} of the ${declared} bytes declared`);
          return;
        }
        if (done === 0n) throw invalidArgument([{ field: "chunk", reason: "REQUIRED", description: "at least one chunk of data must follow the header" }]);
      } catch (err) {
        // The framework's own refusals (a message above the size limit) keep their code.
        streamError = err instanceof QuantixError || err instanceof ConnectError ? err : new QuantixError("aborted", signal.aborted ? `the upload was cancelled after ${done} bytes` : `the upload stream broke after ${done} bytes`, [], { cause: err });
        throw streamError;
      }
      // Every byte forwarded: the node verifies and converts.
      await progress(step("verifying"));
    }

    try {
      const r = await storage.uploadImage({ poolId: pool.id, volumeId: i.id, format: storedFormatOf(i, pool), sizeBytes: declared, sha256: i.spec?.source?.expectedSha256 ?? "", expectedFormat: formatName(i.spec?.diskFormat ?? ImageFormat.UNSPECIFIED) }, chunks(), ac.signal);
      if (streamError) {
        // A node that accepted a short stream: what it made does not count.
        await storage.deleteVolume({ poolId: pool.id, volumeId: i.id, force: true }).catch(() => undefined);
        throw streamError;
      }
      if (signal.aborted) {
        // The client went away while the node finished: what it made does not count.
        await storage.deleteVolume({ poolId: pool.id, volumeId: i.id, force: false }).catch(() => undefined);
        throw new QuantixError("aborted", `the upload was cancelled after ${done} bytes`);
      }
      const ready: NodeImportProgress = { phase: "ready", bytesDone: r.bytesReceived, bytesTotal: declared, sha256: r.sha256, detectedFormat: r.detectedFormat, volume: r.volume };
      const nowMs = this.deps.clock.now();
      const end = await this.write(i.id, (cur) => {
        if (cur.deletionRequestedAt) return;
        writeReady(cur, ready, r.volume, at, generation, nowMs);
      });
      if (!end || end.deletionRequestedAt) {
        // Deleted while the node converted: what it made goes too.
        await storage.deleteVolume({ poolId: pool.id, volumeId: i.id, force: true }).catch(() => undefined);
        throw new QuantixError("aborted", `image '${i.id}' was deleted during its upload`);
      }
      return end;
    } catch (err) {
      const nowMs = this.deps.clock.now();
      if (streamError || signal.aborted) {
        // The stream's fault: the image waits for the upload again, saying why.
        const e = streamError ?? new QuantixError("aborted", `the upload was cancelled after ${done} bytes`);
        const { reason, message } = e instanceof ConnectError ? { reason: `Upload${Code[e.code]}`, message: e.rawMessage } : reasonOf("Upload", e, "image");
        await this.write(i.id, (cur) => {
          if (cur.deletionRequestedAt) return;
          const st = cur.status!;
          st.state = ImageState.QUEUED;
          st.errorMessage = message;
          st.importProgressPercent = 0;
          st.conditions = setCondition(st.conditions, { type: "Imported", status: false, reason, message: `${message}; send the upload again`, generation }, nowMs);
        }).catch((werr: unknown) => this.deps.log.log("warn", "an upload's status write failed", { image_id: i.id, error: String(werr) }));
        throw e;
      }
      if (err instanceof QuantixError && err.code === "aborted") throw err;
      // Stopped here because DeleteImage came: that is the reason, not the node's words for the cut stream.
      if (ac.signal.aborted) throw new QuantixError("aborted", `image '${i.id}' was deleted during its upload`);
      const { reason, message } = reasonOf("Upload", err, "image");
      if (!(err instanceof QuantixError)) this.deps.log.log("warn", "an image upload failed on its node", { image_id: i.id, error: String(err) });
      await this.write(i.id, (cur) => {
        if (!cur.deletionRequestedAt) writeError(cur.status!, reason, message, generation, nowMs);
      });
      throw err;
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  /** Writes the status `change` makes as the upload (nothing when it changes nothing); undefined when the image is gone. */
  private write(id: string, change: (i: I) => void): Promise<I | undefined> {
    return writeStatusOf(this.deps.store, IMAGE_KIND, IMAGE_UPLOAD, id, change);
  }
}

/** UploadImage is allowed in QUEUED only (an upload retried after a broken one starts over). */
function refuseState(i: Image): void {
  if (i.deletionRequestedAt) throw new QuantixError("failed_precondition", `image '${i.id}' is being deleted`);
  const s = i.status?.state ?? ImageState.UNSPECIFIED;
  if (s === ImageState.QUEUED) return;
  if (s === ImageState.IMPORTING || s === ImageState.CONVERTING) throw new QuantixError("failed_precondition", `image '${i.id}' is ${ImageState[s]}: an upload of it is in progress`);
  if (s === ImageState.AVAILABLE) throw new QuantixError("failed_precondition", `image '${i.id}' is AVAILABLE: its data is stored and cannot change`);
  throw new QuantixError("failed_precondition", `image '${i.id}' is ${ImageState[s]}: retry it with ImportImage (image_id) to upload again`);
}
