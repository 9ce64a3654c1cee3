import type { Client } from "@connectrpc/connect";
import type { VmSpec } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import type { VmConfig, VmService } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError, toAgentVmConfig, type HypervisorMigration, type MigrationDiskCopy, type MigrationOptions, type MigrationProgress, type MigrationStatistics, type MigrationTarget } from "@quantix/core";

/** Runs one agent call with the node's error mapping (AgentHypervisor's `call`). */
export type AgentCall = <T>(fn: () => Promise<T>) => Promise<T>;

/**
 * Live migration over an agent's vmm.v1 RPCs: PlanMigration on the source (which disks
 * are on node-local storage and must be copied), PrepareMigration on the target (with
 * those disks to create and receive, copy_storage), the streaming MigrateVm on the
 * source. Copying is automatic: a VM whose disks are all on shared storage migrates as
 * before, one with local disks has them copied while it runs. The stream's last message
 * carries the statistics; a stream that ends without it, or with ABORTED, is a failed
 * migration and the VM keeps running on the source. Cancelling aborts the stream and
 * also asks CancelMigration, so the source stops sending even if the stream's reset is lost.
 */
export function agentMigration(client: Client<typeof VmService>, call: AgentCall, node: string, mark: (config: VmConfig) => VmConfig = (c) => c): HypervisorMigration {
  return {
    async planCopies(vmId: string): Promise<readonly MigrationDiskCopy[]> {
      try {
        return (await call(() => client.planMigration({ vmId }))).diskCopies.map((c) => ({ diskId: c.diskId, format: c.format, virtualSizeBytes: c.virtualSizeBytes }));
      } catch (err) {
        // An agent from before PlanMigration: it copies nothing, and the shared-storage rule applies.
        if (err instanceof QuantixError && err.code === "unimplemented") return [];
        throw err;
      }
    },

    async prepare(vmId: string, spec: VmSpec, copies: readonly MigrationDiskCopy[] = [], volumePaths?: ReadonlyMap<string, string>): Promise<MigrationTarget> {
      // Volume disks take the target's own files (a copied volume's copy goes there).
      const config = mark(toAgentVmConfig(vmId, spec, volumePaths));
      const res = await call(() => client.prepareMigration({ vmId, config, copyStorage: copies.length > 0, diskCopies: [...copies] }));
      return { uri: res.targetUri, storageUri: res.storageUri };
    },

    async migrate(vmId: string, target: MigrationTarget, options: MigrationOptions, onProgress: (p: MigrationProgress) => void, signal: AbortSignal): Promise<MigrationStatistics> {
      const onAbort = () => void client.cancelMigration({ vmId }).catch(() => undefined);
      signal.addEventListener("abort", onAbort, { once: true });
      try {
        return await call(async () => {
          const copy = target.storageUri !== "";
          const stream = client.migrateVm({ vmId, targetUri: target.uri, maxDowntimeMs: options.maxDowntimeMs, bandwidthMbps: options.bandwidthMbps, copyStorage: copy, storageUri: target.storageUri }, { signal });
          for await (const m of stream) {
            onProgress({ status: m.status, transferredBytes: m.transferredBytes, totalBytes: m.totalBytes, ...(copy ? { diskTransferredBytes: m.diskTransferredBytes, diskTotalBytes: m.diskTotalBytes } : {}) });
            if (m.completed && m.statistics) {
              const s = m.statistics;
              return { transferredBytes: s.transferredBytes, downtimeMs: Number(s.downtimeMs), durationMs: Number(s.totalTimeMs), ...(copy ? { diskTransferredBytes: s.diskTransferredBytes } : {}) };
            }
          }
          throw new QuantixError("aborted", `the agent of node '${node}' ended the migration of VM '${vmId}' without completing it`);
        });
      } catch (err) {
        if (signal.aborted) throw new QuantixError("aborted", `the migration of VM '${vmId}' was cancelled`);
        throw err;
      } finally {
        signal.removeEventListener("abort", onAbort);
      }
    },
  };
}
