import { lstat, readdir, rename, rm, stat, unlink } from "node:fs/promises";
import { join } from "node:path";
import { notFound, QuantixError } from "@quantix/core";
import { ImageRefusedError, inspectImage } from "./inspect-image.js";
import { KeyedLock } from "./keyed-lock.js";
import type { Pools, ResolvedPool } from "./pools.js";
import type { QemuImg } from "./qemu-img.js";

/** The formats of volumes. */
export type VolumeFormatName = "qcow2" | "raw";

/** A volume as qemu-img reports it. */
export interface VolumeInfo {
  readonly id: string;
  readonly poolId: string;
  readonly format: VolumeFormatName;
  readonly virtualSizeBytes: bigint;
  readonly actualSizeBytes: bigint;
  /** The volume of the same pool it is a linked clone of. */
  readonly backingVolumeId: string | undefined;
  readonly path: string;
  /** Why the agent refuses to use the file (listings only); sizes are then the file's. */
  readonly problem?: string;
}

/** What to create; ids and sizes are validated by the caller (storage-validation.ts). */
export interface CreateVolumeSpec {
  readonly poolId: string;
  readonly id: string;
  readonly format: VolumeFormatName;
  /** Virtual size; 0n for a clone means the source's. */
  readonly sizeBytes: bigint;
  /** A full copy may be of one of the source's snapshots. */
  readonly source?: { readonly volumeId: string; readonly mode: "linked" | "full"; readonly snapshotId?: string };
}

const VOLUME_FILE = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})\.(qcow2|raw)$/;

/**
 * The volumes of a host's pools: files `<pool dir>/<volume id>.<format>`, made and read
 * by qemu-img with the format always named. Calls on one volume run one at a time (a
 * clone also holds its source). A new file is written under a `.partial` name and
 * renamed into place, so a failed or interrupted create never leaves a volume behind.
 */
export class Volumes {
  readonly #lock = new KeyedLock();

  constructor(
    private readonly pools: Pools,
    private readonly qemuImg: QemuImg,
  ) {}

  /** A volume, inspected now (a file found in a pool is checked as any untrusted image is). */
  async get(poolId: string, id: string): Promise<VolumeInfo> {
    const pool = await this.pools.resolve(poolId);
    return this.#info(pool, id, await this.#find(pool, id, "volume"));
  }

