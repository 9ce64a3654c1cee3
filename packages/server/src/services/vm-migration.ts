import { clone, create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { VmStatusSchema, VmStatus_State as State, type VirtualMachine, type VmStatus } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { notFound, QuantixError, type Clock, type HypervisorMigration, type HypervisorPort, type MigrationStatistics, type ScoringStrategy, type Store, VM_KIND, NODE_KIND } from "@quantix/core";
import { setCondition } from "../controllers/conditions.js";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";
import type { Logger } from "../log.js";
import { migrationOutcome, type MigrationOutcome } from "./migration-outcome.js";
import { MigrationProgressWriter } from "./migration-progress.js";
import { scheduleMigration } from "./migration-target.js";
import { requireId } from "./vm-service.js";

/** The condition a migration writes on its VM: True while it runs, False with the outcome after. */
export const MIGRATING_CONDITION = "Migrating";
/** The default upper bound on one migration, after which it is cancelled. */
export const MIGRATION_TIMEOUT_MS = 10 * 60_000;

/** What a migration needs from the local reconciler: to keep its hands off the VM meanwhile. */
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
  /** The scheduler's scoring strategy for automatic targets; default "spread". */
  readonly strategy?: ScoringStrategy;
  /** A migration still running after this long is cancelled; default MIGRATION_TIMEOUT_MS. */
  readonly timeoutMs?: number;
  /** How often a quiet migration refreshes its lease (tests); default TOUCH_EVERY_MS. */
  readonly touchEveryMs?: number;
}

/** A request to move one VM live. */
export interface MigrateRequest {
  readonly vmId: string;
  /** Empty lets the scheduler choose. */
  readonly targetNodeId: string;
  /** Must be true: only live migration is offered. */
  readonly live: boolean;
  readonly maxDowntimeMs: number;
  readonly bandwidthMbps: number;
}

/** The VM after a completed migration, and what the hypervisor measured. */
export interface MigrateResult {
  readonly vm: VirtualMachine;
  readonly stats: MigrationStatistics;
}

/** Why a migration ended without completing. */
type StopReason = "Cancelled" | "TimedOut" | "Deleted" | "Failed";

interface Side {
  readonly id: string;
  readonly port: HypervisorPort;
  readonly migration: HypervisorMigration;
}

/**
 * MigrateVM between two agent nodes. Checks what can be checked up front (a RUNNING VM,
 * both hypervisors with "live-migration", a target the scheduler accepts), then claims
 * the migration in the store with one conditional write (MIGRATING, the target in
 * migration_target_node_id, which reserves its capacity), so a second call, on any
 * replica, is refused. It then prepares the target and lets the source send the VM, with
 * progress in the Migrating condition (which also keeps the claim's lease fresh). The
 * VM's node changes only once the guest runs on the target. On a failure, cancel or
 * timeout both nodes are observed: a migration that completed anyway is completed; else
 * the target copy this call prepared is deleted and the VM keeps running on its source
 * with the reason. When the nodes cannot be asked, the claim stays and the reconciler
 * resolves it once its lease has expired.
 */
export class VmMigrationService {
  constructor(private readonly deps: VmMigrationDeps) {}

  async migrate(req: MigrateRequest, signal: AbortSignal): Promise<MigrateResult> {
    requireId("vm_id", req.vmId);
    if (!req.live) throw invalid("live", "INVALID", "must be true: only live migration is offered (a stopped VM is moved by StartVM with a placement)");
    if (req.maxDowntimeMs < 0 || req.maxDowntimeMs > 60_000) throw invalid("max_downtime_ms", "OUT_OF_RANGE", "must be between 0 and 60000 (0 means the hypervisor's default)");
    if (req.bandwidthMbps < 0) throw invalid("bandwidth_mbps", "OUT_OF_RANGE", "must not be negative (0 means unlimited)");
    const vm = await this.deps.store.of(VM_KIND).get(req.vmId);
    if (!vm) throw notFound("VM", req.vmId);
    refuseIfMigrating(vm);
    const state = vm.status?.state ?? State.UNKNOWN;
    if (state !== State.RUNNING) throw new QuantixError("failed_precondition", `VM '${vm.id}' is ${State[state]}; only a RUNNING VM migrates live`);
    const sourceId = vm.status!.nodeId;
    // Checked in the order a user fixes them: the request, then the nodes.
    if (req.targetNodeId === sourceId) throw new QuantixError("failed_precondition", `VM '${vm.id}' already runs on node '${sourceId}'; choose another target node`);
    if (req.targetNodeId && !(await this.deps.store.of(NODE_KIND).get(req.targetNodeId))) throw notFound("node", req.targetNodeId);
    const src = this.capable(sourceId, vm.id, "its node");
    if (req.targetNodeId) this.capable(req.targetNodeId, vm.id, "the target node");
    const targetId = await scheduleMigration(this.deps, vm, req.targetNodeId, [sourceId]);
    const dst = this.capable(targetId, vm.id, "the target node");
    const hostname = async (id: string) => (await this.deps.store.of(NODE_KIND).get(id))?.hostname ?? id;
    const where = `from node '${await hostname(sourceId)}' to node '${await hostname(targetId)}'`;

    const claimed = await this.claim(vm, targetId, `preparing node '${await hostname(targetId)}' to receive the VM`);
    const release = this.deps.holder.holdForMigration(vm.id, [sourceId, targetId]);
    try {
      return await this.run(claimed, src, dst, where, req, signal);
    } finally {
      release();
    }
  }

