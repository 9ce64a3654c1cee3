import { create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { MigrationSchema, MigrationStatus_Phase as MPhase, type Migration } from "@quantix/api/gen/Quantixkvm/compute/v1/migration_pb.js";
import type { VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { allOf, MIGRATION_KIND, migrationFinished, NODE_KIND, QuantixError, VM_KIND, type Clock, type IdGenerator, type Store, type Timers } from "@quantix/core";
import type { NodeStorages } from "../storage/node-storages.js";
import { completeVolumeMoves, interruptedVolumeMoves } from "../storage/migration-volumes.js";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";
import type { Logger } from "@quantix/rpc";
import { Controller, watching, type ReconcileResult } from "../runtime/controller.js";
import { migrationOutcome } from "../services/migration-outcome.js";
import { describeRoute, finish, MIGRATION_CONTROLLER, MIGRATION_TIMEOUT_MS, runMigration, update, type StopReason } from "./migration-run.js";

/** Dependencies of the migration controller. */
export interface MigrationControllerDeps {
  readonly store: Store;
  readonly drivers: NodeDrivers;
  readonly clock: Clock;
  readonly ids: IdGenerator;
  readonly timers?: Timers;
  readonly log: Logger;
  /** Overrides every migration's own timeout (tests). */
  readonly timeoutMs?: number;
  /** How often a quiet migration writes its progress again (tests). */
  readonly touchEveryMs?: number;
  readonly resyncMs?: number;
  /** Waits until the VM's NICs' ports are set up on the target (the network controller applies them there once the migration is claimed). */
  readonly nicsReadyOn?: (vm: VirtualMachine, nodeId: string, signal: AbortSignal) => Promise<void>;
  /** The nodes' storage, for VMs whose disks are volumes. */
  readonly storages?: NodeStorages | undefined;
}

const VM_KEY = "vm:";

/**
 * Drives migrations (the Migration kind) on the leader: a SCHEDULED migration (its target
 * reserved by the scheduler) is run (migration-run.ts) in the background, one task per
 * migration; CancelMigration's spec.cancel stops it. A migration found PREPARING or
 * RUNNING with no task in this process was interrupted (the control plane restarted):
 * both nodes are observed; if it completed it succeeded, else its target copy is removed
 * and it runs again, until its timeout. A VM left holding a migration target with no
 * migration at all (an older control plane's) gets one, resolved the same way.
 */
export class MigrationController {
  readonly controller: Controller;
  private readonly tasks = new Map<string, { stop: AbortController & { why?: StopReason }; done: Promise<void> }>();

  constructor(private readonly deps: MigrationControllerDeps) {
    const migrations = deps.store.of(MIGRATION_KIND);
    const vms = deps.store.of(VM_KIND);
    this.controller = new Controller(
      {
        name: MIGRATION_CONTROLLER,
        watches: [
          watching(migrations, (ev) => [ev.object.id]),
          watching(vms, (ev) => (ev.object.status?.migrationTargetNodeId || ev.object.deletionRequestedAt ? [`${VM_KEY}${ev.object.id}`] : [])),
        ],
        keys: async function* () {
          for await (const m of allOf(migrations, { where: { phase: [MPhase.PENDING, MPhase.SCHEDULED, MPhase.PREPARING, MPhase.RUNNING] } })) yield m.id;
          for await (const vm of allOf(vms)) if (vm.status?.migrationTargetNodeId) yield `${VM_KEY}${vm.id}`;
        },
        reconcile: (key) => (key.startsWith(VM_KEY) ? this.reviewVm(key.slice(VM_KEY.length)) : this.reconcile(key)),
        ...(deps.resyncMs !== undefined ? { resyncMs: deps.resyncMs } : {}),
      },
      { clock: deps.clock, ...(deps.timers ? { timers: deps.timers } : {}), log: deps.log, revision: () => deps.store.revision() },
    );
  }

  start(): Promise<void> {
    return this.controller.start();
  }

  /** Stops taking work; running transfers are abandoned, not cancelled: after a restart they are resolved and run again. */
  async stop(): Promise<void> {
    await this.controller.stop();
    for (const t of this.tasks.values()) {
      t.stop.why = "Abandoned";
      t.stop.abort();
    }
    await Promise.all([...this.tasks.values()].map((t) => t.done.catch(() => undefined)));
  }

  idle(): Promise<void> {
    return this.controller.idle();
  }

  private async reconcile(id: string): Promise<ReconcileResult> {
    const m = await this.deps.store.of(MIGRATION_KIND).get(id);
    if (!m || migrationFinished(m)) return;
    const task = this.tasks.get(id);
    const vm = await this.deps.store.of(VM_KIND).get(m.vmId);
    if (task) {
      if (m.spec?.cancel) this.stopTask(task, "Cancelled");
      else if (!vm || vm.deletionRequestedAt) this.stopTask(task, "Deleted");
      return;
    }
    const phase = m.status?.phase ?? MPhase.UNSPECIFIED;
    if (phase === MPhase.PENDING) {
      // The scheduler reserves a target; a cancel before that ends it here.
      if (m.spec?.cancel) await finish(this.deps, m, { phase: MPhase.CANCELLED, reason: "Cancelled", code: "aborted", message: `the migration of VM '${m.vmId}' was cancelled before it started` });
      return;
    }
    if (phase === MPhase.SCHEDULED) {
      if (m.spec?.cancel) return finish(this.deps, m, { phase: MPhase.CANCELLED, reason: "Cancelled", code: "aborted", message: `migrating VM '${m.vmId}' ${await describeRoute(this.deps, m.status!.sourceNodeId, m.status!.targetNodeId)} was cancelled` });
      this.startTask(m);
      return;
    }
    return this.resolveInterrupted(m, vm);
  }

  /** Runs a migration in the background; its end enqueues it again. */
  private startTask(m: Migration): void {
    const stop = new AbortController() as AbortController & { why?: StopReason };
    const done = runMigration(this.deps, m, stop)
      .catch((err: unknown) => this.deps.log.log("warn", "migration run failed; it is resolved again", { migration_id: m.id, error: String(err) }))
      .finally(() => {
        this.tasks.delete(m.id);
        this.controller.enqueue(m.id);
      });
    this.tasks.set(m.id, { stop, done });
  }

  private stopTask(task: { stop: AbortController & { why?: StopReason } }, why: StopReason): void {
    if (!task.stop.signal.aborted) task.stop.why = why;
    task.stop.abort();
  }

  /**
   * A migration PREPARING or RUNNING that no task here runs: the process that ran it
   * stopped. Both nodes decide: completed (source gone, target running) means it
   * succeeded; otherwise the target's copy goes and, unless cancelled or past its
   * timeout, it is scheduled to run again. Nodes that cannot be asked: retried.
   */
  private async resolveInterrupted(m: Migration, vm: VirtualMachine | undefined): Promise<ReconcileResult> {
    const sourceId = m.status!.sourceNodeId;
    const targetId = m.status!.targetNodeId;
    const where = await describeRoute(this.deps, sourceId, targetId);
    const src = this.deps.drivers.get(sourceId);
    const dst = this.deps.drivers.get(targetId);
    let outcome: "target" | "source" = "source";
    if (dst || (await this.deps.store.of(NODE_KIND).get(targetId))) {
      if (!src || !dst) throw new QuantixError("unavailable", `migration '${m.id}' of VM '${m.vmId}' was interrupted ${where}; it is resolved once both nodes are connected`);
      outcome = await migrationOutcome(m.vmId, src, dst);
      if (outcome === "source") await dst.deleteVM(m.vmId);
    }
    this.deps.log.log("warn", "resolved an interrupted migration", { migration_id: m.id, vm_id: m.vmId, source: sourceId, target: targetId, outcome });
    if (outcome === "target" && vm) {
      // Local volumes copied by the completed migration move to the target, as after a followed run.
      await completeVolumeMoves(this.deps, await interruptedVolumeMoves(this.deps.store, vm, sourceId), sourceId, targetId);
    }
    if (outcome === "target") return finish(this.deps, m, { phase: MPhase.SUCCEEDED, reason: "Interrupted", code: "", message: `the control plane stopped during the migration ${where}; it had completed, and the VM runs there ('${targetId}')` });
    const started = m.createdAt ? timestampMs(m.createdAt) : this.deps.clock.now();
    const timeoutMs = this.deps.timeoutMs ?? (m.spec?.timeoutSec ? m.spec.timeoutSec * 1000 : MIGRATION_TIMEOUT_MS);
    const again = !m.spec?.cancel && !!vm && !vm.deletionRequestedAt && m.spec?.requestedBy !== ADOPTED && this.deps.clock.now() - started < timeoutMs;
    if (again) {
      await update(this.deps, m.id, (s) => {
        s.phase = MPhase.SCHEDULED;
        s.message = `the control plane stopped during the migration ${where}; the VM stayed on its node and the migration runs again`;
      });
      return;
    }
    return finish(this.deps, m, { phase: MPhase.FAILED, reason: "Interrupted", code: "aborted", message: `the control plane stopped during the migration ${where}; the VM stays on its node ('${sourceId}')` });
  }

  /**
   * A VM that holds a migration target (status.migration_target_node_id) with no
   * unfinished migration: left by a control plane that migrated inside an RPC, before
   * migrations were resources. It gets a migration in RUNNING, which is then resolved as
   * interrupted (and not run again). A VM being deleted stops its running migration.
   */
  private async reviewVm(vmId: string): Promise<void> {
    const vm = await this.deps.store.of(VM_KIND).get(vmId);
    const page = await this.deps.store.of(MIGRATION_KIND).list({ where: { vm_id: vmId }, order: { field: "created_at", desc: true }, limit: 5, countTotal: false });
    for (const m of page.items) if (!migrationFinished(m)) this.controller.enqueue(m.id);
    const target = vm?.status?.migrationTargetNodeId;
    if (!vm || !target) return;
    if (page.items.some((m) => !migrationFinished(m) || (m.status?.targetNodeId === target && m.status.sourceNodeId === vm.status?.nodeId))) return;
    const now = timestampFromMs(this.deps.clock.now());
    await this.deps.store.of(MIGRATION_KIND).create(
      create(MigrationSchema, {
        id: this.deps.ids.newId(),
        projectId: vm.projectId,
        vmId: vm.id,
        spec: { targetNodeId: target, requestedBy: ADOPTED },
        status: { phase: MPhase.RUNNING, sourceNodeId: vm.status!.nodeId, targetNodeId: target, message: "adopted from an earlier control plane" },
        createdAt: now,
        updatedAt: now,
      }),
      { actor: MIGRATION_CONTROLLER },
    );
  }
}

/** requested_by of a migration made for a leftover migration target. */
const ADOPTED = "an earlier control plane";
