import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { pipeline } from "node:stream/promises";
import { mkdir, readdir, readFile, realpath, rename, rm, stat, statfs, writeFile } from "node:fs/promises";
import { basename, join, sep } from "node:path";
import { promisify } from "node:util";
import { ID_PATTERN, QuantixError } from "@quantix/core";
import type { NodeImportProgress, NodeImportRequest, NodeUploadRequest, NodeUploadResult, NodePool, NodePoolType, NodeSnapshot, NodeStorage, NodeVolume, NodeVolumeFormat, NodeVolumeSource, PoolRef, SnapshotRef, VolumeRef } from "./node-storage.js";

const run = promisify(execFile);

/** The marker file every pool directory holds: the pool's id (an unmounted share or another pool's directory is never written to). */
export const POOL_MARKER = ".quantix-pool";

const FORMATS: readonly NodeVolumeFormat[] = ["qcow2", "raw"];

/** Where a DirNodeStorage keeps its pools. */
export interface DirNodeStorageOptions {
  /** The node's id, for messages. */
  readonly nodeId: string;
  /** DIR pools are `<root>/<pool id>`. */
  readonly root: string;
  /** SHARED_DIR pools must be directories strictly below one of these (the agent's VMCP_SHARED_DIRS). */
  readonly sharedDirs?: readonly string[];
  /** The qemu-img binary (default: from PATH). */
  readonly qemuImg?: string;
  /**
   * The agent's image import for the DIR pools under `root` (its layout is this class's:
   * `<root>/<pool id>` with the pool marker), handed over by the composition root; absent:
   * imports are refused saying so.
   */
  readonly importer?: (req: NodeImportRequest, signal: AbortSignal) => AsyncIterable<Omit<NodeImportProgress, "volume">>;
  /** The agent's upload code for the same DIR pools, handed over likewise; absent: uploads are refused saying so. */
  readonly uploader?: (req: NodeUploadRequest, chunks: AsyncIterable<Uint8Array>, signal: AbortSignal) => Promise<Omit<NodeUploadResult, "volume">>;
}

/**
 * NodeStorage over a directory of this process's host with the real `qemu-img` (always
 * with an explicit `-f`/`-F`, never probing; arguments as an array, never a shell): the
 * demo's simulated hosts keep their pools here, one root per node. Every path derives
 * from ids checked against the id pattern (no '/', so no escape from the pool), and a
 * SHARED_DIR path is accepted only below a configured shared directory. A volume is made
 * under a temporary name and renamed into place, so a failure leaves nothing
 * half-created. Calls on one volume run one at a time.
 */
export class DirNodeStorage implements NodeStorage {
  readonly kind = "directory";
  private readonly pools = new Map<string, string>();
  private readonly locks = new Map<string, Promise<unknown>>();

  constructor(private readonly o: DirNodeStorageOptions) {}

  async ensurePool(req: PoolRef & { type: NodePoolType; path?: string }): Promise<NodePool> {
    checkId("pool_id", req.poolId);
    // One at a time per pool: the pool controller and an image's or a volume's steps ensure
    // the same new pool at once, and the second saw the first's marker half made ("not empty
    // and has no pool marker", the pool UNAVAILABLE until its next reconcile).
    return this.serial(`pool:${req.poolId}`, () => this.ensurePoolNow(req));
  }

  private async ensurePoolNow(req: PoolRef & { type: NodePoolType; path?: string }): Promise<NodePool> {
    const dir = req.type === "DIR" ? join(this.o.root, req.poolId) : await this.sharedDir(req.path ?? "");
    if (req.type === "DIR") await mkdir(dir, { recursive: true, mode: 0o750 });
    const marker = join(dir, POOL_MARKER);
    const owner = await readFile(marker, "utf8").catch(() => undefined);
    if (owner === undefined) {
      const entries = await readdir(dir);
      if (entries.length > 0) throw new QuantixError("failed_precondition", `the directory of pool '${req.poolId}' on node '${this.o.nodeId}' is not empty and has no pool marker: refusing to take it over`);
      await writeFile(marker, req.poolId, { mode: 0o640 });
    } else if (owner.trim() !== req.poolId) {
      throw new QuantixError("failed_precondition", `the directory of pool '${req.poolId}' on node '${this.o.nodeId}' belongs to another pool ('${owner.trim().slice(0, 64)}')`);
    }
    this.pools.set(req.poolId, dir);
    return this.measure(req.poolId, dir);
  }

