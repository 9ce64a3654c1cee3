import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import { ListVmSnapshotsResponseSchema, VmSnapshotSchema, type VmService, type VmSnapshot } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import type { VmSnapshotInfo } from "../backend.js";
import type { VmManager } from "../vm-manager.js";

type SnapshotMethods = Pick<ServiceImpl<typeof VmService>, "snapshotVm" | "revertVmSnapshot" | "deleteVmSnapshot" | "listVmSnapshots">;

/** vmm.v1 VmService's VM snapshot RPCs over the VmManager: conversion only. */
export function vmSnapshotRoutes(m: VmManager): SnapshotMethods {
  return {
    snapshotVm: async (req) => toVmSnapshot(req.vmId, await m.snapshotVm(req.vmId, req.snapshotId, req.includeMemory, req.diskIds)),
    revertVmSnapshot: async (req) => toVmSnapshot(req.vmId, await m.revertVmSnapshot(req.vmId, req.snapshotId, req.diskIds)),
    async deleteVmSnapshot(req) {
      await m.deleteVmSnapshot(req.vmId, req.snapshotId);
      return {};
    },
    listVmSnapshots: async (req) => create(ListVmSnapshotsResponseSchema, { snapshots: (await m.listVmSnapshots(req.vmId)).map((s) => toVmSnapshot(req.vmId, s)) }),
  };
}

function toVmSnapshot(vmId: string, s: VmSnapshotInfo): VmSnapshot {
  return create(VmSnapshotSchema, {
    snapshotId: s.snapshotId,
    vmId,
    memoryIncluded: s.memoryIncluded,
    vmStateBytes: s.vmStateBytes,
    diskIds: [...s.diskIds],
    createdAt: timestampFromMs(s.createdAtMs),
    complete: s.complete,
  });
}
