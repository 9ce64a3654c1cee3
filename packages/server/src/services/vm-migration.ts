import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { MigrationSchema, MigrationStatus_Phase as MPhase, type Migration } from "@quantix/api/gen/Quantixkvm/compute/v1/migration_pb.js";
import { VmStatus_State as State, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { MIGRATION_KIND, migrationFinished, NODE_KIND, notFound, QuantixError, VM_KIND, type Clock, type ErrorCode, type IdGenerator, type MigrationStatistics, type ScoringStrategy, type Store } from "@quantix/core";
import { capable } from "../controllers/migration-run.js";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";
import type { Logger } from "@quantix/rpc";
import { scheduleMigration } from "./migration-target.js";
import { requireId } from "./vm-service.js";

/** Dependencies of {@link VmMigrationService}. */
export interface VmMigrationDeps {
  readonly store: Store;
  readonly drivers: NodeDrivers;
  readonly clock: Clock;
  readonly ids: IdGenerator;
  readonly log: Logger;
  /** The scheduler's scoring strategy for the up-front check; default "spread". */
  readonly strategy?: ScoringStrategy;
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
  /** Who asks (Migration.spec.requested_by); default "MigrateVM". */
  readonly requestedBy?: string;
}

/** How to wait for a migration: `signal` stops the waiting; with cancelOnAbort it also cancels the migration. */
export interface FollowOptions {
  readonly signal: AbortSignal;
  readonly cancelOnAbort: boolean;
}

/** The VM after a completed migration, and what the hypervisor measured. */
export interface MigrateResult {
  readonly vm: VirtualMachine;
  readonly stats: MigrationStatistics;
}

/**
 * MigrateVM: checks what can be checked up front (a RUNNING VM, both hypervisors with
 * "live-migration", a target the scheduler accepts: FAILED_PRECONDITION naming what is
 * missing), then creates a Migration (one unfinished migration per VM: a second call, on
 * any replica, is refused naming the first) and follows it: the scheduler reserves its
 * target, the migration controller runs it, the scheduler moves the VM. Returns once the
 * VM runs on its target, or answers the migration's failure with its code. A caller that
 * goes away cancels the migration.
 */
export class VmMigrationService {
  constructor(private readonly deps: VmMigrationDeps) {}

  /**
   * `wait`: an AbortSignal (the RPC's: a caller that goes away cancels the migration), or
   * a signal that only stops the waiting (cancelOnAbort false: the migration goes on).
   */
  async migrate(req: MigrateRequest, wait: AbortSignal | FollowOptions): Promise<MigrateResult> {
    const vm = await this.check(req);
    const now = timestampFromMs(this.deps.clock.now());
    let m: Migration;
    try {
      m = await this.deps.store.of(MIGRATION_KIND).create(
        create(MigrationSchema, {
          id: this.deps.ids.newId(),
          projectId: vm.projectId,
          vmId: vm.id,
          spec: { targetNodeId: req.targetNodeId, maxDowntimeMs: req.maxDowntimeMs, bandwidthMbps: req.bandwidthMbps, requestedBy: req.requestedBy ?? "MigrateVM" },
          status: { phase: MPhase.PENDING, sourceNodeId: vm.status!.nodeId },
          createdAt: now,
          updatedAt: now,
        }),
        { actor: "api" },
      );
    } catch (err) {
      if (err instanceof QuantixError && err.code === "already_exists") throw await this.alreadyMigrating(vm, err);
      throw err;
    }
    return this.follow(m, wait);
  }

  /** The request's rules, then the VM's and the nodes' (in the order a user fixes them). */
  private async check(req: MigrateRequest): Promise<VirtualMachine> {
    requireId("vm_id", req.vmId);
    if (!req.live) throw invalid("live", "INVALID", "must be true: only live migration is offered (a stopped VM is moved by StartVM with a placement)");
    if (req.maxDowntimeMs < 0 || req.maxDowntimeMs > 60_000) throw invalid("max_downtime_ms", "OUT_OF_RANGE", "must be between 0 and 60000 (0 means the hypervisor's default)");
    if (req.bandwidthMbps < 0) throw invalid("bandwidth_mbps", "OUT_OF_RANGE", "must not be negative (0 means unlimited)");
    const vm = await this.deps.store.of(VM_KIND).get(req.vmId);
    if (!vm) throw notFound("VM", req.vmId);
    if (vm.deletionRequestedAt) throw new QuantixError("failed_precondition", `cannot migrate VM '${vm.id}': it is being deleted`);
    refuseIfMigrating(vm);
    const state = vm.status?.state ?? State.UNKNOWN;
    if (state !== State.RUNNING) throw new QuantixError("failed_precondition", `VM '${vm.id}' is ${State[state]}; only a RUNNING VM migrates live`);
    const sourceId = vm.status!.nodeId;
    if (req.targetNodeId === sourceId) throw new QuantixError("failed_precondition", `VM '${vm.id}' already runs on node '${sourceId}'; choose another target node`);
    if (req.targetNodeId && !(await this.deps.store.of(NODE_KIND).get(req.targetNodeId))) throw notFound("node", req.targetNodeId);
    capable(this.deps, sourceId, vm.id, "its node");
    if (req.targetNodeId) capable(this.deps, req.targetNodeId, vm.id, "the target node");
    const targetId = await scheduleMigration(this.deps, vm, req.targetNodeId, [sourceId]);
    capable(this.deps, targetId, vm.id, "the target node");
    return vm;
  }

  /** Follows a migration until it ends and the VM's binding says so (see migrate for `wait`). */
  async follow(m: Migration, wait: AbortSignal | FollowOptions): Promise<MigrateResult> {
    const { signal, cancelOnAbort } = wait instanceof AbortSignal ? { signal: wait, cancelOnAbort: true } : wait;
    const migrations = this.deps.store.of(MIGRATION_KIND);
    const stopWaiting = new AbortController();
    const onCancel = () => {
      if (!cancelOnAbort) return stopWaiting.abort();
      void migrations.update(m.id, (cur) => (migrationFinished(cur) || cur.spec?.cancel ? undefined : ((cur.spec!.cancel = true), (cur.generation += 1n), cur)), { actor: "api" }).catch(() => undefined);
    };
    if (signal.aborted) onCancel();
    signal.addEventListener("abort", onCancel, { once: true });
    try {
      const end = await this.until(migrations, m.id, (x) => !!x && migrationFinished(x), m.resourceVersion, stopWaiting.signal);
      // Settled: the scheduler has moved the VM (or kept it); a VM being deleted is waited
      // for until it is gone (its guest removed), and answers NOT_FOUND.
      const applied = (vm: VirtualMachine | undefined) => !vm || (!vm.deletionRequestedAt && (vm.status?.migrationTargetNodeId !== end.status?.targetNodeId || vm.status?.nodeId !== end.status?.sourceNodeId));
      const vms = this.deps.store.of(VM_KIND);
      const vm = await this.until(vms, m.vmId, applied, 0n, stopWaiting.signal).catch((err: unknown) => {
        if (err instanceof QuantixError && err.code === "not_found") return undefined;
        throw err;
      });
      const s = end.status!;
      if (s.phase === MPhase.SUCCEEDED && vm) {
        return { vm, stats: { transferredBytes: s.transferredBytes, downtimeMs: Number(s.downtimeMs), durationMs: Number(s.durationMs), ...(s.diskTransferredBytes > 0n ? { diskTransferredBytes: s.diskTransferredBytes } : {}) } };
      }
      if (s.phase === MPhase.SUCCEEDED) throw notFound("VM", m.vmId);
      throw new QuantixError((s.errorCode || "aborted") as ErrorCode, s.message);
    } finally {
      signal.removeEventListener("abort", onCancel);
    }
  }

  /** Waits until `pred` holds for an object, following the watch (with no deadline: migrations end by their own timeout). */
  private async until<T extends { id: string; resourceVersion: bigint }>(
    coll: { get(id: string): Promise<T | undefined>; watch(from: bigint, signal: AbortSignal): AsyncIterable<{ type: string; object?: T; revision: bigint }> },
    id: string,
    pred: (o: T | undefined) => boolean,
    from: bigint,
    giveUp: AbortSignal,
  ): Promise<T> {
    const stop = new AbortController();
    const onGiveUp = () => stop.abort();
    giveUp.addEventListener("abort", onGiveUp, { once: true });
    try {
      const start = from || (await this.deps.store.revision());
      const now = await coll.get(id);
      if (pred(now)) {
        if (!now) throw notFound("VM", id);
        return now;
      }
      for await (const ev of coll.watch(start, stop.signal)) {
        if (ev.type === "SYNCED" || ev.object?.id !== id) continue;
        if (ev.type === "DELETED") throw notFound("VM", id);
        if (pred(ev.object)) return ev.object!;
      }
      throw new QuantixError(giveUp.aborted ? "aborted" : "unavailable", giveUp.aborted ? "stopped waiting for the migration" : "the store's watch ended");
    } finally {
      giveUp.removeEventListener("abort", onGiveUp);
      stop.abort();
    }
  }

  /** FAILED_PRECONDITION naming the unfinished migration that holds the VM. */
  private async alreadyMigrating(vm: VirtualMachine, cause: unknown): Promise<QuantixError> {
    const page = await this.deps.store.of(MIGRATION_KIND).list({ where: { vm_id: vm.id }, order: { field: "created_at", desc: true }, limit: 5, countTotal: false });
    const other = page.items.find((x) => !migrationFinished(x));
    const target = other?.status?.targetNodeId || other?.spec?.targetNodeId || "a node the scheduler picks";
    return new QuantixError("failed_precondition", `VM '${vm.id}' is already being migrated from node '${vm.status?.nodeId}' to node '${target}'; wait for that migration to end`, [], { cause });
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
