import { QuantixError } from "@quantix/core";
import { finishImport, openImportSite, type ImportProgress } from "./finish-import.js";
import { httpGet, type HttpDownload } from "./http-download.js";
import type { Pools } from "./pools.js";
import type { QemuImg } from "./qemu-img.js";
import type { VolumeFormatName, Volumes } from "./volumes.js";

/** What to import; validated by the caller (storage-validation.ts). */
export interface ImportSpec {
  readonly poolId: string;
  readonly id: string;
  readonly format: VolumeFormatName;
  readonly url: URL;
  /** Expected SHA-256 of the downloaded bytes, lowercase hex; empty: not checked. */
  readonly sha256: string;
}

export type { ImportProgress } from "./finish-import.js";

/** A progress message at most every this many downloaded bytes. */
const PROGRESS_EVERY = 4n << 20n;
const MAX_REDIRECTS = 5;
/** The longest wait for a byte of the download, from connecting to the body's end. */
const IDLE_TIMEOUT_MS = 30_000;

/**
 * Imports an image from an http(s) URL into a new volume (see ImportVolume in
 * storage.proto): download with hash and progress, sha256 check, gzip/xz decompression
 * detected from the content, inspectImage (hostile images refused), a size check against
 * the pool's free space, `qemu-img convert -f <detected> -O <format>`, then a rename into
 * place. Holds the volume's lock throughout; every temporary file ends in `.partial` and is
 * removed whatever happens, the client going away included.
 */
export async function* importVolume(deps: { pools: Pools; volumes: Volumes; qemuImg: QemuImg }, spec: ImportSpec, signal: AbortSignal): AsyncGenerator<ImportProgress> {
  const site = await openImportSite(deps, spec.poolId, spec.id);
  try {
    const { pool, existing, temp } = site;
    if (existing) {
      if (existing.format !== spec.format) throw new QuantixError("already_exists", `volume '${spec.id}' exists as ${existing.format}`);
      yield { phase: "ready", bytesDone: 0n, bytesTotal: 0n, volume: existing };
      return;
    }
    const room = async () => (await deps.pools.capacity(pool.dir)).availableBytes;

    // Download, hashing and counting as the bytes arrive.
    const download = temp("download");
    const res = await httpGet(spec.url, { signal, maxRedirects: MAX_REDIRECTS, idleTimeoutMs: IDLE_TIMEOUT_MS });
    const total = res.length ?? 0n;
    let received: { done: bigint; sha256: string };
    try {
      const limit = await room();
      if (total > limit) throw new QuantixError("resource_exhausted", `the image is ${total} bytes, more than the pool's ${limit} available bytes`);
      yield { phase: "downloading", bytesDone: 0n, bytesTotal: total };
      received = yield* downloadTo(res, download, limit, total);
    } finally {
      res.close();
    }
    const { done, sha256 } = received;
    yield { phase: "downloading", bytesDone: done, bytesTotal: total, sha256 };
    yield* finishImport(deps, { poolId: spec.poolId, poolDir: pool.dir, id: spec.id, format: spec.format, expectedSha256: spec.sha256 }, { path: download, sha256, bytesDone: done, bytesTotal: total }, temp, signal);
  } finally {
    await site.close();
  }
}

/**
 * Saves the response body into `path` (httpGet's saveTo: the socket reads into blocks, each
 * read hashed and counted as it lands, full blocks written while the next fills), yielding
 * the byte count at most every PROGRESS_EVERY bytes; the download does not wait for its
 * consumer. UNAVAILABLE when the body ends early or the connection breaks,
 * RESOURCE_EXHAUSTED past `limit` bytes. When it fails, or its consumer goes away, the
 * download is stopped and settled before this returns, so nothing writes the file after the
 * caller removes it.
 */
async function* downloadTo(res: HttpDownload, path: string, limit: bigint, total: bigint): AsyncGenerator<ImportProgress, { done: bigint; sha256: string }> {
  let done = 0n;
  let wake = (): void => undefined;
  const stop = new AbortController();
  let settled = false;
  const saving = res.saveTo(path, { limit, progressEvery: PROGRESS_EVERY, stop: stop.signal, onProgress: (bytes) => ((done = bytes), wake()) }).finally(() => (settled = true));
  try {
    let reported = 0n;
    while (!settled) {
      const progressed = new Promise<void>((resolve) => (wake = resolve));
      await Promise.race([saving, progressed]);
      if (!settled && done - reported >= PROGRESS_EVERY) {
        reported = done;
        yield { phase: "downloading", bytesDone: done, bytesTotal: total };
      }
    }
    const saved = await saving;
    return { done: saved.bytes, sha256: saved.sha256 };
  } finally {
    stop.abort();
    await saving.catch(() => undefined);
  }
}