  async deletePool(req: PoolRef & { type: NodePoolType; path?: string }): Promise<void> {
    checkId("pool_id", req.poolId);
    const dir = req.type === "DIR" ? join(this.o.root, req.poolId) : await this.sharedDir(req.path ?? "").catch(() => undefined);
    const owner = dir ? await readFile(join(dir, POOL_MARKER), "utf8").catch(() => undefined) : undefined;
    if (!dir || owner?.trim() !== req.poolId) throw new QuantixError("not_found", `pool '${req.poolId}' is not on node '${this.o.nodeId}'`);
    const volumes = await this.volumeIds(dir);
    if (volumes.length > 0) throw new QuantixError("failed_precondition", `pool '${req.poolId}' still holds ${volumes.length} volume file(s) on node '${this.o.nodeId}'`);
    await rm(join(dir, POOL_MARKER));
    // A DIR pool's directory is ours; a shared directory stays, without the marker.
    if (req.type === "DIR") await rm(dir, { recursive: true });
    this.pools.delete(req.poolId);
  }

  createVolume(req: VolumeRef & { format: NodeVolumeFormat; sizeBytes: bigint; source?: NodeVolumeSource }): Promise<NodeVolume> {
    return this.locked(req, async () => {
      const dir = this.poolDir(req.poolId);
      checkId("volume_id", req.volumeId);
      const existing = await this.find(dir, req.volumeId);
      if (existing) {
        const info = await this.info(dir, req.volumeId, existing);
        if (existing !== req.format || (req.sizeBytes > 0n && !req.source && info.virtualSizeBytes !== req.sizeBytes)) {
          throw new QuantixError("already_exists", `volume '${req.volumeId}' exists on node '${this.o.nodeId}' with another format or size`);
        }
        return info;
      }
      const target = join(dir, `${req.volumeId}.${req.format}`);
      const partial = join(dir, `.${req.volumeId}.${req.format}.partial`);
      await rm(partial, { force: true });
      try {
        if (req.source) await this.cloneInto(dir, req, partial);
        else {
          await this.roomFor(dir, req.poolId, req.sizeBytes);
          await this.qemuImg(["create", "-q", "-f", req.format, partial, String(req.sizeBytes)]);
        }
        await rename(partial, target);
      } catch (err) {
        await rm(partial, { force: true });
        throw err;
      }
      return this.info(dir, req.volumeId, req.format);
    });
  }

  resizeVolume(req: VolumeRef & { sizeBytes: bigint }): Promise<NodeVolume> {
    return this.locked(req, async () => {
      const dir = this.poolDir(req.poolId);
      const format = await this.existing(dir, req);
      const cur = await this.info(dir, req.volumeId, format);
      if (cur.virtualSizeBytes === req.sizeBytes) return cur;
      if (req.sizeBytes < cur.virtualSizeBytes) throw new QuantixError("failed_precondition", `volume '${req.volumeId}' is ${cur.virtualSizeBytes} bytes; shrinking is not supported`);
      await this.roomFor(dir, req.poolId, req.sizeBytes - cur.virtualSizeBytes);
      await this.qemuImg(["resize", "-q", "-f", format, join(dir, `${req.volumeId}.${format}`), String(req.sizeBytes)]);
      return this.info(dir, req.volumeId, format);
    });
  }

  deleteVolume(req: VolumeRef & { force: boolean }): Promise<void> {
    return this.locked(req, async () => {
      const dir = this.poolDir(req.poolId);
      const format = await this.existing(dir, req);
      if (!req.force) {
        for (const other of await this.volumeIds(dir)) {
          if (other.id === req.volumeId || other.format !== "qcow2") continue;
          // One deleted meanwhile backs nothing.
          const info = await this.info(dir, other.id, other.format).catch(() => undefined);
          if (info?.backingVolumeId === req.volumeId) throw new QuantixError("failed_precondition", `volume '${req.volumeId}' backs volume '${other.id}' (a linked clone) on node '${this.o.nodeId}'`);
        }
      }
      await rm(join(dir, `${req.volumeId}.${format}`));
    });
  }

