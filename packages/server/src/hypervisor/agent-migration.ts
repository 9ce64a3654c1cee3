import type { Client } from "@connectrpc/connect";
import type { VmSpec } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import type { VmConfig, VmService } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError, toAgentVmConfig, type HypervisorMigration, type MigrationOptions, type MigrationProgress, type MigrationStatistics } from "@quantix/core";

/** Runs one agent call with the node's error mapping (AgentHypervisor's `call`). */
export type AgentCall = <T>(fn: () => Promise<T>) => Promise<T>;

/**
 * Live migration over an agent's vmm.v1 RPCs: PrepareMigration on the target, the
 * streaming MigrateVm on the source. The stream's last message carries the statistics;
 * a stream that ends without it, or with ABORTED, is a failed migration and the VM keeps
 * running on the source. Cancelling aborts the stream and also asks CancelMigration, so
 * the source stops sending even if the stream's reset is lost.
 */
export function agentMigration(client: Client<typeof VmService>, call: AgentCall, node: string, mark: (config: VmConfig) => VmConfig = (c) => c): HypervisorMigration {
  return {
    async prepare(vmId: string, spec: VmSpec): Promise<string> {
      const config = mark(toAgentVmConfig(vmId, spec));
      return (await call(() => client.prepareMigration({ vmId, config }))).targetUri;
    },

    async migrate(vmId: string, targetUri: string, options: MigrationOptions, onProgress: (p: MigrationProgress) => void, signal: AbortSignal): Promise<MigrationStatistics> {
      const onAbort = () => void client.cancelMigration({ vmId }).catch(() => undefined);
      signal.addEventListener("abort", onAbort, { once: true });
      try {
        return await call(async () => {
          const stream = client.migrateVm({ vmId, targetUri, maxDowntimeMs: options.maxDowntimeMs, bandwidthMbps: options.bandwidthMbps }, { signal });
          for await (const m of stream) {
            onProgress({ status: m.status, transferredBytes: m.transferredBytes, totalBytes: m.totalBytes });
            if (m.completed && m.statistics) {
              return { transferredBytes: m.statistics.transferredBytes, downtimeMs: Number(m.statistics.downtimeMs), durationMs: Number(m.statistics.totalTimeMs) };
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
