import type { Client } from "@connectrpc/connect";
import type { VmSpec } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { PciDeviceKind, type VmConfig, type VmService } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError, toAgentVmConfig, type HypervisorMigration, type MigrationDiskCopy, type MigrationPlan, type PciPlacement, type MigrationOptions, type MigrationProgress, type MigrationStatistics, type MigrationTarget } from "@quantix/core";

/** Runs one agent call with the node's error mapping (AgentHypervisor's `call`). */
export type AgentCall = <T>(fn: () => Promise<T>) => Promise<T>;

const PCI_KIND_OF: Record<PciPlacement["kind"], PciDeviceKind> = { disk: PciDeviceKind.DISK, nic: PciDeviceKind.NIC, "cloud-init-seed": PciDeviceKind.CLOUD_INIT_SEED };
const PCI_KINDS = new Map(Object.entries(PCI_KIND_OF).map(([k, v]) => [v, k as PciPlacement["kind"]]));

/**
 * Live migration over an agent's vmm.v1 RPCs: PlanMigration on the source (which disks
 * are on node-local storage and must be copied, and where its PCI devices sit), PrepareMigration on the target (with
 * those disks to create and receive, copy_storage, and that device layout), the streaming MigrateVm on the
 * source. Copying is automatic: a VM whose disks are all on shared storage migrates as
 * before, one with local disks has them copied while it runs. The stream's last message
 * carries the statistics; a stream that ends without it, or with ABORTED, is a failed
 * migration and the VM keeps running on the source. Cancelling aborts the stream and
 * also asks CancelMigration, so the source stops sending even if the stream's reset is lost.
 */
export function agentMigration(client: Client<typeof VmService>, call: AgentCall, node: string, mark: (config: VmConfig) => VmConfig = (c) => c): HypervisorMigration {
  const plan = async (vmId: string): Promise<MigrationPlan> => {
    try {
      const res = await call(() => client.planMigration({ vmId }));
      return {
        copies: res.diskCopies.map((c) => ({ diskId: c.diskId, format: c.format, virtualSizeBytes: c.virtualSizeBytes })),
        devices: res.deviceLayout.flatMap((d) => {
          const kind = PCI_KINDS.get(d.kind);
          return kind ? [{ kind, id: d.deviceId, slot: d.slot }] : [];
        }),
      };
    } catch (err) {
      // An agent from before PlanMigration: it copies nothing, and the shared-storage rule applies.
      if (err instanceof QuantixError && err.code === "unimplemented") return { copies: [], devices: [] };
      throw err;
    }
  };
  return {
    plan,
    async planCopies(vmId: string): Promise<readonly MigrationDiskCopy[]> {
      return (await plan(vmId)).copies;
    },

    async prepare(vmId: string, spec: VmSpec, copies: readonly MigrationDiskCopy[] = [], volumePaths?: ReadonlyMap<string, string>, devices: readonly PciPlacement[] = []): Promise<MigrationTarget> {
      // Volume disks take the target's own files (a copied volume's copy goes there).
      const config = mark(toAgentVmConfig(vmId, spec, volumePaths));
      const deviceLayout = devices.map((d) => ({ kind: PCI_KIND_OF[d.kind], deviceId: d.id, slot: d.slot }));
      const res = await call(() => client.prepareMigration({ vmId, config, copyStorage: copies.length > 0, diskCopies: [...copies], deviceLayout }));
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
