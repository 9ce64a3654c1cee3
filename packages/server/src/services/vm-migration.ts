import { clone, create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { NodeStatus_Phase as Phase, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VmStatusSchema, VmStatus_State as State, type VirtualMachine, type VmStatus } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { notFound, QuantixError, type Clock, type HypervisorMigration, type HypervisorPort, type MigrationProgress, type MigrationStatistics, type Store } from "@quantix/core";
import { setCondition } from "../controllers/conditions.js";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";
import type { Logger } from "../log.js";
import { pickMigrationTarget } from "./migration-target.js";
import { requireId } from "./vm-service.js";

/** The condition a migration writes on its VM: True while it runs, False with the outcome after. */
export const MIGRATING_CONDITION = "Migrating";
/** Progress is written to the VM's status at most this often (each write reaches every watcher). */
const PROGRESS_EVERY_MS = 500;

/** What a migration needs from the reconciler: to keep its hands off the VM meanwhile. */
export interface MigrationHolder {
  holdForMigration(vmId: string, nodeIds: readonly string[]): () => void;
}

/** Dependencies of {@link VmMigrationService}. */
export interface VmMigrationDeps {
  readonly store: Store;
  readonly drivers: NodeDrivers;
  readonly holder: MigrationHolder;
  readonly clock: Clock;
  readonly log: Logger;
}

/** A request to move one VM live. */
export interface MigrateRequest {
  readonly vmId: string;
  /** Empty lets the scheduler choose. */
  readonly targetNodeId: string;
  readonly maxDowntimeMs: number;
  readonly bandwidthMbps: number;
}

/** The VM after a completed migration, and what the hypervisor measured. */
export interface MigrateResult {
  readonly vm: VirtualMachine;
  readonly stats: MigrationStatistics;
}

/**
 * MigrateVM between two agent nodes: checks everything that can be checked up front
 * (a RUNNING VM, a READY and schedulable target other than its node, both hypervisors
 * with the "live-migration" capability), takes the VM from the reconciler, prepares the
 * target, and lets the source send the VM. The status says MIGRATING with progress in the
 * Migrating condition meanwhile; the VM's node changes only once the guest runs on the
 * target. A failure (or the caller cancelling) deletes the target's copy and leaves the
 * VM running on its source with the reason in the Migrating condition.
 */
export class VmMigrationService {
  private readonly running = new Set<string>();

  constructor(private readonly deps: VmMigrationDeps) {}

  async migrate(req: MigrateRequest, signal: AbortSignal): Promise<MigrateResult> {
    requireId("vm_id", req.vmId);
    if (req.maxDowntimeMs < 0 || req.maxDowntimeMs > 60_000) throw badRange("max_downtime_ms", "must be between 0 and 60000 (0 means the hypervisor's default)");
    if (req.bandwidthMbps < 0) throw badRange("bandwidth_mbps", "must not be negative (0 means unlimited)");
    const vm = await this.deps.store.vms.get(req.vmId);
    if (!vm) throw notFound("VM", req.vmId);
    const state = vm.status?.state ?? State.UNKNOWN;
    if (state !== State.RUNNING) throw new QuantixError("failed_precondition", `VM '${vm.id}' is ${State[state]}; only a RUNNING VM migrates live`);
    if (this.running.has(vm.id)) throw new QuantixError("failed_precondition", `VM '${vm.id}' is already being migrated`);
    const sourceId = vm.status!.nodeId;
    // Checked in the order a user fixes them: the request, then the nodes.
    if (req.targetNodeId === sourceId) throw new QuantixError("failed_precondition", `VM '${vm.id}' already runs on node '${sourceId}'; choose another target node`);
    if (req.targetNodeId) await this.usableTarget(req.targetNodeId);
    const src = this.capable(sourceId, vm.id, "its node");
    const targetId = req.targetNodeId || (await pickMigrationTarget(this.deps.store, this.deps.drivers, vm, [sourceId]));
    const target = await this.usableTarget(targetId);
    const dst = this.capable(targetId, vm.id, "the target node");

    this.running.add(vm.id);
    const release = this.deps.holder.holdForMigration(vm.id, [sourceId, targetId]);
    const where = `from node '${(await this.deps.store.nodes.get(sourceId))?.hostname ?? sourceId}' to node '${target.hostname}'`;
    try {
      await this.write(vm.id, (s) => {
        s.state = State.MIGRATING;
        s.errorMessage = "";
        this.condition(s, vm, true, "Preparing", `preparing node '${target.hostname}' to receive the VM`);
      });
      let stats: MigrationStatistics;
      try {
        const uri = await dst.migration.prepare(vm.id, vm.spec!);
        stats = await src.migration.migrate(vm.id, uri, req, this.progress(vm, where), signal);
      } catch (err) {
        await dst.port.deleteVM(vm.id).catch((e: unknown) => this.deps.log.log("warn", "removing a failed migration's target copy failed; fencing removes it", { vm_id: vm.id, node_id: targetId, error: String(e) }));
        const why = err instanceof Error ? err.message : String(err);
        await this.write(vm.id, (s) => {
          s.state = State.RUNNING;
          this.condition(s, vm, false, signal.aborted ? "Cancelled" : "Failed", `the migration ${where} ${signal.aborted ? "was cancelled" : `failed: ${why}`}; the VM keeps running on node '${sourceId}'`);
        });
        this.deps.log.log("warn", "migration failed", { vm_id: vm.id, source: sourceId, target: targetId, error: why });
        throw new QuantixError(err instanceof QuantixError ? err.code : "aborted", `migrating VM '${vm.id}' ${where} failed: ${why}`, [], { cause: err });
      }
      const done = await this.write(vm.id, (s) => {
        s.nodeId = targetId;
        s.state = State.RUNNING;
        s.hypervisor = dst.port.kind;
        const mib = Number(stats.transferredBytes / 1048576n);
        this.condition(s, vm, false, "Completed", `migrated ${where}: ${mib} MiB in ${stats.durationMs} ms, ${stats.downtimeMs} ms downtime`);
      });
      this.deps.log.log("info", "migration completed", { vm_id: vm.id, source: sourceId, target: targetId, duration_ms: stats.durationMs, downtime_ms: stats.downtimeMs });
      return { vm: done, stats };
    } finally {
      this.running.delete(vm.id);
      release();
    }
  }

  /** The target node, or NOT_FOUND, or FAILED_PRECONDITION unless it is READY and schedulable. */
  private async usableTarget(nodeId: string): Promise<Node> {
    const node = await this.deps.store.nodes.get(nodeId);
    if (!node) throw notFound("node", nodeId);
    const phase = node.status?.phase ?? Phase.UNKNOWN;
    if (phase !== Phase.READY) throw new QuantixError("failed_precondition", `target node '${node.hostname}' is ${Phase[phase]}, not READY`);
    if (!node.spec?.schedulable) throw new QuantixError("failed_precondition", `target node '${node.hostname}' is not schedulable (disabled or draining); enable it first`);
    return node;
  }

  /** The node's hypervisor and its migration, or FAILED_PRECONDITION naming the missing capability. */
  private capable(nodeId: string, vmId: string, what: string): { port: HypervisorPort; migration: HypervisorMigration } {
    const port = this.deps.drivers.get(nodeId);
    if (!port) throw new QuantixError("unavailable", `${what} '${nodeId}' is not connected; retry when it is READY`);
    if (!port.capabilities.has("live-migration") || !port.migration) {
      throw new QuantixError("failed_precondition", `VM '${vmId}' cannot migrate: ${what} '${nodeId}' runs a ${port.kind} hypervisor, which lacks the 'live-migration' capability`);
    }
    return { port, migration: port.migration };
  }

  /** Writes progress into the Migrating condition, at most every PROGRESS_EVERY_MS. */
  private progress(vm: VirtualMachine, where: string): (p: MigrationProgress) => void {
    let last = 0;
    return (p) => {
      const now = this.deps.clock.now();
      if (now - last < PROGRESS_EVERY_MS) return;
      last = now;
      const mib = (b: bigint) => Number(b / 1048576n);
      const message = `migrating ${where}: ${p.status}, ${mib(p.transferredBytes)} of ${mib(p.totalBytes)} MiB sent`;
      void this.write(vm.id, (s) => this.condition(s, vm, true, "InProgress", message)).catch(() => undefined);
    };
  }

  private condition(s: VmStatus, vm: VirtualMachine, status: boolean, reason: string, message: string): void {
    s.conditions = setCondition(s.conditions, { type: MIGRATING_CONDITION, status, reason, message, generation: vm.generation }, this.deps.clock.now());
  }

  private async write(vmId: string, edit: (s: VmStatus) => void): Promise<VirtualMachine> {
    const now = this.deps.clock.now();
    return this.deps.store.vms.update(vmId, (cur) => {
      const next = clone(VmStatusSchema, cur.status ?? create(VmStatusSchema));
      edit(next);
      cur.status = next;
      cur.updatedAt = timestampFromMs(now);
      return cur;
    });
  }
}

function badRange(field: string, description: string): QuantixError {
  return new QuantixError("invalid_argument", `${field}: ${description}`, [{ field, reason: "OUT_OF_RANGE", description }]);
}
