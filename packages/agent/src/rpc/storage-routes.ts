import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  ImportPhase,
  ImportVolumeProgressSchema,
  ListVolumeSnapshotsResponseSchema,
  ListVolumesResponseSchema,
  ReadVolumeResponseSchema,
  PoolSchema,
  StorageCapabilitiesSchema,
  StoragePoolType,
  StorageService,
  UploadVolumeResponseSchema,
  VolumeFormat,
  VolumeSchema,
  VolumeSnapshotSchema,
  type Pool,
  type Volume,
  type VolumeSnapshot,
} from "@quantix/api/gen/vmm/v1/storage_pb.js";
import { QuantixError } from "@quantix/core";
import { route, type Route } from "@quantix/rpc";
import type { NodeStorage, PoolView } from "../storage/node-storage.js";
import { checkResize, createVolumeSpec, ensurePoolArgs, importSpec, requireIds, uploadSpec } from "../storage/storage-validation.js";
import type { SnapshotInfo } from "../storage/snapshots.js";
import type { VolumeInfo } from "../storage/volumes.js";

/** vmm.v1 StorageService over a NodeStorage: validation and conversion; the rules live in storage/. */
export function storageServiceImpl(s: NodeStorage): ServiceImpl<typeof StorageService> {
  return {
    async ensurePool(req) {
      const { id, type, path } = ensurePoolArgs(req);
      return toPool(await s.ensurePool(id, type, path));
    },
    async getPool(req) {
      requireIds({ pool_id: req.poolId });
      return toPool(await s.getPool(req.poolId));
    },
    async deletePool(req) {
      requireIds({ pool_id: req.poolId });
      await s.deletePool(req.poolId);
      return {};
    },
    createVolume: async (req) => toVolume(await s.volumes.create(createVolumeSpec(req))),
    async getVolume(req) {
      requireIds({ pool_id: req.poolId, volume_id: req.volumeId });
      if (req.sha256) {
        const { volume, sha256 } = await s.volumeWithSha256(req.poolId, req.volumeId);
        return create(VolumeSchema, { ...toVolume(volume), sha256 });
      }
      return toVolume(await s.volumes.get(req.poolId, req.volumeId));
    },
    async *readVolume(req, ctx) {
      requireIds({ pool_id: req.poolId, volume_id: req.volumeId });
      for await (const data of s.readVolume(req.poolId, req.volumeId, ctx.signal)) yield create(ReadVolumeResponseSchema, { data });
    },
    async listVolumes(req) {
      requireIds({ pool_id: req.poolId });
      return create(ListVolumesResponseSchema, { volumes: (await s.volumes.list(req.poolId)).map(toVolume) });
    },
    async resizeVolume(req) {
      checkResize(req);
      return toVolume(await s.volumes.resize(req.poolId, req.volumeId, req.sizeBytes, req.allowShrink));
    },
    async deleteVolume(req) {
      requireIds({ pool_id: req.poolId, volume_id: req.volumeId });
      await s.volumes.delete(req.poolId, req.volumeId, req.force);
      return {};
    },
    async createVolumeSnapshot(req) {
      requireIds({ pool_id: req.poolId, volume_id: req.volumeId, snapshot_id: req.snapshotId });
      return toSnapshot(await s.snapshots.create(req.poolId, req.volumeId, req.snapshotId));
    },
    async listVolumeSnapshots(req) {
      requireIds({ pool_id: req.poolId, volume_id: req.volumeId });
      return create(ListVolumeSnapshotsResponseSchema, { snapshots: (await s.snapshots.list(req.poolId, req.volumeId)).map(toSnapshot) });
    },
    async revertVolumeSnapshot(req) {
      requireIds({ pool_id: req.poolId, volume_id: req.volumeId, snapshot_id: req.snapshotId });
      return toSnapshot(await s.snapshots.revert(req.poolId, req.volumeId, req.snapshotId));
    },
    async deleteVolumeSnapshot(req) {
      requireIds({ pool_id: req.poolId, volume_id: req.volumeId, snapshot_id: req.snapshotId });
      await s.snapshots.delete(req.poolId, req.volumeId, req.snapshotId);
      return {};
    },
    async *importVolume(req, ctx) {
      for await (const p of s.importVolume(importSpec(req), ctx.signal)) {
        yield create(ImportVolumeProgressSchema, {
          phase: PHASES[p.phase],
          bytesDone: p.bytesDone,
          bytesTotal: p.bytesTotal,
          sha256: p.sha256 ?? "",
          detectedFormat: p.detectedFormat ?? "",
          ...(p.volume ? { volume: toVolume(p.volume) } : {}),
        });
      }
    },
    async uploadVolume(reqs, ctx) {
      const it = reqs[Symbol.asyncIterator]();
      const first = await it.next();
      const spec = uploadSpec(first.done ? undefined : first.value);
      // Every message after the header is a chunk.
      const chunks = async function* (): AsyncGenerator<Uint8Array> {
        for (;;) {
          const r = await it.next();
          if (r.done) return;
          if (r.value.content.case !== "chunk") throw new QuantixError("invalid_argument", "only the first message carries the header; the others carry chunks", [{ field: "chunk", reason: "REQUIRED", description: "every message after the header must carry a chunk" }]);
          yield r.value.content.value;
        }
      };
      const r = await s.uploadVolume(spec, chunks(), ctx.signal);
      return create(UploadVolumeResponseSchema, { volume: toVolume(r.volume), bytesReceived: r.bytesReceived, sha256: r.sha256, detectedFormat: r.detectedFormat });
    },
    async getStorageCapabilities() {
      const c = await s.capabilities();
      return create(StorageCapabilitiesSchema, {
        poolTypes: c.poolTypes.map((p) => ({ type: StoragePoolType[p.type], available: p.available, reason: p.reason, managed: p.managed })),
        volumeFormats: c.qemuImgVersion === undefined ? [] : [VolumeFormat.QCOW2, VolumeFormat.RAW],
        qemuImgVersion: c.qemuImgVersion ?? "",
      });
    },
  };
}