  async volumeInfo(req: VolumeRef): Promise<NodeVolume | undefined> {
    const dir = this.poolDir(req.poolId);
    checkId("volume_id", req.volumeId);
    const format = await this.find(dir, req.volumeId);
    return format ? this.info(dir, req.volumeId, format) : undefined;
  }

  /**
   * Imports an image with the agent's own import code (o.importer), into a DIR pool; the
   * ready step carries the volume as this class sees it. SHARED_DIR pools of simulated
   * hosts take no imports (the agent's code finds pools by their entry under the root).
   */
  async *importImage(req: NodeImportRequest, signal: AbortSignal): AsyncIterable<NodeImportProgress> {
    const dir = this.poolDir(req.poolId);
    checkId("volume_id", req.volumeId);
    if (!this.o.importer) throw new QuantixError("failed_precondition", `simulated node '${this.o.nodeId}' has no image importer (the control plane was started without one)`);
    if (dir !== join(this.o.root, req.poolId)) throw new QuantixError("failed_precondition", `simulated node '${this.o.nodeId}' imports images into directory pools only, not into shared ones`);
    for await (const p of this.o.importer(req, signal)) {
      if (p.phase !== "ready") yield p;
      else yield { ...p, volume: await this.info(dir, req.volumeId, req.format) };
    }
  }
  /** Receives an upload with the agent's own upload code (o.uploader), into a DIR pool, as importImage does. */
  async uploadImage(req: NodeUploadRequest, chunks: AsyncIterable<Uint8Array>, signal: AbortSignal): Promise<NodeUploadResult> {
    const dir = this.poolDir(req.poolId);
    checkId("volume_id", req.volumeId);
    if (!this.o.uploader) throw new QuantixError("failed_precondition", `simulated node '${this.o.nodeId}' has no image uploader (the control plane was started without one)`);
    if (dir !== join(this.o.root, req.poolId)) throw new QuantixError("failed_precondition", `simulated node '${this.o.nodeId}' takes uploads into directory pools only, not into shared ones`);
    const r = await this.o.uploader(req, chunks, signal);
    return { ...r, volume: await this.info(dir, req.volumeId, req.format) };
  }

  async volumeSha256(req: VolumeRef): Promise<string> {
    return this.locked(req, async () => {
      const dir = this.poolDir(req.poolId);
      const format = await this.existing(dir, req);
      const hash = createHash("sha256");
      await pipeline(createReadStream(join(dir, `${req.volumeId}.${format}`)), hash);
      return hash.digest("hex");
    });
  }


  /** The file under the volume's lock (held until the reader finishes or stops). */
  async *readVolume(req: VolumeRef, signal: AbortSignal): AsyncIterable<Uint8Array> {
    let release = (): void => {};
    const held = new Promise<void>((r) => (release = r));
    let started = (): void => {};
    const locked = new Promise<void>((r) => (started = r));
    void this.locked(req, async () => {
      started();
      await held;
    });
    await locked;
    try {
      const dir = this.poolDir(req.poolId);
      const format = await this.existing(dir, req);
      const info = await this.info(dir, req.volumeId, format);
      if (info.backingVolumeId !== "") throw new QuantixError("failed_precondition", `volume '${req.volumeId}' is a linked clone of volume '${info.backingVolumeId}': its data is not in one file`);
      for await (const chunk of createReadStream(info.path, { highWaterMark: 1 << 20, signal })) yield chunk as Buffer;
    } finally {
      release();
    }
  }

  createSnapshot(req: SnapshotRef): Promise<NodeSnapshot> {
    return this.withQcow2(req, async (path) => {
      const existing = (await this.snapshotsOf(path, "qcow2")).find((x) => x.snapshotId === req.snapshotId);
      if (existing) return existing;
      await this.qemuImg(["snapshot", "-q", "--image-opts", "-c", req.snapshotId, qcow2Opts(path)]);
      return this.findSnapshot(path, req);
    });
  }

