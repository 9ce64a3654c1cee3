import { createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { pipeline } from "node:stream/promises";
import http, { type IncomingMessage } from "node:http";
import https from "node:https";
import { QuantixError } from "@quantix/core";
import { finishImport, openImportSite, type ImportProgress } from "./finish-import.js";
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
const CONNECT_TIMEOUT_MS = 30_000;
/** How much of a download the file's write stream buffers: chunks that arrive during a write go out together in the next (`writev`). Larger is slower: the bytes are no longer in the CPU's cache when written (8 MiB measured 1.5-2.5x slower than 256 KiB). */
const WRITE_BUFFER_BYTES = 256 << 10;

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
    const res = await get(spec.url, signal, MAX_REDIRECTS);
    const total = BigInt(Number(res.headers["content-length"] ?? 0) || 0);
    const limit = await room();
    if (total > limit) throw new QuantixError("resource_exhausted", `the image is ${total} bytes, more than the pool's ${limit} available bytes`);
    yield { phase: "downloading", bytesDone: 0n, bytesTotal: total };
    const { done, sha256 } = yield* downloadTo(res, download, limit, total);
    yield { phase: "downloading", bytesDone: done, bytesTotal: total, sha256 };
    yield* finishImport(deps, { poolId: spec.poolId, poolDir: pool.dir, id: spec.id, format: spec.format, expectedSha256: spec.sha256 }, { path: download, sha256, bytesDone: done, bytesTotal: total }, temp, signal);
  } finally {
    await site.close();
  }
}

/** GET `url`, following redirects to http(s) only; UNAVAILABLE for what cannot be fetched. */
function get(url: URL, signal: AbortSignal, redirects: number): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const lib = url.protocol === "https:" ? https : http;
    const req = lib.get(url, { signal, timeout: CONNECT_TIMEOUT_MS }, (res) => {
      const status = res.statusCode ?? 0;
      const location = res.headers.location;
      if ([301, 302, 303, 307, 308].includes(status) && location !== undefined) {
        res.resume();
        const next = new URL(location, url);
        if (redirects === 0) return reject(new QuantixError("unavailable", `the image URL redirects more than ${MAX_REDIRECTS} times`));
        if (next.protocol !== "http:" && next.protocol !== "https:") return reject(new QuantixError("unavailable", `the image URL redirects to a ${next.protocol} URL`));
        return resolve(get(next, signal, redirects - 1));
      }
      if (status !== 200) {
        res.resume();
        return reject(new QuantixError("unavailable", `the image server answered HTTP ${status}`));
      }
      resolve(res);
    });
    req.on("timeout", () => req.destroy(new Error(`no answer within ${CONNECT_TIMEOUT_MS / 1000} s`)));
    req.on("error", (err: NodeJS.ErrnoException) => reject(new QuantixError("unavailable", `cannot download the image: ${err.code ?? err.message}`, [], { cause: err })));
  });
}

/** The bytes and digest of a finished download. */
interface Downloaded {
  readonly done: bigint;
  readonly sha256: string;
}

/**
 * Streams the response body into `path` (a new file, mode 0600) through one pipeline:
 * the file's write stream takes the chunks as they come and writes what piled up during
 * a write in one `writev` (no round trip to the file system per chunk holds the socket
 * back); each chunk is hashed and counted as it passes, in the same turn it is queued for
 * writing, so the digest is of exactly the bytes written and there is no second pass over
 * the file. Yields the byte count at most every PROGRESS_EVERY bytes; the download does
 * not wait for its consumer. UNAVAILABLE when the body ends early or the connection
 * breaks, RESOURCE_EXHAUSTED past `limit` bytes. When it fails, or its consumer goes away,
 * the pipeline is stopped and settled before this returns, so nothing writes the file after
 * the caller removes it.
 */
async function* downloadTo(res: IncomingMessage, path: string, limit: bigint, total: bigint): AsyncGenerator<ImportProgress, Downloaded> {
  const hash = createHash("sha256");
  let done = 0n;
  let woken = 0n;
  let wake = (): void => undefined;
  // Beside the pipeline's own listener, which writes the same chunks in the same order.
  res.on("data", (chunk: Buffer) => {
    done += BigInt(chunk.length);
    if (done > limit) return res.destroy(new QuantixError("resource_exhausted", `the download passed the pool's ${limit} available bytes`));
    hash.update(chunk);
    if (done - woken >= PROGRESS_EVERY) {
      woken = done;
      wake();
    }
  });
  const stop = new AbortController();
  const file = createWriteStream(path, { mode: 0o600, highWaterMark: WRITE_BUFFER_BYTES });
  let settled = false;
  const finished = pipeline(res, file, { signal: stop.signal }).finally(() => (settled = true));
  try {
    let reported = 0n;
    while (!settled) {
      const progressed = new Promise<void>((resolve) => (wake = resolve));
      await Promise.race([finished, progressed]);
      if (!settled && done - reported >= PROGRESS_EVERY) {
        reported = done;
        yield { phase: "downloading", bytesDone: done, bytesTotal: total };
      }
    }
    await finished;
  } catch (err) {
    if (err instanceof QuantixError) throw err;
    throw new QuantixError("unavailable", `the download ended early after ${done} bytes${total > 0n ? ` of ${total}` : ""}`, [], { cause: err });
  } finally {
    stop.abort();
    await finished.catch(() => undefined);
    res.destroy();
  }
  if (total > 0n && done !== total) throw new QuantixError("unavailable", `the download is truncated: ${done} of ${total} bytes`);
  return { done, sha256: hash.digest("hex") };
}
