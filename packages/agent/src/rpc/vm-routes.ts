import { toPciSlot } from "../migration-layout.js";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  AttachDiskResponseSchema,
  AttachNicResponseSchema,
  DetachNicResponseSchema,
  BackendInfoSchema,
  BootVmResponseSchema,
  CancelMigrationResponseSchema,
  CreateVmResponseSchema,
  DetachDiskResponseSchema,
  GetVmInfoResponseSchema,
  ListVmsResponseSchema,
  PauseVmResponseSchema,
  PlanMigrationResponseSchema,
  PrepareMigrationResponseSchema,
  RebootVmResponseSchema,
  ResizeDiskResponseSchema,
  ResumeVmResponseSchema,
  ShutdownVmResponseSchema,
  SuspendVmResponseSchema,
  type VmService,
} from "@quantix/api/gen/vmm/v1/vm_pb.js";
import type { VmManager } from "../vm-manager.js";
import { attachConsole } from "./console-attach.js";
import { getConsoleOutput, streamConsole } from "./console-routes.js";
import { migrateVm } from "./migration-routes.js";
import { vmSnapshotRoutes } from "./vm-snapshot-routes.js";
import { fromVmState, toVmEvent, toVmState } from "./vm-convert.js";
import { toVmMetrics } from "./vm-metrics.js";

/**
 * vmm.v1 VmService over a VmManager: conversion only, every rule lives in the manager.
 * `backendVersion` is read once at start (asking some hypervisors costs a process).
 */
export function vmServiceImpl(m: VmManager, backendVersion: string): ServiceImpl<typeof VmService> {
  const b = m.backend;
  const ok = (state: Parameters<typeof toVmState>[0]) => ({ success: true, state: toVmState(state) });
  return {
    async createVm(req) {
      const r = await m.create(req.vmId, req.config);
      return create(CreateVmResponseSchema, { vmId: r.vmId, state: toVmState(r.state) });
    },
    async deleteVm(req) {
      await m.delete(req.vmId, req.force);
      return {};
    },
    async bootVm(req) {
      const r = await m.boot(req.vmId);
      return create(BootVmResponseSchema, { ...ok(r.state), ...(r.startedAtMs !== undefined ? { startedAt: timestampFromMs(r.startedAtMs) } : {}) });
    },
    shutdownVm: async (req) => create(ShutdownVmResponseSchema, ok(await m.shutdown(req.vmId, req.force, req.timeoutSeconds))),
    pauseVm: async (req) => create(PauseVmResponseSchema, ok(await m.pause(req.vmId))),
    resumeVm: async (req) => create(ResumeVmResponseSchema, ok(await m.resume(req.vmId))),
    suspendVm: async (req) => create(SuspendVmResponseSchema, ok(await m.suspend(req.vmId))),
    rebootVm: async (req) => create(RebootVmResponseSchema, ok(await m.reboot(req.vmId, req.force))),
    async getVmInfo(req) {
      const info = await m.info(req.vmId);
      return create(GetVmInfoResponseSchema, {
        vmId: info.vmId,
        config: info.config,
        state: toVmState(info.state),
        metrics: toVmMetrics(info.metrics),
        backendInfo: create(BackendInfoSchema, { backendType: b.type, version: backendVersion, capabilities: [...b.capabilities].sort(), processId: info.pid ?? 0 }),
      });
    },
    async listVms(req) {
      const page = await m.list({ state: fromVmState(req.stateFilter), pageSize: req.pageSize, pageToken: req.pageToken, orderBy: req.orderBy });
      return create(ListVmsResponseSchema, {
        vms: page.vms.map((vm) => ({ vmId: vm.vmId, state: toVmState(vm.state), vcpuCount: vm.config.cpu?.vcpuCount ?? 0, memorySizeBytes: vm.config.memory?.sizeBytes ?? 0n })),
        nextPageToken: page.nextPageToken,
        totalCount: page.totalCount,
      });
    },
    getConsoleOutput: (req) => getConsoleOutput(m, req),
    streamConsole: (req, ctx) => streamConsole(m, req, ctx),
    attachConsole: (input, ctx) => attachConsole(m, input, ctx),
    async *watchVms(_req, ctx) {
      for await (const c of m.watch(ctx.signal)) yield toVmEvent(c);
    },
    prepareMigration: async (req) => {
      const prepared = await m.prepareMigration(req.vmId, req.config, req.copyStorage, req.diskCopies, req.deviceLayout);
      return create(PrepareMigrationResponseSchema, { vmId: req.vmId, targetUri: prepared.targetUri, storageUri: prepared.storageUri });
    },
    planMigration: async (req) => {
      const plan = await m.planMigration(req.vmId);
      return create(PlanMigrationResponseSchema, { vmId: req.vmId, diskCopies: plan.copies, deviceLayout: plan.layout.map(toPciSlot) });
    },
    migrateVm: (req, ctx) => migrateVm(m, req, ctx),
    cancelMigration: async (req) => create(CancelMigrationResponseSchema, { cancelled: await m.cancelMigration(req.vmId) }),
    async attachDisk(req) {
      const r = await m.attachDisk(req.vmId, req.disk);
      return create(AttachDiskResponseSchema, { state: toVmState(r.state), hotPlugged: r.hotPlugged });
    },
    async detachDisk(req) {
      const r = await m.detachDisk(req.vmId, req.diskId, req.timeoutSeconds);
      return create(DetachDiskResponseSchema, { state: toVmState(r.state), hotUnplugged: r.hotUnplugged });
    },
    async attachNic(req) {
      const r = await m.attachNic(req.vmId, req.nic);
      return create(AttachNicResponseSchema, { state: toVmState(r.state), hotPlugged: r.hotPlugged });
    },
    async detachNic(req) {
      const r = await m.detachNic(req.vmId, req.nicId, req.timeoutSeconds);
      return create(DetachNicResponseSchema, { state: toVmState(r.state), hotUnplugged: r.hotUnplugged });
    },
    resizeDisk: async (req) => create(ResizeDiskResponseSchema, { sizeBytes: await m.resizeDisk(req.vmId, req.diskId, req.sizeBytes) }),
    ...vmSnapshotRoutes(m),
  };
}