  private async run(vm: VirtualMachine, src: Side, dst: Side, where: string, req: MigrateRequest, signal: AbortSignal): Promise<MigrateResult> {
    const stop = new AbortController();
    let why = "Failed" as StopReason;
    const abort = (reason: StopReason) => {
      if (!stop.signal.aborted) why = reason;
      stop.abort();
    };
    const onCancel = () => abort("Cancelled");
    if (signal.aborted) onCancel();
    signal.addEventListener("abort", onCancel, { once: true });
    const timer = setTimeout(() => abort("TimedOut"), this.deps.timeoutMs ?? MIGRATION_TIMEOUT_MS);
    const progress = new MigrationProgressWriter(
      this.deps.clock,
      async (message) => void (await this.writeClaimed(vm, dst.id, (s) => this.condition(s, vm, true, "InProgress", message))),
      () => abort("Deleted"),
      `migrating ${where}: preparing`,
      this.deps.touchEveryMs,
    );
    let prepared = false;
    let stats: MigrationStatistics | undefined;
    let failure: unknown;
    try {
      // The claim reserved the target; a concurrent claim on the same capacity makes both re-checks fail.
      await scheduleMigration(this.deps, vm, dst.id, [src.id]);
      if (stop.signal.aborted) throw new QuantixError("aborted", "cancelled before it started");
      const uri = await dst.migration.prepare(vm.id, vm.spec!);
      prepared = true;
      stats = await src.migration.migrate(vm.id, uri, req, (p) => progress.report(where, p), stop.signal);
    } catch (err) {
      failure = err;
    } finally {
      clearTimeout(timer);
      signal.removeEventListener("abort", onCancel);
      await progress.settle();
    }

    let outcome: MigrationOutcome = stats ? "target" : "source";
    if (!stats && prepared) {
      try {
        outcome = await migrationOutcome(vm.id, src.port, dst.port);
        if (outcome === "source") await dst.port.deleteVM(vm.id);
      } catch (err) {
        // Left claimed: once the lease expires the reconciler observes both nodes again.
        this.deps.log.log("warn", "a failed migration's outcome is unknown; the reconciler resolves it", { vm_id: vm.id, source: src.id, target: dst.id, error: String(err) });
        throw new QuantixError("unavailable", `migrating VM '${vm.id}' ${where} failed (${message(failure)}) and its outcome cannot be observed yet (${message(err)}); the control plane resolves it when both nodes answer`, [], { cause: err });
      }
    }
    if (outcome === "target") return this.complete(vm, src, dst, where, stats);

    const reason = why === "Failed" && stop.signal.aborted ? "Cancelled" : why;
    const text = { Cancelled: "was cancelled", TimedOut: `timed out after ${this.deps.timeoutMs ?? MIGRATION_TIMEOUT_MS} ms`, Deleted: "was stopped: the VM was deleted", Failed: `failed: ${message(failure)}` }[reason];
    await this.writeClaimed(vm, dst.id, (s) => {
      s.state = State.RUNNING;
      s.migrationTargetNodeId = "";
      this.condition(s, vm, false, reason, `the migration ${where} ${text}; the VM keeps running on node '${src.id}'`);
    }).catch((err: unknown) => {
      if (!(err instanceof QuantixError && err.code === "not_found")) throw err;
    });
    this.deps.log.log("warn", "migration failed", { vm_id: vm.id, source: src.id, target: dst.id, reason, error: message(failure) });
    const code = reason === "TimedOut" ? "deadline_exceeded" : reason === "Failed" && failure instanceof QuantixError ? failure.code : "aborted";
    throw new QuantixError(code, `migrating VM '${vm.id}' ${where} ${text}`, [], { cause: failure });
  }

