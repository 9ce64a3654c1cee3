import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ImageCopySchema, ImageFormat, ImageState, ImageSpecSchema, type Image, type ImageStatus } from "@quantix/api/gen/Quantixkvm/storage/v1/image_pb.js";
import type { Clock } from "@quantix/core";
import { VolumeFormat, type StoragePool } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import type { NodeImportProgress, NodeVolume, NodeVolumeFormat } from "../storage/node-storage.js";
import { setCondition } from "./conditions.js";

/** A progress write at most this often, or after this many more bytes (phase changes are always written). */
export const PROGRESS_WRITE_MS = 1000;
export const PROGRESS_WRITE_BYTES = 4n << 20n;

/** The node-side phase as the image's state: downloading is IMPORTING; verifying and converting are CONVERTING. */
const STATES: Record<NodeImportProgress["phase"], ImageState> = {
  downloading: ImageState.IMPORTING,
  verifying: ImageState.CONVERTING,
  converting: ImageState.CONVERTING,
  ready: ImageState.AVAILABLE,
};

/** The agent's detected format names (qemu-img's) as the API's. */
const DETECTED: Record<string, ImageFormat> = {
  qcow2: ImageFormat.QCOW2,
  raw: ImageFormat.RAW,
  vmdk: ImageFormat.VMDK,
  vdi: ImageFormat.VDI,
  vhdx: ImageFormat.VHDX,
  vpc: ImageFormat.VHD,
  iso: ImageFormat.ISO,
};

/** The detected-format name (qemu-img's) of a declared API format; "" for UNSPECIFIED. */
export function formatName(f: ImageFormat): string {
  return Object.entries(DETECTED).find(([, v]) => v === f)?.[0] ?? "";
}

/** The format an image is stored in on its node: raw for an ISO or in a pool whose default format is RAW, else qcow2. */
export function storedFormatOf(i: Image, pool: StoragePool): NodeVolumeFormat {
  return i.spec?.diskFormat === ImageFormat.ISO || pool.spec?.defaultVolumeFormat === VolumeFormat.RAW ? "raw" : "qcow2";
}

/** The API's format of a detected one (UNSPECIFIED for one the node did not name). */
export function detectedFormat(name: string): ImageFormat {
  return DETECTED[name] ?? ImageFormat.UNSPECIFIED;
}

/** Overall progress: the download is 0-80 %, checks 85 %, conversion 90 %, ready 100 %. */
function percentOf(p: NodeImportProgress): number {
  switch (p.phase) {
    case "downloading":
      return p.bytesTotal > 0n ? Number((p.bytesDone * 80n) / p.bytesTotal) : 0;
    case "verifying":
      return 85;
    case "converting":
      return 90;
    case "ready":
      return 100;
  }
}

/**
 * Decides which progress steps of an import are written to the image's status: every
 * change of phase, and within a phase at most every PROGRESS_WRITE_MS or
 * PROGRESS_WRITE_BYTES (a fast download does not turn into a write per chunk).
 */
export class ProgressThrottle {
  private phase = "";
  private atMs = 0;
  private bytes = 0n;

  constructor(private readonly clock: Clock) {}

  due(p: NodeImportProgress): boolean {
    const now = this.clock.now();
    if (p.phase === this.phase && now - this.atMs < PROGRESS_WRITE_MS && p.bytesDone - this.bytes < PROGRESS_WRITE_BYTES) return false;
    this.phase = p.phase;
    this.atMs = now;
    this.bytes = p.bytesDone;
    return true;
  }
}

/** Writes one progress step into an image's status (not the ready step: see `writeReady`). */
export function writeProgress(s: ImageStatus, p: NodeImportProgress, generation: bigint, nowMs: number): void {
  s.state = STATES[p.phase];
  s.transferredBytes = p.bytesDone;
  s.sourceBytes = p.bytesTotal;
  s.importProgressPercent = percentOf(p);
  s.errorMessage = "";
  if (p.sha256 !== "") s.checksumSha256 = p.sha256;
  if (p.detectedFormat !== "") s.detectedFormat = detectedFormat(p.detectedFormat);
  const reason = p.phase[0]!.toUpperCase() + p.phase.slice(1);
  s.conditions = setCondition(s.conditions, { type: "Imported", status: false, reason, message: `${p.phase}: ${p.bytesDone} bytes${p.bytesTotal > 0n ? ` of ${p.bytesTotal}` : ""}`, generation }, nowMs);
}

/** The image AVAILABLE: what the node measured, its first copy, the checksum verified or recorded. */
export function writeReady(i: Image, p: NodeImportProgress, volume: NodeVolume, copy: { nodeId: string; poolId: string }, generation: bigint, nowMs: number): void {
  const s = i.status!;
  writeProgress(s, p, generation, nowMs);
  s.state = ImageState.AVAILABLE;
  s.sizeBytes = volume.actualSizeBytes;
  s.virtualSizeBytes = volume.virtualSizeBytes;
  s.storedFormat = detectedFormat(p.detectedFormat) === ImageFormat.ISO ? ImageFormat.ISO : volume.format === "raw" ? ImageFormat.RAW : ImageFormat.QCOW2;
  s.importedAt = timestampFromMs(nowMs);
  s.observedGeneration = generation;
  s.copies = [...s.copies.filter((c) => c.nodeId !== copy.nodeId || c.poolId !== copy.poolId), create(ImageCopySchema, { ...copy, createdAt: timestampFromMs(nowMs) })];
  const expected = (i.spec ?? create(ImageSpecSchema)).source?.expectedSha256 ?? "";
  s.conditions = setCondition(s.conditions, { type: "Imported", status: true, reason: "Ready", message: `${volume.virtualSizeBytes} bytes (${p.detectedFormat}) on node '${copy.nodeId}'`, generation }, nowMs);
  s.conditions = setCondition(
    s.conditions,
    expected !== "" ? { type: "ChecksumVerified", status: true, reason: "Matched", message: `sha256 ${p.sha256} as expected`, generation } : { type: "ChecksumVerified", status: false, reason: "NotGiven", message: `no expected_sha256: sha256 ${p.sha256} recorded, not verified`, generation },
    nowMs,
  );
  s.conditions = setCondition(s.conditions, { type: "Ready", status: true, reason: "Available", message: "volumes can be made from the image", generation }, nowMs);
}

/** The image in ERROR for its generation (not retried until ImportImage asks), with the reason; what was received so far stays visible. */
export function writeError(s: ImageStatus, reason: string, message: string, generation: bigint, nowMs: number): void {
  s.state = ImageState.ERROR;
  s.errorMessage = message;
  s.importProgressPercent = 0;
  s.observedGeneration = generation;
  s.conditions = setCondition(s.conditions, { type: "Imported", status: false, reason, message, generation }, nowMs);
  s.conditions = setCondition(s.conditions, { type: "Ready", status: false, reason, message, generation }, nowMs);
}