  revertSnapshot(req: SnapshotRef): Promise<NodeSnapshot> {
    return this.withQcow2(req, async (path, dir) => {
      const found = await this.findSnapshot(path, req);
      for (const other of await this.volumeIds(dir)) {
        if (other.id === req.volumeId || other.format !== "qcow2") continue;
        const info = await this.info(dir, other.id, other.format).catch(() => undefined);
        if (info?.backingVolumeId === req.volumeId) throw new QuantixError("failed_precondition", `volume '${req.volumeId}' backs volume '${other.id}' (a linked clone) on node '${this.o.nodeId}': reverting it would change the clone's data`);
      }
      await this.qemuImg(["snapshot", "-q", "--image-opts", "-a", req.snapshotId, qcow2Opts(path)]);
      return found;
    });
  }

  deleteSnapshot(req: SnapshotRef): Promise<void> {
    return this.withQcow2(req, async (path) => {
      await this.findSnapshot(path, req);
      await this.qemuImg(["snapshot", "-q", "--image-opts", "-d", req.snapshotId, qcow2Opts(path)]);
    });
  }

  async listSnapshots(req: VolumeRef): Promise<NodeSnapshot[]> {
    const dir = this.poolDir(req.poolId);
    const format = await this.existing(dir, req);
    return this.snapshotsOf(join(dir, `${req.volumeId}.${format}`), format);
  }

  /** Runs `fn` on a qcow2 volume's file under the volume's lock; raw volumes have no snapshots. */
  private withQcow2<R>(req: SnapshotRef, fn: (path: string, dir: string) => Promise<R>): Promise<R> {
    return this.locked(req, async () => {
      checkId("snapshot_id", req.snapshotId);
      const dir = this.poolDir(req.poolId);
      const format = await this.existing(dir, req);
      if (format !== "qcow2") throw new QuantixError("failed_precondition", `volume '${req.volumeId}' is raw: only qcow2 volumes have snapshots`);
      return fn(join(dir, `${req.volumeId}.qcow2`), dir);
    });
  }

  private async findSnapshot(path: string, req: SnapshotRef): Promise<NodeSnapshot> {
    const found = (await this.snapshotsOf(path, "qcow2")).find((x) => x.snapshotId === req.snapshotId);
    if (!found) throw new QuantixError("not_found", `snapshot '${req.snapshotId}' is not in volume '${req.volumeId}' on node '${this.o.nodeId}'`);
    return found;
  }

  /** The image's internal snapshots whose tags are ids (those the control plane took), oldest first. */
  private async snapshotsOf(path: string, format: NodeVolumeFormat): Promise<NodeSnapshot[]> {
    if (format !== "qcow2") return [];
    const j = JSON.parse(await this.qemuImg(["info", "--output=json", "-U", "-f", format, path])) as { snapshots?: { name: string; "date-sec": number; "date-nsec": number; "vm-state-size": number }[] };
    return (j.snapshots ?? []).filter((x) => ID_PATTERN.test(x.name)).map((x) => ({ snapshotId: x.name, takenAtMs: x["date-sec"] * 1000 + Math.floor(x["date-nsec"] / 1e6), vmStateBytes: BigInt(x["vm-state-size"]) }));
  }

  /** A pool's capacity (statfs of its file system) and its volumes' provisioned sizes. */
  private async measure(poolId: string, dir: string): Promise<NodePool> {
    const fs = await statfs(dir, { bigint: true });
    const volumes = await this.volumeIds(dir);
    let provisioned = 0n;
    // A volume deleted (or still being renamed into place) while the pool is measured is not counted, nor an error.
    for (const v of volumes) provisioned += await this.info(dir, v.id, v.format).then((i) => i.virtualSizeBytes, () => 0n);
    const capacity = fs.blocks * fs.bsize;
    return { poolId, capacityBytes: capacity, availableBytes: fs.bavail * fs.bsize, usedBytes: capacity - fs.bfree * fs.bsize, provisionedBytes: provisioned, volumeCount: volumes.length, path: dir };
  }