  /** The guest runs on the target: the VM's node changes; a VM deleted meanwhile loses the target copy too. */
  private async complete(vm: VirtualMachine, src: Side, dst: Side, where: string, stats: MigrationStatistics | undefined): Promise<MigrateResult> {
    const measured = stats ? `${Number(stats.transferredBytes / 1048576n)} MiB in ${stats.durationMs} ms, ${stats.downtimeMs} ms downtime` : "completed while its caller was gone (no statistics)";
    let done: VirtualMachine;
    try {
      done = await this.writeClaimed(vm, dst.id, (s) => {
        s.nodeId = dst.id;
        s.migrationTargetNodeId = "";
        s.state = State.RUNNING;
        s.hypervisor = dst.port.kind;
        this.condition(s, vm, false, "Completed", `migrated ${where}: ${measured}`);
      });
    } catch (err) {
      if (!(err instanceof QuantixError && err.code === "not_found")) throw err;
      // Force-deleted mid-migration: the reconciler removes the source's copy; this is the target's.
      await dst.port.deleteVM(vm.id).catch((e: unknown) => this.deps.log.log("warn", "removing a deleted VM's migrated copy failed", { vm_id: vm.id, node_id: dst.id, error: String(e) }));
      throw notFound("VM", vm.id);
    }
    this.deps.log.log("info", "migration completed", { vm_id: vm.id, source: src.id, target: dst.id, duration_ms: stats?.durationMs, downtime_ms: stats?.downtimeMs });
    return { vm: done, stats: stats ?? { transferredBytes: 0n, downtimeMs: 0, durationMs: 0 } };
  }

  /** The one conditional write that makes this call the VM's migration; a concurrent one loses. */
  private async claim(vm: VirtualMachine, targetId: string, text: string): Promise<VirtualMachine> {
    try {
      return await this.write(vm.id, (s) => {
        s.state = State.MIGRATING;
        s.errorMessage = "";
        s.migrationTargetNodeId = targetId;
        this.condition(s, vm, true, "Preparing", text);
      }, { expectedVersion: vm.resourceVersion });
    } catch (err) {
      if (!(err instanceof QuantixError && err.code === "aborted")) throw err;
      const now = await this.deps.store.of(VM_KIND).get(vm.id);
      if (now) refuseIfMigrating(now);
      throw new QuantixError("aborted", `VM '${vm.id}' changed while its migration was being set up; retry`, [], { cause: err });
    }
  }

  /** The node's hypervisor and its migration, or FAILED_PRECONDITION naming the missing capability. */
  private capable(nodeId: string, vmId: string, what: string): Side {
    const port = this.deps.drivers.get(nodeId);
    if (!port) throw new QuantixError("unavailable", `${what} '${nodeId}' is not connected; retry when it is READY`);
    if (!port.capabilities.has("live-migration") || !port.migration) {
      throw new QuantixError("failed_precondition", `VM '${vmId}' cannot migrate: ${what} '${nodeId}' runs a ${port.kind} hypervisor, which lacks the 'live-migration' capability`);
    }
    return { id: nodeId, port, migration: port.migration };
  }

  private condition(s: VmStatus, vm: VirtualMachine, status: boolean, reason: string, text: string): void {
    s.conditions = setCondition(s.conditions, { type: MIGRATING_CONDITION, status, reason, message: text, generation: vm.generation }, this.deps.clock.now());
  }

  /** Writes only while this call's claim stands (the reconciler may have resolved an expired one). */
  private writeClaimed(vm: VirtualMachine, targetId: string, edit: (s: VmStatus) => void): Promise<VirtualMachine> {
    return this.write(vm.id, edit, { claimTarget: targetId });
  }

  private async write(vmId: string, edit: (s: VmStatus) => void, only: { expectedVersion?: bigint; claimTarget?: string }): Promise<VirtualMachine> {
    const now = this.deps.clock.now();
    return this.deps.store.of(VM_KIND).update(
      vmId,
      (cur) => {
        // A VM being deleted is gone for its migration: the VM controller removes its copies.
        if (cur.deletionRequestedAt) throw notFound("VM", vmId);
        if (only.claimTarget !== undefined && cur.status?.migrationTargetNodeId !== only.claimTarget) return undefined;
        const next = clone(VmStatusSchema, cur.status ?? create(VmStatusSchema));
        edit(next);
        cur.status = next;
        cur.updatedAt = timestampFromMs(now);
        return cur;
      },
      only.expectedVersion === undefined ? {} : { expectedVersion: only.expectedVersion },
    );
  }
}

/** FAILED_PRECONDITION naming the running migration, when one holds the VM. */
function refuseIfMigrating(vm: VirtualMachine): void {
  const target = vm.status?.migrationTargetNodeId;
  if (target) throw new QuantixError("failed_precondition", `VM '${vm.id}' is already being migrated from node '${vm.status?.nodeId}' to node '${target}'; wait for that migration to end`);
}

function invalid(field: string, reason: string, description: string): QuantixError {
  return new QuantixError("invalid_argument", `${field}: ${description}`, [{ field, reason, description }]);
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
