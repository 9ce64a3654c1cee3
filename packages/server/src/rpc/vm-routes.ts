import type { ServiceImpl } from "@connectrpc/connect";
import { create } from "@bufbuild/protobuf";
import { EmptySchema } from "@bufbuild/protobuf/wkt";
import { MigrateVMResponseSchema, MigrationStatsSchema, VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import type { VmMetricsStream } from "../services/vm-metrics-stream.js";
import type { VmMigrationService } from "../services/vm-migration.js";
import type { VmPowerService } from "../services/vm-power.js";
import type { VmService } from "../services/vm-service.js";
import { VM_KIND, type Store } from "@quantix/core";
import { resourceRoute } from "../resources/resource-routes.js";
import { budgetOf } from "./budget.js";
import type { Route } from "@quantix/rpc";
import { attachConsole, getConsoleOutput, streamConsole } from "./vm-console-routes.js";

/**
 * Quantixkvm.compute.v1.VMService, for every protocol: GetVM, ListVMs, WatchVM and
 * WatchVMs are the VM kind's generic reads (resources/resource-routes.ts); the rest has
 * the VM's own rules.
 */
export function vmServiceRoute(store: Store, vms: VmService, power: VmPowerService, migration: VmMigrationService, metrics: VmMetricsStream, defaultDeadlineMs: number): Route {
  return resourceRoute(VMService, VM_KIND as never, store, { impl: vmServiceImpl(vms, power, migration, metrics, defaultDeadlineMs) });
}

function vmServiceImpl(vms: VmService, power: VmPowerService, migration: VmMigrationService, metrics: VmMetricsStream, defaultDeadlineMs: number): Partial<ServiceImpl<typeof VMService>> {
  return {
    createVM: (req) => vms.create(req),
    updateVM: (req, ctx) => vms.update(req, budgetOf(ctx, defaultDeadlineMs)),
    deleteVM: async (req, ctx) => {
      await vms.delete(req, budgetOf(ctx, defaultDeadlineMs));
      return create(EmptySchema);
    },
    startVM: (req, ctx) => power.act("start", req.id, budgetOf(ctx, defaultDeadlineMs)),
    stopVM: (req, ctx) =>
      power.act("stop", req.id, budgetOf(ctx, defaultDeadlineMs), { force: req.force, timeoutSec: req.timeoutSec > 0 ? Math.min(req.timeoutSec, 3600) : 60 }),
    rebootVM: (req, ctx) => power.reboot(req.id, req.force, budgetOf(ctx, defaultDeadlineMs)),
    pauseVM: (req, ctx) => power.act("pause", req.id, budgetOf(ctx, defaultDeadlineMs)),
    resumeVM: (req, ctx) => power.act("resume", req.id, budgetOf(ctx, defaultDeadlineMs)),
    suspendVM: (req, ctx) => power.act("suspend", req.id, budgetOf(ctx, defaultDeadlineMs)),
    migrateVM: async (req, ctx) => {
      // Only live migration exists (live=false is refused): a stopped VM has nothing to move (StartVM places it anew).
      const { vm, stats } = await migration.migrate({ vmId: req.vmId, targetNodeId: req.targetNodeId, live: req.live, maxDowntimeMs: req.maxDowntimeMs, bandwidthMbps: req.bandwidthMbps }, ctx.signal);
      return create(MigrateVMResponseSchema, {
        vm,
        stats: create(MigrationStatsSchema, { bytesTransferred: stats.transferredBytes, downtimeMs: BigInt(stats.downtimeMs), durationMs: BigInt(stats.durationMs), diskBytesTransferred: stats.diskTransferredBytes ?? 0n }),
      });
    },
    getConsoleOutput: (req) => getConsoleOutput(power, req),
    streamConsole: (req, ctx) => streamConsole(power, req, ctx.signal),
    attachConsole: (input, ctx) => attachConsole(power, input, ctx.signal),
    streamMetrics: (req, ctx) => metrics.stream(req.vmId, req.intervalSec, ctx.signal),
  };
}