  /** RESOURCE_EXHAUSTED, creating nothing, when `bytes` more would not fit in the pool's free space. */
  private async roomFor(dir: string, poolId: string, bytes: bigint): Promise<void> {
    const fs = await statfs(dir, { bigint: true });
    const free = fs.bavail * fs.bsize;
    if (bytes > free) throw new QuantixError("resource_exhausted", `pool '${poolId}' on node '${this.o.nodeId}' has ${free} bytes free, less than the ${bytes} bytes asked for`);
  }

  private async cloneInto(dir: string, req: VolumeRef & { format: NodeVolumeFormat; sizeBytes: bigint; source?: NodeVolumeSource }, partial: string): Promise<void> {
    const src = req.source!;
    checkId("source.volume_id", src.volumeId);
    if (src.snapshotId !== undefined) checkId("source.snapshot_id", src.snapshotId);
    const srcFormat = await this.find(dir, src.volumeId);
    if (!srcFormat) throw new QuantixError("not_found", `source volume '${src.volumeId}' does not exist in pool '${req.poolId}' on node '${this.o.nodeId}'`);
    const srcPath = join(dir, `${src.volumeId}.${srcFormat}`);
    const srcInfo = await this.info(dir, src.volumeId, srcFormat);
    const size = req.sizeBytes > srcInfo.virtualSizeBytes ? req.sizeBytes : srcInfo.virtualSizeBytes;
    if (src.snapshotId !== undefined) {
      if (src.linked) throw new QuantixError("failed_precondition", "a volume from a snapshot is a full copy, never a linked clone");
      if (!(await this.snapshotsOf(srcPath, srcFormat)).some((x) => x.snapshotId === src.snapshotId)) throw new QuantixError("not_found", `snapshot '${src.snapshotId}' is not in volume '${src.volumeId}' on node '${this.o.nodeId}'`);
      await this.roomFor(dir, req.poolId, size);
      // The snapshot's id was checked against the id pattern: nothing else reaches the option.
      await this.qemuImg(["convert", "-f", "qcow2", "-O", req.format, "-l", `snapshot.name=${src.snapshotId}`, srcPath, partial]);
      if (size > srcInfo.virtualSizeBytes) await this.qemuImg(["resize", "-q", "-f", req.format, partial, String(size)]);
      return;
    }
    if (src.linked) {
      if (req.format !== "qcow2") throw new QuantixError("failed_precondition", "a linked clone must be QCOW2");
      await this.roomFor(dir, req.poolId, 0n);
      await this.qemuImg(["create", "-q", "-f", "qcow2", "-b", srcPath, "-F", srcFormat, partial, String(size)]);
      return;
    }
    await this.roomFor(dir, req.poolId, size);
    // -U: the source may be in use by a running VM (a crash-consistent copy).
    await this.qemuImg(["convert", "-U", "-f", srcFormat, "-O", req.format, srcPath, partial]);
    if (size > srcInfo.virtualSizeBytes) await this.qemuImg(["resize", "-q", "-f", req.format, partial, String(size)]);
  }

  private async info(dir: string, volumeId: string, format: NodeVolumeFormat): Promise<NodeVolume> {
    const out = await this.qemuImg(["info", "--output=json", "-U", "-f", format, join(dir, `${volumeId}.${format}`)]);
    const j = JSON.parse(out) as { "virtual-size": number; "actual-size"?: number; "backing-filename"?: string };
    const backing = j["backing-filename"] ? basename(j["backing-filename"]).replace(/\.(qcow2|raw)$/, "") : "";
    return { volumeId, format, virtualSizeBytes: BigInt(j["virtual-size"]), actualSizeBytes: BigInt(j["actual-size"] ?? 0), backingVolumeId: backing, path: join(dir, `${volumeId}.${format}`) };
  }