  /** Every volume of a pool, ordered by id. */
  async list(poolId: string): Promise<VolumeInfo[]> {
    const pool = await this.pools.resolve(poolId);
    const out: VolumeInfo[] = [];
    for (const [id, format] of await volumeFiles(pool.dir)) {
      out.push(await this.#info(pool, id, format).catch(async (err: unknown) => {
        if (!(err instanceof ImageRefusedError)) throw err;
        const path = join(pool.dir, `${id}.${format}`);
        const st = await lstat(path, { bigint: true });
        return { id, poolId: pool.id, format, virtualSizeBytes: 0n, actualSizeBytes: st.blocks * 512n, backingVolumeId: undefined, path, problem: err.message };
      }));
    }
    return out;
  }

  /** Creates a volume (idempotent for an identical request); see CreateVolume in storage.proto. */
  async create(spec: CreateVolumeSpec): Promise<VolumeInfo> {
    const keys = [key(spec.poolId, spec.id), ...(spec.source ? [key(spec.poolId, spec.source.volumeId)] : [])];
    return this.#lock.with(keys, async () => {
      const pool = await this.pools.resolve(spec.poolId);
      const existing = await this.#find(pool, spec.id);
      if (existing !== undefined) {
        const info = await this.#info(pool, spec.id, existing);
        const backing = spec.source?.mode === "linked" ? spec.source.volumeId : undefined;
        if (existing === spec.format && (spec.sizeBytes === 0n || info.virtualSizeBytes === spec.sizeBytes) && info.backingVolumeId === backing) return info;
        const made = info.backingVolumeId === undefined ? "" : ` linked to volume '${info.backingVolumeId}'`;
        throw new QuantixError("already_exists", `volume '${spec.id}' exists as ${existing} of ${info.virtualSizeBytes} bytes${made}`);
      }
      let source: VolumeInfo | undefined;
      if (spec.source) {
        // A linked clone reads its source for ever: a source a VM is writing would change
        // under it. Read without -U, qemu-img needs the image's lock, so this fails while one does.
        const linked = spec.source.mode === "linked";
        source = await this.#info(pool, spec.source.volumeId, await this.#find(pool, spec.source.volumeId, "source volume"), !linked);
        if (spec.sizeBytes !== 0n && spec.sizeBytes < source.virtualSizeBytes) {
          throw invalid("size_bytes", "OUT_OF_RANGE", `must be 0 or at least the source volume's ${source.virtualSizeBytes} bytes, got ${spec.sizeBytes}`);
        }
        const snapshot = spec.source.snapshotId;
        if (snapshot !== undefined) {
          if (source.format !== "qcow2") throw new QuantixError("failed_precondition", `source volume '${source.id}' is raw: only qcow2 volumes have snapshots`);
          const names = (await this.qemuImg.info(source.path, "qcow2")).snapshots?.map((x) => x.name) ?? [];
          if (!names.includes(snapshot)) throw notFound("snapshot", snapshot);
        }
      }
      const size = spec.sizeBytes !== 0n ? spec.sizeBytes : source!.virtualSizeBytes;
      const { availableBytes } = await this.pools.capacity(pool.dir);
      if (size > availableBytes) {
        throw new QuantixError("resource_exhausted", `pool '${pool.id}' has ${availableBytes} bytes available, less than the volume's ${size} bytes`);
      }
      const final = join(pool.dir, `${spec.id}.${spec.format}`);
      const partial = join(pool.dir, `.${spec.id}.${spec.format}.partial`);
      try {
        await rm(partial, { force: true });
        if (!source) await this.qemuImg.create(partial, spec.format, size);
        else if (spec.source!.mode === "linked") await this.qemuImg.create(partial, "qcow2", size, { file: `${source.id}.${source.format}`, format: source.format });
        else {
          await this.qemuImg.convert(source.path, source.format, partial, spec.format, spec.source!.snapshotId);
          const copied = BigInt((await this.qemuImg.info(partial, spec.format))["virtual-size"]);
          if (size > copied) await this.qemuImg.resize(partial, spec.format, size, false);
        }
        await rename(partial, final);
      } catch (err) {
        await rm(partial, { force: true });
        throw err;
      }
      // A new empty volume or linked clone is what qemu-img was just told to make: its size
      // and backing file are known, only the allocation is measured (one qemu-img run the
      // less per create: the bench's linked-clone row). A copy, or a size qemu-img rounds up
      // to whole sectors, is measured by qemu-img.
      if ((!source || spec.source!.mode === "linked") && size % 512n === 0n) {
        const st = await stat(final, { bigint: true });
        return { id: spec.id, poolId: pool.id, format: spec.format, virtualSizeBytes: size, actualSizeBytes: st.blocks * 512n, backingVolumeId: source?.id, path: final };
      }
      return this.#info(pool, spec.id, spec.format);
    });
  }

  /** Sets a volume's virtual size offline; see ResizeVolume in storage.proto. */
  async resize(poolId: string, id: string, sizeBytes: bigint, allowShrink: boolean): Promise<VolumeInfo> {
    return this.#lock.with([key(poolId, id)], async () => {
      const pool = await this.pools.resolve(poolId);
      const current = await this.#info(pool, id, await this.#find(pool, id, "volume"));
      if (sizeBytes === current.virtualSizeBytes) return current;
      const shrink = sizeBytes < current.virtualSizeBytes;
      if (shrink && !allowShrink) {
        throw new QuantixError("failed_precondition", `volume '${id}' is ${current.virtualSizeBytes} bytes; shrinking it to ${sizeBytes} loses data past the new end and needs allow_shrink`);
      }
      if (shrink) {
        const dependant = await this.#dependant(pool, `${id}.${current.format}`);
        if (dependant !== undefined) throw new QuantixError("failed_precondition", `volume '${id}' is the backing file of volume '${dependant}' (a linked clone); it cannot shrink under it`);
      }
      if (!shrink) {
        const { availableBytes } = await this.pools.capacity(pool.dir);
        const growth = sizeBytes - current.virtualSizeBytes;
        if (growth > availableBytes) throw new QuantixError("resource_exhausted", `pool '${pool.id}' has ${availableBytes} bytes available, less than the ${growth} bytes the volume grows by`);
      }
      await this.qemuImg.resize(current.path, current.format, sizeBytes, shrink);
      return this.#info(pool, id, current.format);
    });
  }

  /** Deletes a volume's file; see DeleteVolume in storage.proto. */
  async delete(poolId: string, id: string, force: boolean): Promise<void> {
    await this.#lock.with([key(poolId, id)], async () => {
      const pool = await this.pools.resolve(poolId);
      const format = await this.#find(pool, id, "volume");
      const path = join(pool.dir, `${id}.${format}`);
      if (!force) {
        const dependant = await this.#dependant(pool, `${id}.${format}`);
        if (dependant !== undefined) throw new QuantixError("failed_precondition", `volume '${id}' is the backing file of volume '${dependant}' (a linked clone); delete that first or use force`);
        // Without -U qemu-img needs the image's lock: it fails while a VM has it open. Only
        // for a regular file: a symlink or FIFO someone put in the pool is never opened.
        if ((await lstat(path)).isFile()) await this.qemuImg.info(path, format, { shared: false });
      }
      await unlink(path);
    });
  }

  /** Holds volume `id` of pool `poolId` until the returned function is called (for work outside this class, e.g. an import). */
  lock(poolId: string, id: string): Promise<() => void> {
    return this.#lock.acquire([key(poolId, id)]);
  }

  /** The volume of `pool` that is a linked clone of `volume`, if any. */
  dependantOf(pool: ResolvedPool, volume: VolumeInfo): Promise<string | undefined> {
    return this.#dependant(pool, `${volume.id}.${volume.format}`);
  }

  /** Whether a call on a volume of pool `poolId` is running or waiting. */
  busy(poolId: string): boolean {
    return this.#lock.holds(`${poolId}/`);
  }

  /** The volume of `pool` whose backing file is `file`, if any. Volumes that cannot be read are skipped. */
  async #dependant(pool: ResolvedPool, file: string): Promise<string | undefined> {
    for (const [other, format] of await volumeFiles(pool.dir)) {
      if (format !== "qcow2") continue;
      const info = await this.qemuImg.info(join(pool.dir, `${other}.${format}`), format).catch(() => undefined);
      if (info?.["backing-filename"] === file) return other;
    }
    return undefined;
  }

  /** The format of volume `id` in `pool`; with `what`, NOT_FOUND naming it when there is none. */
  async #find(pool: ResolvedPool, id: string): Promise<VolumeFormatName | undefined>;
  async #find(pool: ResolvedPool, id: string, what: string): Promise<VolumeFormatName>;
  async #find(pool: ResolvedPool, id: string, what?: string): Promise<VolumeFormatName | undefined> {
    for (const format of ["qcow2", "raw"] as const) {
      if (await lstat(join(pool.dir, `${id}.${format}`)).then(() => true, () => false)) return format;
    }
    if (what !== undefined) throw notFound(what, id);
    return undefined;
  }

  async #info(pool: ResolvedPool, id: string, format: VolumeFormatName, shared = true): Promise<VolumeInfo> {
    const path = join(pool.dir, `${id}.${format}`);
    const image = await inspectImage(path, { format, backingDir: pool.dir, qemuImg: this.qemuImg, shared });
    return {
      id,
      poolId: pool.id,
      format,
      virtualSizeBytes: image.virtualSizeBytes,
      actualSizeBytes: image.actualSizeBytes,
      backingVolumeId: image.backing?.file.replace(/\.(qcow2|raw)$/, ""),
      path,
    };
  }
}

/** The pool's volume files as [id, format], ordered by id. */
export async function volumeFiles(dir: string): Promise<[string, VolumeFormatName][]> {
  const out: [string, VolumeFormatName][] = [];
  for (const name of (await readdir(dir)).sort()) {
    const m = VOLUME_FILE.exec(name);
    if (m) out.push([m[1]!, m[2] as VolumeFormatName]);
  }
  return out;
}

const key = (poolId: string, id: string) => `${poolId}/${id}`;

function invalid(field: string, reason: string, description: string): QuantixError {
  return new QuantixError("invalid_argument", `invalid request: ${field}: ${description}`, [{ field, reason, description }]);
}
