import { clone, create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { DrainStatusSchema, DrainStatus_Phase as DPhase, DrainVmFailureSchema, type DrainStatus, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { PowerState, VmStatus_State as State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { allOf, MIGRATION_KIND, migrationFinished, NODE_KIND, QuantixError, VM_KIND, type Clock, type Store, type Timers } from "@quantix/core";
import type { Logger } from "@quantix/rpc";
import { Controller, watching } from "../runtime/controller.js";
import type { VmMigrationService } from "../services/vm-migration.js";
import type { VmPowerService } from "../services/vm-power.js";
import { waitFor } from "../services/wait.js";
import { setCondition } from "./conditions.js";
import { updateWithEvents } from "../events/record.js";
import { nodeEvents } from "../events/node-events.js";

/** The actor name of the drain controller; it owns a node's status.drain and its Drained condition. */
export const DRAIN_CONTROLLER = "drain-controller";
/** The node condition a drain writes: False with progress while it runs, then its outcome. */
export const DRAINED_CONDITION = "Drained";

/** Dependencies of the drain controller. */
export interface DrainControllerDeps {
  readonly store: Store;
  readonly migrations: VmMigrationService;
  readonly power: VmPowerService;
  readonly clock: Clock;
  readonly timers?: Timers;
  readonly log: Logger;
}

type Outcome = { kind: "migrated" | "stopped"; text: string } | { kind: "failed"; reason: string; text: string };

/**
 * Drains nodes as their spec asks (spec.drain, written by DrainNode), on the leader, one
 * VM at a time (live migrations share the hosts' CPUs and links), reporting in
 * status.drain and the Drained condition as it goes, so that a restart of the control
 * plane carries on where it was:
 * - a RUNNING VM is migrated (a Migration, like MigrateVM's, to spec.drain.target_node_id
 *   or where the scheduler chooses, each target chosen over the cluster as it is then);
 * - a VM that is off and wants to stay off is unplaced by the scheduler (it gets a node
 *   when it starts) and counts as moved;
 * - any other VM, or one whose migration fails, is reported failed with the reason, or
 *   with force stopped (graceful for grace_period_sec, then powered off).
 * A cancelled drain (spec.drain.cancelled: its caller went away) handles no further VM.
 */
export class DrainController {
  readonly controller: Controller;
  /** Aborted when the controller stops: a step waiting on a migration gives up waiting (the migration goes on). */
  private stopping = new AbortController();

  constructor(deps: DrainControllerDeps) {
    const nodes = deps.store.of(NODE_KIND);
    this.controller = new Controller(
      {
        name: DRAIN_CONTROLLER,
        watches: [watching(nodes, (ev) => (ev.type !== "DELETED" && ev.object.spec?.drain ? [ev.object.id] : []))],
        keys: async function* () {
          for await (const n of allOf(nodes)) if (n.spec?.drain) yield n.id;
        },
        reconcile: (nodeId) => step(deps, nodeId, this.stopping.signal),
        concurrency: 4,
      },
      { clock: deps.clock, ...(deps.timers ? { timers: deps.timers } : {}), log: deps.log, revision: () => deps.store.revision() },
    );
  }

  start(): Promise<void> {
    this.stopping = new AbortController();
    return this.controller.start();
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    await this.controller.stop();
  }

  idle(): Promise<void> {
    return this.controller.idle();
  }
}

/** Takes one step of a node's drain: start it, handle its next VM, or finish it. */
async function step(deps: DrainControllerDeps, nodeId: string, signal: AbortSignal): Promise<void> {
  const node = await deps.store.of(NODE_KIND).get(nodeId);
  const want = node?.spec?.drain;
  if (!node || !want || want.sequence === 0n) return;
  const st = node.status?.drain;
  if (st?.sequence === want.sequence && (st.phase === DPhase.COMPLETED || st.phase === DPhase.INCOMPLETE)) return;
  if (st?.sequence !== want.sequence) {
    const remaining: string[] = [];
    for await (const vm of allOf(deps.store.of(VM_KIND), { where: { node_id: nodeId } })) remaining.push(vm.id);
    await write(deps, node, (d) => {
      d.sequence = want.sequence;
      d.phase = DPhase.RUNNING;
      d.remainingVmIds = remaining;
      d.migratedVmIds = [];
      d.stoppedVmIds = [];
      d.failures = [];
    }, `draining: 0 of ${remaining.length} VM(s) handled`);
    return;
  }
  const head = st.remainingVmIds[0];
  const total = st.remainingVmIds.length + st.migratedVmIds.length + st.stoppedVmIds.length + st.failures.length;
  if (head === undefined || want.cancelled) {
    await finish(deps, node, want.cancelled ? "drain cancelled" : undefined);
    return;
  }
  const outcome = await handle(deps, node, head, signal);
  // Stopping: this VM is handled again after the restart (its migration, if any, is followed).
  if (signal.aborted) return;
  const handled = total - st.remainingVmIds.length + 1;
  const failure = outcome.kind === "failed" ? outcome.reason : "";
  await write(deps, node, (d) => {
    if (d.remainingVmIds[0] !== head) return;
    d.remainingVmIds = d.remainingVmIds.slice(1);
    if (outcome.kind === "migrated") d.migratedVmIds.push(head);
    else if (outcome.kind === "stopped") d.stoppedVmIds.push(head);
    else d.failures.push(create(DrainVmFailureSchema, { vmId: head, reason: failure }));
  }, `draining: ${handled} of ${total} VM(s) handled; last: ${outcome.text}`);
}

/** Moves (or stops, or fails to move) one VM off the node. */
async function handle(deps: DrainControllerDeps, node: Node, vmId: string, signal: AbortSignal): Promise<Outcome> {
  const want = node.spec!.drain!;
  const vms = deps.store.of(VM_KIND);
  const vm = await vms.get(vmId);
  if (!vm || vm.status?.nodeId !== node.id) return { kind: "migrated", text: `VM '${vm?.name ?? vmId}' has left the node` };
  const budget = { ms: 30_000, signal };
  if (vm.status?.state === State.STOPPED && vm.spec?.desiredPowerState !== PowerState.RUNNING) {
    // The scheduler unplaces a VM that is off on a node being drained.
    const after = await waitFor(vms, "VM", vm.id, (x) => x.status?.nodeId !== node.id, budget.ms, signal).catch(() => undefined);
    if (!after || after.status?.nodeId !== node.id) return { kind: "migrated", text: `VM '${vm.name}' is off and was unplaced` };
    return { kind: "failed", reason: "the VM is off but was not unplaced in time", text: `VM '${vm.name}' could not be unplaced` };
  }
  let why: string;
  try {
    const moved = await followOrMigrate(deps, vm.id, want.targetNodeId, `DrainNode ${node.id}`, signal, want.cancelled);
    return { kind: "migrated", text: `VM '${vm.name}' migrated to node '${moved}'` };
  } catch (err) {
    why = err instanceof Error ? err.message : String(err);
  }
  if (!want.force) return { kind: "failed", reason: why, text: `VM '${vm.name}' could not move: ${why}` };
  const timeoutSec = want.gracePeriodSec > 0 ? want.gracePeriodSec : 60;
  try {
    const stopped = await deps.power.act("stop", vm.id, { ms: (timeoutSec + 15) * 1000, signal }, { force: false, timeoutSec });
    if (stopped.status?.state !== State.STOPPED) throw new QuantixError("unavailable", `VM '${vm.id}' is ${State[stopped.status?.state ?? State.UNKNOWN]} after the grace period`);
    return { kind: "stopped", text: `VM '${vm.name}' could not move and was stopped (${why})` };
  } catch (err) {
    return { kind: "failed", reason: `${why}; stopping it failed too: ${err instanceof Error ? err.message : String(err)}`, text: `VM '${vm.name}' could neither move nor stop` };
  }
}

/** Migrates a VM for the drain, or follows the drain's migration of it already under way (after a restart). */
async function followOrMigrate(deps: DrainControllerDeps, vmId: string, targetNodeId: string, requestedBy: string, signal: AbortSignal, _cancelled: boolean): Promise<string> {
  const page = await deps.store.of(MIGRATION_KIND).list({ where: { vm_id: vmId }, order: { field: "created_at", desc: true }, limit: 1, countTotal: false });
  const running = page.items.find((m) => !migrationFinished(m) && m.spec?.requestedBy === requestedBy);
  // The controller's signal only stops the waiting (at shutdown): the migration goes on.
  const wait = { signal, cancelOnAbort: false };
  const res = running ? await deps.migrations.follow(running, wait) : await deps.migrations.migrate({ vmId, targetNodeId, live: true, maxDowntimeMs: 0, bandwidthMbps: 0, requestedBy }, wait);
  return res.vm.status?.nodeId ?? "";
}

/** Ends a drain: every VM left fails with `why` (a cancel); COMPLETED when nothing failed. */
async function finish(deps: DrainControllerDeps, node: Node, why: string | undefined): Promise<void> {
  const st = node.status!.drain!;
  const failures = [...st.failures, ...(why ? st.remainingVmIds.map((vmId) => create(DrainVmFailureSchema, { vmId, reason: why })) : [])];
  const summary = `${st.migratedVmIds.length} moved, ${st.stoppedVmIds.length} stopped, ${failures.length} failed`;
  const ok = failures.length === 0;
  await write(
    deps,
    node,
    (d) => {
      d.remainingVmIds = [];
      d.failures = failures;
      d.phase = ok ? DPhase.COMPLETED : DPhase.INCOMPLETE;
    },
    ok ? `drained: ${summary}` : `drain incomplete: ${summary}; DrainNode again retries`,
    ok ? "Drained" : "DrainIncomplete",
  );
  deps.log.log("info", "node drained", { node_id: node.id, migrated: st.migratedVmIds.length, stopped: st.stoppedVmIds.length, failed: failures.length });
}

/** Edits the node's drain status for the drain it reads, with the Drained condition saying where it stands. */
async function write(deps: DrainControllerDeps, node: Node, edit: (d: DrainStatus) => void, message: string, reason = "InProgress"): Promise<void> {
  const now = deps.clock.now();
  const sequence = node.spec!.drain!.sequence;
  await updateWithEvents(
    deps.store,
    NODE_KIND,
    node.id,
    (cur) => {
      if (!cur.status || cur.spec?.drain?.sequence !== sequence) return undefined;
      const d = cur.status.drain && cur.status.drain.sequence === sequence ? clone(DrainStatusSchema, cur.status.drain) : create(DrainStatusSchema, { sequence });
      edit(d);
      cur.status.drain = d;
      const done = d.phase === DPhase.COMPLETED;
      cur.status.conditions = setCondition(cur.status.conditions, { type: DRAINED_CONDITION, status: done, reason, message, generation: 0n }, now);
      cur.updatedAt = timestampFromMs(now);
      return cur;
    },
    nodeEvents,
    { actor: DRAIN_CONTROLLER, nowMs: now },
  );
}
