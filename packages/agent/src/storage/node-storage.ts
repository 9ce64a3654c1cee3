import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { pipeline } from "node:stream/promises";
import { QuantixError } from "@quantix/core";
import { poolCapabilityNames, probePoolTypes, type PoolTypeSupport } from "./capabilities.js";
import { importVolume, type ImportProgress, type ImportSpec } from "./import-volume.js";
import { Pools, type FsCapacity, type ManagedPoolType, type ResolvedPool } from "./pools.js";
import { QemuImg } from "./qemu-img.js";
import { uploadVolume, type UploadResult, type UploadSpec } from "./upload-volume.js";
import { VolumeSnapshots } from "./snapshots.js";
import { Volumes, volumeFiles, type VolumeInfo } from "./volumes.js";

/** Where an agent keeps its pools. */
export interface NodeStorageOptions {
  /** The directory of pool entries (VMCP_POOL_ROOT); DIR pools are `<poolRoot>/<pool id>`. */
  readonly poolRoot: string;
  /** The agent's shared directories (VMCP_SHARED_DIRS). */
  readonly sharedDirs: readonly string[];
  readonly qemuImg?: QemuImg;
  /** Directories searched for the probed binaries (tests); default PATH, /usr/sbin, /sbin. */
  readonly binDirs?: readonly string[];
}

/** A pool with its capacity measured now. */
export interface PoolView extends ResolvedPool {
  readonly capacity: FsCapacity & { readonly provisionedBytes: bigint; readonly allocatedBytes: bigint; readonly volumeCount: number };
}

/** What GetStorageCapabilities reports. */
export interface StorageCapabilityView {
  readonly poolTypes: PoolTypeSupport[];
  readonly qemuImgVersion: string | undefined;
}

/** The node side of storage: the pools and volumes of this host (StorageService's use cases). */
/** ReadVolume's largest chunk. */
export const READ_CHUNK_BYTES = 1 << 20;

export class NodeStorage {
  readonly pools: Pools;
  readonly volumes: Volumes;
  readonly snapshots: VolumeSnapshots;
  readonly #qemuImg: QemuImg;
  readonly #binDirs: readonly string[] | undefined;

  constructor(options: NodeStorageOptions) {
    this.#qemuImg = options.qemuImg ?? new QemuImg();
    this.pools = new Pools(options.poolRoot, options.sharedDirs);
    this.volumes = new Volumes(this.pools, this.#qemuImg);
    this.snapshots = new VolumeSnapshots(this.pools, this.volumes, this.#qemuImg);
    this.#binDirs = options.binDirs;
  }

  /** Makes a pool exist and returns it measured. */
  async ensurePool(id: string, type: ManagedPoolType, path: string): Promise<PoolView> {
    await this.pools.ensure(id, type, path);
    return this.getPool(id);
  }

  /** A pool with its file system's capacity and its volumes' provisioned and allocated bytes. */
  async getPool(id: string): Promise<PoolView> {
    const pool = await this.pools.resolve(id);
    const volumes = await this.volumes.list(id);
    const fs = await this.pools.capacity(pool.dir);
    let provisionedBytes = 0n;
    let allocatedBytes = 0n;
    for (const v of volumes) {
      provisionedBytes += v.virtualSizeBytes; // 0 for a file with a problem
      allocatedBytes += v.actualSizeBytes;
    }
    return { ...pool, capacity: { ...fs, provisionedBytes, allocatedBytes, volumeCount: volumes.length } };
  }

  /** Removes an empty pool; refused while it holds volumes or a volume call runs in it. */
  async deletePool(id: string): Promise<void> {
    const pool = await this.pools.resolve(id);
    await this.pools.deleting(id, async () => {
      if (this.volumes.busy(id)) throw new QuantixError("failed_precondition", `pool '${id}' has volume calls in progress; retry when they end`);
      const left = await volumeFiles(pool.dir);
      if (left.length > 0) throw new QuantixError("failed_precondition", `pool '${id}' holds ${left.length} volume(s), e.g. '${left[0]![0]}'; delete them first`);
      await this.pools.remove(pool);
    });
  }

  /** Imports an image from a URL into a new volume, yielding progress; see importVolume. */
  importVolume(spec: ImportSpec, signal: AbortSignal): AsyncGenerator<ImportProgress> {
    return importVolume({ pools: this.pools, volumes: this.volumes, qemuImg: this.#qemuImg }, spec, signal);
  }

  /** Receives an image's bytes into a new volume; see uploadVolume. */
  uploadVolume(spec: UploadSpec, chunks: AsyncIterable<Uint8Array>, signal: AbortSignal): Promise<UploadResult> {
    return uploadVolume({ pools: this.pools, volumes: this.volumes, qemuImg: this.#qemuImg }, spec, chunks, signal);
  }

  /** A volume with the SHA-256 of its file (read whole, under the volume's lock). */
  async volumeWithSha256(poolId: string, id: string): Promise<{ volume: VolumeInfo; sha256: string }> {
    const release = await this.volumes.lock(poolId, id);
    try {
      const volume = await this.volumes.get(poolId, id);
      const hash = createHash("sha256");
      await pipeline(createReadStream(volume.path), hash);
      return { volume, sha256: hash.digest("hex") };
    } finally {
      release();
    }
  }

  /**
   * A volume's file as stored, in chunks of at most `READ_CHUNK_BYTES`, under the volume's
   * lock (released when the reader finishes or stops). FAILED_PRECONDITION for a volume
   * with a backing file.
   */
  async *readVolume(poolId: string, id: string, signal?: AbortSignal): AsyncGenerator<Uint8Array> {
    const release = await this.volumes.lock(poolId, id);
    try {
      const volume = await this.volumes.get(poolId, id);
      if (volume.backingVolumeId !== undefined) throw new QuantixError("failed_precondition", `volume '${id}' is a linked clone of volume '${volume.backingVolumeId}': its data is not in one file`);
      for await (const chunk of createReadStream(volume.path, { highWaterMark: READ_CHUNK_BYTES, ...(signal ? { signal } : {}) })) yield chunk as Buffer;
    } finally {
      release();
    }
  }

  /** Which pool types this host supports, probed now. */
  async capabilities(): Promise<StorageCapabilityView> {
    const qemuImgVersion = await this.#qemuImg.version();
    const poolTypes = await probePoolTypes({ sharedDirs: this.pools.sharedDirs, qemuImgVersion, ...(this.#binDirs ? { binDirs: this.#binDirs } : {}) });
    return { poolTypes, qemuImgVersion };
  }

  /** The node capabilities naming the pool types this host serves (registered with the control plane). */
  async capabilityNames(): Promise<string[]> {
    return poolCapabilityNames((await this.capabilities()).poolTypes);
  }
}
