import { notFound, QuantixError } from "@quantix/core";
import { STORAGE_ID_PATTERN } from "./ids.js";
import type { Pools } from "./pools.js";
import type { QemuImg } from "./qemu-img.js";
import type { VolumeInfo, Volumes } from "./volumes.js";

/** An internal snapshot of a qcow2 volume. */
export interface SnapshotInfo {
  readonly id: string;
  readonly volumeId: string;
  readonly poolId: string;
  /** When it was taken, in ms since the epoch (from the image). */
  readonly createdAtMs: number;
  readonly vmStateBytes: bigint;
}

/**
 * Offline internal snapshots of qcow2 volumes (`qemu-img snapshot`), tagged with the
 * snapshot id. Each call holds the volume's lock; qemu-img takes the image's lock too, so
 * a volume a VM holds open fails with FAILED_PRECONDITION "in use" (live snapshots are
 * QMP's). Reverting a volume that is a linked clone's backing file is refused.
 */
export class VolumeSnapshots {
  constructor(
    private readonly pools: Pools,
    private readonly volumes: Volumes,
    private readonly qemuImg: QemuImg,
  ) {}

  /** The volume's snapshots taken by the agent (UUID tags), oldest first. */
  async list(poolId: string, volumeId: string): Promise<SnapshotInfo[]> {
    const volume = await this.volumes.get(poolId, volumeId);
    return this.#list(volume);
  }

  /** Takes snapshot `id` (idempotent). */
  async create(poolId: string, volumeId: string, id: string): Promise<SnapshotInfo> {
    return this.#locked(poolId, volumeId, async (volume) => {
      const existing = (await this.#list(volume)).find((s) => s.id === id);
      if (existing) return existing;
      await this.qemuImg.snapshot(volume.path, "create", id);
      return this.#find(volume, id);
    });
  }

  /** Reverts the volume to snapshot `id`. */
  async revert(poolId: string, volumeId: string, id: string): Promise<SnapshotInfo> {
    return this.#locked(poolId, volumeId, async (volume) => {
      const snapshot = await this.#find(volume, id);
      const dependant = await this.volumes.dependantOf(await this.pools.resolve(poolId), volume);
      if (dependant !== undefined) throw new QuantixError("failed_precondition", `volume '${volumeId}' is the backing file of volume '${dependant}' (a linked clone); reverting it would change the clone's data`);
      await this.qemuImg.snapshot(volume.path, "apply", id);
      return snapshot;
    });
  }

  /** Deletes snapshot `id`. */
  async delete(poolId: string, volumeId: string, id: string): Promise<void> {
    await this.#locked(poolId, volumeId, async (volume) => {
      await this.#find(volume, id);
      await this.qemuImg.snapshot(volume.path, "delete", id);
    });
  }

  async #locked<T>(poolId: string, volumeId: string, fn: (volume: VolumeInfo) => Promise<T>): Promise<T> {
    const release = await this.volumes.lock(poolId, volumeId);
    try {
      const volume = await this.volumes.get(poolId, volumeId);
      if (volume.format !== "qcow2") throw new QuantixError("failed_precondition", `volume '${volumeId}' is raw: only qcow2 volumes have snapshots`);
      return await fn(volume);
    } finally {
      release();
    }
  }

  async #find(volume: VolumeInfo, id: string): Promise<SnapshotInfo> {
    const found = (await this.#list(volume)).find((s) => s.id === id);
    if (!found) throw notFound("snapshot", id);
    return found;
  }

  async #list(volume: VolumeInfo): Promise<SnapshotInfo[]> {
    if (volume.format !== "qcow2") return [];
    const info = await this.qemuImg.info(volume.path, "qcow2");
    return (info.snapshots ?? [])
      .filter((s) => STORAGE_ID_PATTERN.test(s.name))
      .map((s) => ({ id: s.name, volumeId: volume.id, poolId: volume.poolId, createdAtMs: s["date-sec"] * 1000 + Math.floor(s["date-nsec"] / 1e6), vmStateBytes: BigInt(s["vm-state-size"]) }));
  }
}