const PHASES = { downloading: ImportPhase.DOWNLOADING, verifying: ImportPhase.VERIFYING, converting: ImportPhase.CONVERTING, ready: ImportPhase.READY } as const;

/** StorageService's route, for the agent's server. */
export function storageRoute(s: NodeStorage): Route {
  return route(StorageService, storageServiceImpl(s));
}

function toPool(p: PoolView): Pool {
  return create(PoolSchema, {
    poolId: p.id,
    type: StoragePoolType[p.type],
    path: p.dir,
    capacity: {
      totalBytes: p.capacity.totalBytes,
      availableBytes: p.capacity.availableBytes,
      usedBytes: p.capacity.usedBytes,
      provisionedBytes: p.capacity.provisionedBytes,
      allocatedBytes: p.capacity.allocatedBytes,
      volumeCount: p.capacity.volumeCount,
    },
  });
}

function toSnapshot(x: SnapshotInfo): VolumeSnapshot {
  return create(VolumeSnapshotSchema, { snapshotId: x.id, volumeId: x.volumeId, poolId: x.poolId, createdAt: timestampFromMs(x.createdAtMs), vmStateBytes: x.vmStateBytes });
}

function toVolume(v: VolumeInfo): Volume {
  return create(VolumeSchema, {
    volumeId: v.id,
    poolId: v.poolId,
    format: v.format === "qcow2" ? VolumeFormat.QCOW2 : VolumeFormat.RAW,
    virtualSizeBytes: v.virtualSizeBytes,
    actualSizeBytes: v.actualSizeBytes,
    backingVolumeId: v.backingVolumeId ?? "",
    path: v.path,
    problem: v.problem ?? "",
  });
}