  private async existing(dir: string, req: VolumeRef): Promise<NodeVolumeFormat> {
    checkId("volume_id", req.volumeId);
    const format = await this.find(dir, req.volumeId);
    if (!format) throw new QuantixError("not_found", `volume '${req.volumeId}' does not exist in pool '${req.poolId}' on node '${this.o.nodeId}'`);
    return format;
  }

  private async find(dir: string, volumeId: string): Promise<NodeVolumeFormat | undefined> {
    for (const f of FORMATS) if (await stat(join(dir, `${volumeId}.${f}`)).then(() => true, () => false)) return f;
    return undefined;
  }

  private async volumeIds(dir: string): Promise<{ id: string; format: NodeVolumeFormat }[]> {
    const out: { id: string; format: NodeVolumeFormat }[] = [];
    for (const name of (await readdir(dir)).sort()) {
      const m = /^([a-zA-Z0-9][a-zA-Z0-9_.-]*)\.(qcow2|raw)$/.exec(name);
      if (m && ID_PATTERN.test(m[1]!)) out.push({ id: m[1]!, format: m[2] as NodeVolumeFormat });
    }
    return out;
  }

  private poolDir(poolId: string): string {
    checkId("pool_id", poolId);
    const dir = this.pools.get(poolId);
    if (!dir) throw new QuantixError("failed_precondition", `pool '${poolId}' is not set up on node '${this.o.nodeId}' yet`);
    return dir;
  }

  /** A SHARED_DIR path, accepted only when it resolves to a directory strictly below a configured shared directory. */
  private async sharedDir(path: string): Promise<string> {
    const real = await realpath(path).catch(() => undefined);
    if (!real || !(await stat(real)).isDirectory()) throw new QuantixError("failed_precondition", `the shared directory of the pool does not exist on node '${this.o.nodeId}'`);
    for (const base of this.o.sharedDirs ?? []) {
      const b = await realpath(base).catch(() => undefined);
      if (b && real.startsWith(b.endsWith(sep) ? b : b + sep)) return real;
    }
    throw new QuantixError("failed_precondition", `node '${this.o.nodeId}' accepts shared pools only below its shared directories (${(this.o.sharedDirs ?? []).length === 0 ? "none configured: QUANTIX_SHARED_DIRS" : "QUANTIX_SHARED_DIRS"})`);
  }

  private async qemuImg(args: string[]): Promise<string> {
    try {
      const { stdout } = await run(this.o.qemuImg ?? "qemu-img", args, { maxBuffer: 16 << 20, timeout: 600_000 });
      return stdout;
    } catch (err) {
      const e = err as { code?: unknown; stderr?: string };
      if (e.code === "ENOENT") throw new QuantixError("failed_precondition", `qemu-img is not installed on node '${this.o.nodeId}' (Debian: qemu-utils)`, [], { cause: err });
      // qemu-img's message names host paths: kept for the log (cause), not for the client.
      const lock = /lock/i.test(e.stderr ?? "");
      throw new QuantixError(lock ? "failed_precondition" : "internal", lock ? "the volume is in use by a running VM" : `qemu-img ${args[0]} failed on node '${this.o.nodeId}'`, [], { cause: err });
    }
  }

  /** Runs `fn` after every earlier call on the same volume. */
  private locked<R>(ref: VolumeRef, fn: () => Promise<R>): Promise<R> {
    return this.serial(`${ref.poolId}/${ref.volumeId}`, fn);
  }

  /** Runs `fn` after every earlier call under `key` (a volume, or a pool's ensure), whatever their outcome. */
  private serial<R>(key: string, fn: () => Promise<R>): Promise<R> {
    const prev = this.locks.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.locks.set(key, tail);
    void tail.then(() => {
      if (this.locks.get(key) === tail) this.locks.delete(key);
    });
    return next;
  }
}

/** `qemu-img snapshot` has no `-f`: the format is named through --image-opts (a ',' in the path doubled, as the option syntax escapes it). */
function qcow2Opts(path: string): string {
  return `driver=qcow2,file.driver=file,file.filename=${path.replaceAll(",", ",,")}`;
}

function checkId(field: string, id: string): void {
  if (!ID_PATTERN.test(id)) throw new QuantixError("invalid_argument", `${field} must be an id`);
}
