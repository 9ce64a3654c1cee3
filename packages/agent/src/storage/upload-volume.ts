import { createHash } from "node:crypto";
import { open } from "node:fs/promises";
import { QuantixError } from "@quantix/core";
import { finishImport, openImportSite, type ImportProgress } from "./finish-import.js";
import type { Pools } from "./pools.js";
import type { QemuImg } from "./qemu-img.js";
import type { VolumeFormatName, VolumeInfo, Volumes } from "./volumes.js";

/** The bounds of an upload (UploadVolume in storage.proto). */
export const UPLOAD_LIMITS = {
  /** The largest chunk, in bytes: 4 MiB less 16 (a request message is at most 4 MiB with its framing). */
  maxChunkBytes: (4 << 20) - 16,
  /** The most data one upload carries, in bytes: 1 TiB. */
  maxBytes: 1n << 40n,
} as const;

/** What to upload; validated by the caller (storage-validation.ts). */
export interface UploadSpec {
  readonly poolId: string;
  readonly id: string;
  readonly format: VolumeFormatName;
  /** The data's size; 0n: not known. */
  readonly sizeBytes: bigint;
  /** Expected SHA-256 of the data, lowercase hex; empty: not checked. */
  readonly sha256: string;
  /** The format the sender declares; empty: any (checked against the content, never trusted). */
  readonly expectedFormat: string;
}

/** What an upload made. */
export interface UploadResult {
  readonly volume: VolumeInfo;
  readonly bytesReceived: bigint;
  readonly sha256: string;
  readonly detectedFormat: string;
}

/**
 * Receives an image's bytes into a new volume (see UploadVolume in storage.proto): the
 * chunks are written to `.<id>.upload.partial` in the pool and hashed as they come,
 * bounded by the declared size, the limit and the pool's free space; a stream that ends
 * short of the declared size fails with DATA_LOSS. Then the same path as an import's after
 * its download (finishImport). Holds the volume's lock throughout; every temporary file is
 * removed whatever happens, a broken or cancelled stream included.
 */
export async function uploadVolume(
  deps: { pools: Pools; volumes: Volumes; qemuImg: QemuImg },
  spec: UploadSpec,
  chunks: AsyncIterable<Uint8Array>,
  signal: AbortSignal,
  limits: { readonly maxChunkBytes: number; readonly maxBytes: bigint } = UPLOAD_LIMITS,
): Promise<UploadResult> {
  const site = await openImportSite(deps, spec.poolId, spec.id);
  try {
    const { pool, temp } = site;
    if (site.existing) throw new QuantixError("already_exists", `volume '${spec.id}' exists in pool '${spec.poolId}'; delete it before uploading again`);
    if (spec.sizeBytes > limits.maxBytes) throw new QuantixError("out_of_range", `the upload is ${spec.sizeBytes} bytes, more than the limit of ${limits.maxBytes} bytes`);
    const available = (await deps.pools.capacity(pool.dir)).availableBytes;
    if (spec.sizeBytes > available) throw new QuantixError("resource_exhausted", `the upload is ${spec.sizeBytes} bytes, more than the pool's ${available} available bytes`);
    const bound = spec.sizeBytes > 0n ? spec.sizeBytes : limits.maxBytes;

    const path = temp("upload");
    const hash = createHash("sha256");
    let done = 0n;
    const fh = await open(path, "w", 0o600);
    try {
      for await (const chunk of chunks) {
        if (signal.aborted) break;
        if (chunk.length === 0 || chunk.length > limits.maxChunkBytes) throw new QuantixError("invalid_argument", `chunk: must be 1 to ${limits.maxChunkBytes} bytes, not ${chunk.length}`, [{ field: "chunk", reason: "OUT_OF_RANGE", description: `must be 1 to ${limits.maxChunkBytes} bytes` }]);
        done += BigInt(chunk.length);
        if (done > bound) {
          throw spec.sizeBytes > 0n
            ? new QuantixError("out_of_range", `the upload carries more than the ${spec.sizeBytes} bytes its header declared`)
            : new QuantixError("out_of_range", `the upload passed the limit of ${limits.maxBytes} bytes`);
        }
        if (done > available) throw new QuantixError("resource_exhausted", `the upload passed the pool's ${available} available bytes`);
        hash.update(chunk);
        await fh.write(chunk);
      }
    } catch (err) {
      if (err instanceof QuantixError) throw err;
      throw new QuantixError("unavailable", `the upload stream broke after ${done} bytes`, [], { cause: err });
    } finally {
      await fh.close();
    }
    if (signal.aborted) throw new QuantixError("unavailable", `the upload was cancelled after ${done} bytes`);
    if (spec.sizeBytes > 0n && done < spec.sizeBytes) throw new QuantixError("data_loss", `the upload ended after ${done} of the ${spec.sizeBytes} bytes its header declared`);
    if (done === 0n) throw new QuantixError("invalid_argument", "the upload carries no data", [{ field: "chunk", reason: "REQUIRED", description: "at least one chunk of data must follow the header" }]);
    const sha256 = hash.digest("hex");

    let last: ImportProgress | undefined;
    const target = { poolId: spec.poolId, poolDir: pool.dir, id: spec.id, format: spec.format, expectedSha256: spec.sha256, expectedFormat: spec.expectedFormat };
    for await (const p of finishImport(deps, target, { path, sha256, bytesDone: done, bytesTotal: spec.sizeBytes, what: "upload" }, temp, signal)) last = p;
    if (!last || last.phase !== "ready" || !last.volume) throw new QuantixError("internal", "the upload ended without its volume");
    return { volume: last.volume, bytesReceived: done, sha256, detectedFormat: last.detectedFormat ?? "" };
  } finally {
    await site.close();
  }
}
