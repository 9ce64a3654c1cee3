import { create } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import {
  MigrateVmProgressSchema,
  type MigrateVmProgress,
  type MigrateVmRequest,
} from "@quantix/api/gen/vmm/v1/vm_pb.js";
import type { MigrationProgress } from "../backend.js";
import type { VmManager } from "../vm-manager.js";

/**
 * MigrateVm as a server stream: the manager's progress callbacks become messages, the
 * statistics the last one. A client that goes away cancels the migration, so a lost
 * control plane never leaves a half-done migration to finish unobserved.
 */
export async function* migrateVm(m: VmManager, req: MigrateVmRequest, ctx: HandlerContext): AsyncGenerator<MigrateVmProgress> {
  const queue: MigrationProgress[] = [];
  let wake: (() => void) | undefined;
  let finished = false;
  const done = m.migrate(req.vmId, req.targetUri, {
    maxDowntimeMs: req.maxDowntimeMs,
    bandwidthMbps: req.bandwidthMbps,
    onProgress: (p) => {
      queue.push(p);
      wake?.();
    },
  }, req.copyStorage ? { storageUri: req.storageUri } : undefined);
  void done.then(
    () => undefined,
    () => undefined,
  ).finally(() => {
    finished = true;
    wake?.();
  });
  const onAbort = () => void m.cancelMigration(req.vmId).catch(() => undefined);
  ctx.signal.addEventListener("abort", onAbort, { once: true });
  try {
    for (;;) {
      const p = queue.shift();
      if (p) {
        // The "completed" poll is sent below, with the statistics, once the VM is deleted here.
        if (p.status !== "completed") yield create(MigrateVmProgressSchema, { status: p.status, transferredBytes: p.transferredBytes, remainingBytes: p.remainingBytes, totalBytes: p.totalBytes, diskTransferredBytes: p.diskTransferredBytes ?? 0n, diskTotalBytes: p.diskTotalBytes ?? 0n });
        continue;
      }
      if (finished) break;
      await new Promise<void>((r) => (wake = r));
      wake = undefined;
    }
    const s = await done;
    yield create(MigrateVmProgressSchema, {
      status: "completed",
      transferredBytes: s.transferredBytes,
      totalBytes: s.transferredBytes,
      diskTransferredBytes: s.diskTransferredBytes ?? 0n,
      diskTotalBytes: s.diskTransferredBytes ?? 0n,
      completed: true,
      statistics: { transferredBytes: s.transferredBytes, downtimeMs: BigInt(s.downtimeMs), totalTimeMs: BigInt(s.totalTimeMs), diskTransferredBytes: s.diskTransferredBytes ?? 0n },
    });
  } finally {
    ctx.signal.removeEventListener("abort", onAbort);
  }
}
