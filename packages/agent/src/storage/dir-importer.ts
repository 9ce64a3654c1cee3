import { NodeStorage } from "./node-storage.js";
import type { VolumeFormatName } from "./volumes.js";

/** One step of an import, with plain fields (the control plane's NodeImportProgress, without the volume). */
export interface DirImportStep {
  readonly phase: "downloading" | "verifying" | "converting" | "ready";
  readonly bytesDone: bigint;
  readonly bytesTotal: bigint;
  readonly sha256: string;
  readonly detectedFormat: string;
}

/**
 * The agent's image import (importVolume: download, sha256, gzip/xz, inspectImage,
 * qemu-img convert, no partial file left) for the DIR pools under `root`, for a process
 * that keeps pools itself in the agent's layout (`<root>/<pool id>` with its marker): the
 * control plane's simulated hosts, whose composition root hands this over. The URL was
 * validated by the caller (http or https).
 */
export function dirImporter(root: string): (req: { poolId: string; volumeId: string; format: VolumeFormatName; url: string; sha256: string }, signal: AbortSignal) => AsyncIterable<DirImportStep> {
  const storage = new NodeStorage({ poolRoot: root, sharedDirs: [] });
  return async function* (req, signal) {
    for await (const p of storage.importVolume({ poolId: req.poolId, id: req.volumeId, format: req.format, url: new URL(req.url), sha256: req.sha256 }, signal)) {
      yield { phase: p.phase, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal, sha256: p.sha256 ?? "", detectedFormat: p.detectedFormat ?? "" };
    }
  };
}

/** What an upload made, with plain fields (the control plane's NodeUploadResult, without the volume). */
export interface DirUploadResult {
  readonly bytesReceived: bigint;
  readonly sha256: string;
  readonly detectedFormat: string;
}

/**
 * The agent's upload (uploadVolume: the bytes hashed into a temporary file, bounded by the
 * declared size, the limit and the pool's free space, then the import's verify, inspect and
 * convert; no partial file left) for the DIR pools under `root`, handed over like
 * dirImporter. The request was validated by the caller.
 */
export function dirUploader(
  root: string,
): (req: { poolId: string; volumeId: string; format: VolumeFormatName; sizeBytes: bigint; sha256: string; expectedFormat: string }, chunks: AsyncIterable<Uint8Array>, signal: AbortSignal) => Promise<DirUploadResult> {
  const storage = new NodeStorage({ poolRoot: root, sharedDirs: [] });
  return async (req, chunks, signal) => {
    const r = await storage.uploadVolume({ poolId: req.poolId, id: req.volumeId, format: req.format, sizeBytes: req.sizeBytes, sha256: req.sha256, expectedFormat: req.expectedFormat }, chunks, signal);
    return { bytesReceived: r.bytesReceived, sha256: r.sha256, detectedFormat: r.detectedFormat };
  };
}
