import { clone, create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { MigrationStatusSchema, MigrationStatus_Phase as MPhase, type Migration, type MigrationStatus } from "@quantix/api/gen/Quantixkvm/compute/v1/migration_pb.js";
import { VmStatusSchema, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { MIGRATION_KIND, NODE_KIND, QuantixError, VM_KIND, type Clock, type HypervisorMigration, type HypervisorPort, type MigrationStatistics, type Store } from "@quantix/core";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";
import type { Logger } from "@quantix/rpc";
import { migrationOutcome, type MigrationOutcome } from "../services/migration-outcome.js";
import { MigrationProgressWriter } from "../services/migration-progress.js";
import { setCondition } from "./conditions.js";
import type { NodeStorages } from "../storage/node-storages.js";
import { completeVolumeMoves, planMigrationVolumes, type MigrationVolumePlan } from "../storage/migration-volumes.js";

/** The actor name of the migration controller. */
export const MIGRATION_CONTROLLER = "migration-controller";
/** The default upper bound on one migration, after which it is cancelled. */
export const MIGRATION_TIMEOUT_MS = 10 * 60_000;

/** Why a migration ended without completing. */
export type StopReason = "Cancelled" | "TimedOut" | "Deleted" | "Failed" | "Abandoned";

/** What running a migration needs. */
export interface MigrationRunDeps {
  readonly store: Store;
  readonly drivers: NodeDrivers;
  readonly clock: Clock;
  readonly log: Logger;
  /** Overrides every migration's own timeout (tests). */
  readonly timeoutMs?: number;
  /** How often a quiet migration writes its progress again (tests). */
  readonly touchEveryMs?: number;
  /** The nodes' storage, for VMs whose disks are volumes (absent: such VMs cannot migrate). */
  readonly storages?: NodeStorages | undefined;
  /** Waits until the VM's NICs' ports are set up on the target (absent: VMs have no NICs on ports). */
  readonly nicsReadyOn?: ((vm: VirtualMachine, nodeId: string, signal: AbortSignal) => Promise<void>) | undefined;
}

interface Side {
  readonly id: string;
  readonly port: HypervisorPort;
  readonly migration: HypervisorMigration;
}

/**
 * Runs one SCHEDULED migration to its end: prepares the target, lets the source send the
 * VM, with progress written on the migration and on the VM's Migrating condition, and
 * records the outcome on the migration (the scheduler then moves the VM's binding). On a
 * failure, cancel (`stop` aborted with a reason) or timeout both nodes are observed: a
 * migration that completed anyway is recorded as succeeded; else the target copy this run
 * prepared is deleted and the VM keeps running on its source. When the nodes cannot be
 * asked, the migration is left as it is: the controller resolves it later (interrupted).
 */
export async function runMigration(deps: MigrationRunDeps, m: Migration, stop: AbortController & { why?: StopReason }): Promise<void> {
  const vm = await deps.store.of(VM_KIND).get(m.vmId);
  const sourceId = m.status!.sourceNodeId;
  const targetId = m.status!.targetNodeId;
  const where = await describeRoute(deps, sourceId, targetId);
  if (!vm || vm.deletionRequestedAt) return finish(deps, m, { phase: MPhase.FAILED, reason: "Deleted", code: "not_found", message: `migrating VM '${m.vmId}' ${where} was stopped: the VM was deleted` });
  let src: Side;
  let dst: Side;
  try {
    src = capable(deps, sourceId, m.vmId, "its node");
    dst = capable(deps, targetId, m.vmId, "the target node");
  } catch (err) {
    const e = err as QuantixError;
    return finish(deps, m, { phase: MPhase.FAILED, reason: "Failed", code: e.code, message: e.message });
  }
  const timeoutMs = deps.timeoutMs ?? (m.spec?.timeoutSec ? m.spec.timeoutSec * 1000 : MIGRATION_TIMEOUT_MS);
  const abort = (reason: StopReason) => {
    if (!stop.signal.aborted) stop.why = reason;
    stop.abort();
  };
  const timer = setTimeout(() => abort("TimedOut"), timeoutMs);
  const progress = new MigrationProgressWriter(
    deps.clock,
    async (message) => {
      await writeVmCondition(deps, m.vmId, targetId, true, "InProgress", message);
    },
    () => abort("Deleted"),
    `migrating ${where}: preparing`,
    deps.touchEveryMs,
  );
  let prepared = false;
  let volumes: MigrationVolumePlan = { targetPaths: new Map(), moves: [] };
  let stats: MigrationStatistics | undefined;
  let failure: unknown;
  try {
    await update(deps, m.id, (s) => {
      s.phase = MPhase.PREPARING;
      s.startedAt = timestampFromMs(deps.clock.now());
      s.message = `migrating ${where}: preparing`;
    });
    if (stop.signal.aborted) throw new QuantixError("aborted", "cancelled before it started");
    // Disks on node-local storage are copied while the guest runs; shared ones are used in place.
    // Volume disks: a shared volume's file on the target, a local volume's copy in the target's pool.
    volumes = await planMigrationVolumes(deps.store, deps.storages, vm, sourceId, targetId);
    // The target also starts with the source's PCI layout (disks hot-plugged since it started sit elsewhere).
    const plan = src.migration.plan ? await src.migration.plan(vm.id) : { copies: (await src.migration.planCopies?.(vm.id)) ?? [], devices: [] };
    // NICs on ports: their TAPs must exist on the target before it opens them (the network controller puts them there).
    if (vm.spec!.nics.some((n) => n.portId !== "")) await deps.nicsReadyOn?.(vm, targetId, stop.signal);
    const target = await dst.migration.prepare(vm.id, vm.spec!, plan.copies, volumes.targetPaths, plan.devices);
    prepared = true;
    await update(deps, m.id, (s) => (s.phase = MPhase.RUNNING));
    stats = await src.migration.migrate(vm.id, target, { maxDowntimeMs: m.spec?.maxDowntimeMs ?? 0, bandwidthMbps: m.spec?.bandwidthMbps ?? 0 }, (p) => {
      progress.report(where, p);
      void update(deps, m.id, (s) => {
        s.transferredBytes = p.transferredBytes;
        s.totalBytes = p.totalBytes;
        if (p.diskTotalBytes !== undefined) {
          s.diskTransferredBytes = p.diskTransferredBytes ?? 0n;
          s.diskTotalBytes = p.diskTotalBytes;
        }
      }).catch(() => undefined);
    }, stop.signal);
  } catch (err) {
    failure = err;
  } finally {
    clearTimeout(timer);
    await progress.settle();
  }

  // The control plane is stopping: nothing is decided here; after a restart the migration
  // is found interrupted and resolved by observing both nodes.
  if (stop.why === "Abandoned") return;
  let outcome: MigrationOutcome = stats ? "target" : "source";
  if (!stats && prepared) {
    try {
      outcome = await migrationOutcome(vm.id, src.port, dst.port);
      if (outcome === "source") await dst.port.deleteVM(vm.id);
    } catch (err) {
      // Left as it is: the controller observes both nodes again and resolves it.
      deps.log.log("warn", "a failed migration's outcome is unknown; it is resolved when both nodes answer", { migration_id: m.id, vm_id: vm.id, error: String(err) });
      return;
    }
  }
  if (outcome === "target") {
    // Copied volumes now live on the target: the record moves there, the source's file goes.
    await completeVolumeMoves(deps, volumes, sourceId, targetId).catch((err: unknown) => deps.log.log("warn", "a migrated VM's volumes could not be moved to the target", { migration_id: m.id, vm_id: vm.id, error: String(err) }));
    const disks = stats?.diskTransferredBytes !== undefined ? ` (and ${Number(stats.diskTransferredBytes / 1048576n)} MiB of disk copied)` : "";
    const measured = stats ? `${Number(stats.transferredBytes / 1048576n)} MiB${disks} in ${stats.durationMs} ms, ${stats.downtimeMs} ms downtime` : "completed while its caller was gone (no statistics)";
    deps.log.log("info", "migration completed", { migration_id: m.id, vm_id: vm.id, source: sourceId, target: targetId, duration_ms: stats?.durationMs, downtime_ms: stats?.downtimeMs });
    return finish(deps, m, { phase: MPhase.SUCCEEDED, reason: "Completed", code: "", message: `migrated ${where}: ${measured}`, stats });
  }
  const reason = (stop.why ?? (stop.signal.aborted ? "Cancelled" : "Failed")) as Exclude<StopReason, "Abandoned">;
  const text = { Cancelled: "was cancelled", TimedOut: `timed out after ${timeoutMs} ms`, Deleted: "was stopped: the VM was deleted", Failed: `failed: ${failure instanceof Error ? failure.message : String(failure)}` }[reason];
  const code = reason === "TimedOut" ? "deadline_exceeded" : reason === "Deleted" ? "not_found" : reason === "Failed" && failure instanceof QuantixError ? failure.code : "aborted";
  deps.log.log("warn", "migration failed", { migration_id: m.id, vm_id: vm.id, source: sourceId, target: targetId, reason, error: failure instanceof Error ? failure.message : String(failure) });
  return finish(deps, m, { phase: reason === "Cancelled" ? MPhase.CANCELLED : MPhase.FAILED, reason, code, message: `migrating VM '${vm.id}' ${where} ${text}` });
}

/** "from node 'a' to node 'b'", with hostnames. */
export async function describeRoute(deps: { store: Store }, sourceId: string, targetId: string): Promise<string> {
  const nodes = deps.store.of(NODE_KIND);
  const name = async (id: string) => (await nodes.get(id))?.hostname ?? id;
  return `from node '${await name(sourceId)}' to node '${await name(targetId)}'`;
}

/** Records a migration's final phase (once): the scheduler then moves or keeps the VM. */
export async function finish(
  deps: { store: Store; clock: Clock },
  m: Migration,
  end: { phase: MPhase; reason: string; code: string; message: string; stats?: MigrationStatistics | undefined },
): Promise<void> {
  await update(deps, m.id, (s) => {
    s.phase = end.phase;
    s.reason = end.reason;
    s.errorCode = end.code;
    s.message = end.message;
    s.finishedAt = timestampFromMs(deps.clock.now());
    if (end.stats) {
      s.transferredBytes = end.stats.transferredBytes;
      s.downtimeMs = BigInt(end.stats.downtimeMs);
      s.durationMs = BigInt(end.stats.durationMs);
      if (end.stats.diskTransferredBytes !== undefined) s.diskTransferredBytes = s.diskTotalBytes = end.stats.diskTransferredBytes;
    }
  });
}

/** Edits a migration's status, unless it has already ended. */
export async function update(deps: { store: Store; clock: Clock }, id: string, edit: (s: MigrationStatus) => void): Promise<void> {
  const now = deps.clock.now();
  await deps.store.of(MIGRATION_KIND).update(
    id,
    (cur) => {
      const p = cur.status?.phase;
      if (p === MPhase.SUCCEEDED || p === MPhase.FAILED || p === MPhase.CANCELLED) return undefined;
      cur.status ??= create(MigrationStatusSchema);
      edit(cur.status);
      cur.updatedAt = timestampFromMs(now);
      return cur;
    },
    { actor: MIGRATION_CONTROLLER },
  );
}

/**
 * The VM's Migrating condition while its migration runs (its progress, for watchers),
 * written only while the VM still reserves this migration's target. A VM being deleted
 * is gone for its migration (NOT_FOUND), which stops it.
 */
async function writeVmCondition(deps: { store: Store; clock: Clock }, vmId: string, targetId: string, status: boolean, reason: string, message: string): Promise<void> {
  const now = deps.clock.now();
  await deps.store.of(VM_KIND).update(
    vmId,
    (cur: VirtualMachine) => {
      if (cur.deletionRequestedAt) throw new QuantixError("not_found", `VM '${vmId}' not found`);
      if (cur.status?.migrationTargetNodeId !== targetId) return undefined;
      const next = clone(VmStatusSchema, cur.status);
      next.conditions = setCondition(next.conditions, { type: "Migrating", status, reason, message, generation: cur.generation }, now);
      cur.status = next;
      cur.updatedAt = timestampFromMs(now);
      return cur;
    },
    { actor: MIGRATION_CONTROLLER },
  );
}

/** The node's hypervisor and its migration, or FAILED_PRECONDITION naming the missing capability. */
export function capable(deps: { drivers: NodeDrivers }, nodeId: string, vmId: string, what: string): Side {
  const port = deps.drivers.get(nodeId);
  if (!port) throw new QuantixError("unavailable", `${what} '${nodeId}' is not connected; retry when it is READY`);
  if (!port.capabilities.has("live-migration") || !port.migration) {
    throw new QuantixError("failed_precondition", `VM '${vmId}' cannot migrate: ${what} '${nodeId}' runs a ${port.kind} hypervisor, which lacks the 'live-migration' capability`);
  }
  return { id: nodeId, port, migration: port.migration };
}
