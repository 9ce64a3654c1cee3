import { spawn } from "node:child_process";
import { createReadStream, createWriteStream } from "node:fs";
import { open, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { Transform, type Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGunzip } from "node:zlib";
import { QuantixError } from "@quantix/core";
import { inspectImage, type ImageInspection } from "./inspect-image.js";
import type { Pools, ResolvedPool } from "./pools.js";
import type { QemuImg } from "./qemu-img.js";
import type { VolumeFormatName, VolumeInfo, Volumes } from "./volumes.js";

/** One step of an import, as ImportVolumeProgress reports it. */
export interface ImportProgress {
  readonly phase: "downloading" | "verifying" | "converting" | "ready";
  readonly bytesDone: bigint;
  readonly bytesTotal: bigint;
  readonly sha256?: string;
  readonly detectedFormat?: string;
  readonly volume?: VolumeInfo;
}

/** The volume an import makes, in a pool already resolved (the caller holds the volume's lock). */
export interface ImportTarget {
  readonly poolId: string;
  readonly poolDir: string;
  readonly id: string;
  readonly format: VolumeFormatName;
  /** Expected SHA-256 of the received bytes, lowercase hex; empty: not checked. */
  readonly expectedSha256: string;
  /** The format the sender declared (qcow2, raw, vmdk, vdi, vhdx, vpc, iso); absent: any. Checked against the content, never used to read it. */
  readonly expectedFormat?: string;
}

/** The received bytes, in a temporary file of the pool. */
export interface Received {
  readonly path: string;
  /** The SHA-256 of the bytes as received. */
  readonly sha256: string;
  readonly bytesDone: bigint;
  readonly bytesTotal: bigint;
  /** How the bytes came, for messages: "download" or "upload". */
  readonly what?: string;
}

/** Where an import or upload writes: its pool, the volume if it exists, and temporary files that `close` removes. */
export interface ImportSite {
  readonly pool: ResolvedPool;
  /** The volume as it exists already; undefined when it does not. */
  readonly existing: VolumeInfo | undefined;
  /** A new temporary file's path in the pool (`.<volume>.<what>.partial`), removed by `close`. */
  temp(what: string): string;
  /** Removes every temporary file, then releases the volume's lock. */
  close(): Promise<void>;
}

/** The start ImportVolume and UploadVolume share: the volume's lock (held until `close`), its pool, and whether it exists. */
export async function openImportSite(deps: { pools: Pools; volumes: Volumes }, poolId: string, id: string): Promise<ImportSite> {
  const release = await deps.volumes.lock(poolId, id);
  const temps: string[] = [];
  const close = async () => {
    for (const t of temps) await rm(t, { force: true });
    release();
  };
  try {
    const pool = await deps.pools.resolve(poolId);
    const existing = await deps.volumes.get(poolId, id).catch((err: unknown) => {
      if (err instanceof QuantixError && err.code === "not_found") return undefined;
      throw err;
    });
    const temp = (what: string) => {
      const path = join(pool.dir, `.${id}.${what}.partial`);
      temps.push(path);
      return path;
    };
    return { pool, existing, temp, close };
  } catch (err) {
    await close();
    throw err;
  }
}

/**
 * The second half of an import, once the bytes are in a temporary file of the pool
 * (ImportVolume's download, UploadVolume's stream): sha256 check, gzip/xz/zstd decompression
 * detected from the content and bounded by the pool's free space, inspectImage (hostile
 * images refused), the virtual size against the pool's free space, then either the image
 * itself renamed into place when it is already a clean image of the volume's format
 * (storableAsIs), or `qemu-img convert -f <detected> -O <format>` into a `.partial` file
 * renamed into place. Yields
 * verifying, converting and ready. Temporary files come from `temp`, whose caller removes
 * them whatever happens.
 */
export async function* finishImport(
  deps: { pools: Pools; volumes: Volumes; qemuImg: QemuImg },
  target: ImportTarget,
  received: Received,
  temp: (what: string) => string,
  signal: AbortSignal,
): AsyncGenerator<ImportProgress> {
  const { sha256, bytesDone: done, bytesTotal: total } = received;
  const room = async () => (await deps.pools.capacity(target.poolDir)).availableBytes;
  if (target.expectedSha256 !== "" && sha256 !== target.expectedSha256) throw new QuantixError("failed_precondition", `sha256 mismatch: expected ${target.expectedSha256}, the ${received.what ?? "download"} is ${sha256}`);

  // Decompress by magic bytes, bounded by the pool's free space; then inspect.
  yield { phase: "verifying", bytesDone: done, bytesTotal: total, sha256 };
  let image = received.path;
  const compression = await compressionOf(received.path);
  if (compression !== undefined) {
    image = temp("image");
    await decompress(compression, received.path, image, await room(), signal);
  }
  const inspected = await inspectImage(image, { qemuImg: deps.qemuImg });
  const detectedFormat = inspected.iso ? "iso" : inspected.format;
  if (target.expectedFormat !== undefined && target.expectedFormat !== "" && target.expectedFormat !== detectedFormat) {
    throw new QuantixError("failed_precondition", `the data is ${detectedFormat}, not the ${target.expectedFormat} the sender declared`);
  }
  const free = await room();
  if (inspected.virtualSizeBytes > free) throw new QuantixError("resource_exhausted", `the image's virtual size ${inspected.virtualSizeBytes} bytes is more than the pool's ${free} available bytes`);
  yield { phase: "converting", bytesDone: done, bytesTotal: total, sha256, detectedFormat };

  const final = join(target.poolDir, `${target.id}.${target.format}`);
  if (await storableAsIs(image, inspected, target.format, deps.qemuImg)) {
    // Already a clean, self-contained image of the pool's format: kept as it came (as
    // Glance stores images), without a second full pass over the data.
    await rename(image, final);
  } else {
    const partial = temp(target.format);
    await deps.qemuImg.convert(image, inspected.format, partial, target.format);
    await rename(partial, final);
  }
  const volume = await deps.volumes.get(target.poolId, target.id);
  yield { phase: "ready", bytesDone: done, bytesTotal: total, sha256, detectedFormat, volume };
}

/**
 * Whether an inspected image can become the volume unchanged: raw data for a raw volume; a
 * qcow2 for a qcow2 volume when it has no backing file, is not encrypted, carries no
 * internal snapshots (a convert drops them) and `qemu-img check` finds it consistent.
 * Anything else is converted.
 */
async function storableAsIs(path: string, inspected: ImageInspection, format: "qcow2" | "raw", qemuImg: QemuImg): Promise<boolean> {
  if (inspected.format !== format || inspected.backing !== undefined || inspected.encrypted) return false;
  if (format === "raw") return true;
  return inspected.internalSnapshots === 0 && (await qemuImg.consistent(path, "qcow2"));
}

type Compression = "gzip" | "xz" | "zstd";

/** The decompressors run as processes: the command and the Debian package that has it. */
const TOOLS: Record<Exclude<Compression, "gzip">, { readonly command: string; readonly pkg: string }> = {
  xz: { command: "xz", pkg: "xz-utils" },
  zstd: { command: "zstd", pkg: "zstd" },
};

/** The compression of a file, from its magic bytes (never its name). */
async function compressionOf(path: string): Promise<Compression | undefined> {
  const fh = await open(path, "r");
  try {
    const head = Buffer.alloc(6);
    const { bytesRead } = await fh.read(head, 0, 6, 0);
    if (bytesRead >= 2 && head[0] === 0x1f && head[1] === 0x8b) return "gzip";
    if (bytesRead === 6 && head.equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return "xz";
    if (bytesRead >= 4 && head.readUInt32LE(0) === 0xfd2fb528) return "zstd";
    return undefined;
  } finally {
    await fh.close();
  }
}

/** Decompresses `from` into `to`, failing with RESOURCE_EXHAUSTED past `limit` bytes (a decompression bomb) and FAILED_PRECONDITION for corrupt data. */
async function decompress(kind: Compression, from: string, to: string, limit: bigint, signal: AbortSignal): Promise<void> {
  let written = 0n;
  const bound = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      written += BigInt(chunk.length);
      if (written > limit) cb(new QuantixError("resource_exhausted", `the decompressed image passed the pool's ${limit} available bytes`));
      else cb(null, chunk);
    },
  });
  let source: Readable;
  // The decompressing process's failure (undefined when it succeeded), always observed.
  let toolFailure: Promise<unknown> = Promise.resolve(undefined);
  let stop = (): void => {};
  if (kind === "gzip") source = createReadStream(from).pipe(createGunzip());
  else {
    const tool = TOOLS[kind];
    // Fixed arguments only: the data comes on stdin, the output goes to stdout.
    const proc = spawn(tool.command, ["-dc"], { stdio: ["pipe", "pipe", "pipe"], signal });
    let stderr = "";
    proc.stderr.on("data", (d: Buffer) => (stderr = (stderr + d.toString("utf8")).slice(0, 300)));
    // A feed that breaks (the tool exited early) is reported by its exit status below.
    pipeline(createReadStream(from), proc.stdin).catch(() => undefined);
    toolFailure = new Promise((resolve) => {
      proc.on("error", (err) => resolve(new QuantixError("failed_precondition", `${tool.command} is not installed on this host (Debian: ${tool.pkg})`, [], { cause: err })));
      proc.on("close", (code) => resolve(code === 0 ? undefined : new QuantixError("failed_precondition", `the ${kind} data is corrupt: ${stderr.trim()}`)));
    });
    stop = () => void proc.kill("SIGKILL");
    source = proc.stdout;
  }
  try {
    await pipeline(source, bound, createWriteStream(to, { mode: 0o600 }), { signal });
  } catch (err) {
    // Ours (past the limit): the process is not waited for. Else the process says why, if it failed.
    if (err instanceof QuantixError) {
      stop();
      throw err;
    }
    throw (await toolFailure) ?? new QuantixError("failed_precondition", `the ${kind} data is corrupt or truncated`, [], { cause: err });
  }
  const failure = await toolFailure;
  if (failure) throw failure;
}
