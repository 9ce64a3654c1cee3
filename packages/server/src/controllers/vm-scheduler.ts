import { clone, create } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import { MigrationSchema, MigrationStatusSchema, MigrationStatus_Phase as MPhase, type Migration, type MigrationStatus } from "@quantix/api/gen/Quantixkvm/compute/v1/migration_pb.js";
import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { PlacementPolicySchema, PowerState, VmSpecSchema, VmStatusSchema, VmStatus_State as State, type VirtualMachine, type VmStatus } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import {
  allOf,
  ClusterState,
  EVENT_KIND,
  MIGRATION_KIND,
  migrationFinished,
  NODE_KIND,
  QuantixError,
  schedule,
  SCHEDULER,
  VM_KIND,
  volumePlacement,
  type ChangeEvent,
  type Clock,
  type Placement,
  type ScoringStrategy,
  type Store,
  type WatchEvent,
} from "@quantix/core";
import type { Logger } from "@quantix/rpc";
import { setCondition } from "./conditions.js";
import { haPriority } from "./ha-policy.js";
import { markNoExecute } from "./no-execute.js";
import { reviewBinding } from "./scheduler/binding-review.js";
import { claimMigration } from "./scheduler/migration-claim.js";
import { readVolumeDisks } from "../storage/vm-volumes.js";
import { migrationVolumeNodes } from "../storage/migration-volumes.js";
import { nodeChangeMatters, vmChangeMatters } from "./scheduler-triggers.js";
import { desiredOf, withEditedStatus } from "./vm-status.js";
import { eventOf, updateWithEvents } from "../events/record.js";
import { vmEvents } from "../events/vm-events.js";

/** Dependencies of the scheduler controller. */
export interface VmSchedulerDeps {
  readonly store: Store;
  readonly clock: Clock;
  readonly log: Logger;
  readonly strategy: ScoringStrategy;
  /** Whether the control plane drives a node's hypervisor (NodeDrivers.has). */
  readonly isConnected: (nodeId: string) => boolean;
  /** A full pass at least this often, as a safety net. */
  readonly resyncMs?: number;
  /** How soon to try again when a node was passed over only because its hypervisor is not connected yet. */
  readonly connectRetryMs?: number;
}

const ACTIVE_PHASES = [MPhase.PENDING, MPhase.SCHEDULED, MPhase.PREPARING, MPhase.RUNNING];

/**
 * The scheduler: the one writer of every VM's binding to a node (status.node_id and
 * status.migration_target_node_id; the store refuses anyone else). One pass at a time in
 * this process, on the leader: a pass reads every node, VM and unfinished migration and
 *  1. reviews each bound VM's binding (binding-review.ts: a migration that ended, a node
 *     decommissioned, lost with HA, drained, or a stopped VM that no longer fits),
 *  2. reserves a target for each pending migration, or fails it with the reason
 *     (scheduler/migration-claim.ts),
 *  3. places the VMs that want to run and have no node, highest HA priority first, then
 *     oldest first, recording each placement in the pass's ClusterState before the next,
 *  4. marks VMs on NoExecute-tainted nodes Evicting.
 * Each write is conditional on the VM being unchanged since the pass read it, so a VM
 * stopped or deleted meanwhile is left for the next pass: concurrent creates never
 * overcommit a node. A VM that fits nowhere stays PENDING with Scheduled=False and the
 * explanation; store changes that may change a decision start another pass.
 */
export class VmScheduler {
  private readonly abort = new AbortController();
  private running: Promise<void> | undefined;
  private dirty = false;
  private resync: NodeJS.Timeout | undefined;
  private retry: NodeJS.Timeout | undefined;
  private wake: NodeJS.Timeout | undefined;

  constructor(private readonly deps: VmSchedulerDeps) {}

  /** Watches the store and runs a first pass. */
  async start(): Promise<void> {
    const from = await this.deps.store.revision();
    void this.watch(from, (rev, signal) => this.deps.store.of(VM_KIND).watch(rev, signal), vmChangeMatters);
    void this.watch(from, (rev, signal) => this.deps.store.of(NODE_KIND).watch(rev, signal), nodeChangeMatters);
    void this.watch(from, (rev, signal) => this.deps.store.of(MIGRATION_KIND).watch(rev, signal), () => true);
    this.trigger();
    this.resync = setInterval(() => this.trigger(), this.deps.resyncMs ?? 30_000);
    this.resync.unref();
    await this.idle();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    clearInterval(this.resync);
    clearTimeout(this.retry);
    clearTimeout(this.wake);
    await this.idle();
  }

  /** Asks for a pass; passes never overlap, and asks during a pass lead to one more. */
  trigger(): void {
    if (this.abort.signal.aborted) return;
    this.dirty = true;
    this.running ??= this.loop().finally(() => {
      this.running = undefined;
    });
  }

  /** Resolves when no pass is running or asked for (tests). */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private async loop(): Promise<void> {
    while (this.dirty && !this.abort.signal.aborted) {
      this.dirty = false;
      try {
        await this.pass();
      } catch (err) {
        this.deps.log.log("warn", "scheduling pass failed; will retry at resync", { error: String(err) });
      }
    }
  }

  /** One pass (see the class comment). */
  private async pass(): Promise<void> {
    const now = this.deps.clock.now();
    const nodes = await this.allNodes();
    const nodeById = new Map(nodes.map((n) => [n.id, n]));
    const vms: VirtualMachine[] = [];
    for await (const vm of allOf(this.deps.store.of(VM_KIND))) vms.push(vm);
    const migrations = await this.migrationsOf(vms);
    let cluster = ClusterState.of(nodes, vms);
    let wakeAt = Infinity;

    // 1. Bindings.
    let moved = false;
    for (const [i, vm] of vms.entries()) {
      if (!vm.status?.nodeId) continue;
      const review = reviewBinding(vm, {
        nowMs: now,
        node: (id) => nodeById.get(id),
        finishedMigration: (v) => finishedMigrationOf(v, migrations),
        fits: (v) => this.fits(v, cluster),
      });
      if (review.wakeAtMs !== undefined) wakeAt = Math.min(wakeAt, review.wakeAtMs);
      if (!review.edit) continue;
      const next = await this.writeVm(vm, review.edit);
      if (next) {
        this.deps.log.log("info", "scheduler changed a VM's binding", { vm_id: vm.id, from: vm.status.nodeId, to: next.status?.nodeId ?? "", why: review.why });
        vms[i] = next;
        moved = true;
      }
    }
    if (moved) cluster = ClusterState.of(nodes, vms);

    // 2. Migrations waiting for a target.
    const vmById = new Map(vms.map((v) => [v.id, v]));
    for (const m of migrations.filter((x) => x.status?.phase === MPhase.PENDING).sort(oldestFirst)) {
      if (this.abort.signal.aborted) return;
      const vm = vmById.get(m.vmId);
      // Volume disks: a local-pool volume is copied to a node that has its pool, a shared one used on the pool's nodes.
      let volumeNodeIds: readonly string[] | undefined;
      try {
        volumeNodeIds = vm && !vm.status?.migrationTargetNodeId ? await migrationVolumeNodes(this.deps.store, vm) : undefined;
      } catch (err) {
        await this.failMigration(m, "Unschedulable", err instanceof QuantixError ? err.code : "failed_precondition", err instanceof Error ? err.message : String(err), now);
        continue;
      }
      const claim = claimMigration(m, vm, { nowMs: now, cluster, node: (id) => nodeById.get(id), strategy: this.deps.strategy, isConnected: this.deps.isConnected, volumeNodeIds });
      if (claim.kind === "claim") {
        if (await this.commitClaim(vm!, m, claim.vm, claim.migration)) cluster.assign(vm!, claim.target);
      } else {
        await this.failMigration(m, claim.reason, claim.code, claim.message, now);
      }
    }

    // 3. Placement.
    const pending = vms.filter((vm) => !vm.status?.nodeId && desiredOf(vm) !== PowerState.STOPPED && !vm.deletionRequestedAt).sort((a, b) => haPriority(b) - haPriority(a) || oldestFirst(a, b));
    let waitForConnect = false;
    for (const vm of pending) {
      if (this.abort.signal.aborted) return;
      let placement: Placement;
      try {
        placement = schedule({ ...vm, volumeNodeIds: await this.volumeNodesOf(vm) }, cluster, { strategy: this.deps.strategy, isConnected: this.deps.isConnected });
      } catch (err) {
        // Volumes no one node reaches (a volume moved since the VM was created): unschedulable, with the reason.
        if (!(err instanceof QuantixError)) throw err;
        placement = { ok: false, reason: "Unschedulable", message: err.violations[0]?.description ?? err.message };
      }
      if (!placement.ok && placement.message.includes("no connected hypervisor")) waitForConnect = true;
      if (await this.record(vm, placement, now)) {
        if (placement.ok) cluster.assign(vm, placement.nodeId);
      } else {
        this.dirty = true; // the VM changed since this pass read it: look again
      }
    }

    // 4. NoExecute.
    await markNoExecute(this.deps.store, this.deps.clock, nodes, vms);
    if (waitForConnect) this.later("retry", this.deps.connectRetryMs ?? 1000);
    if (wakeAt !== Infinity) this.later("wake", Math.max(0, wakeAt - now));
  }

  /** The nodes that reach every volume the VM's disks name; undefined when it names none (or they are reachable anywhere). */
  private async volumeNodesOf(vm: VirtualMachine): Promise<readonly string[] | undefined> {
    if (!vm.spec?.disks.some((d) => d.volumeId !== "")) return undefined;
    const { reaches } = await readVolumeDisks(this.deps.store, vm.projectId, vm.spec);
    return volumePlacement(reaches);
  }

  /** Whether a placed VM, with its spec as it is now, still passes every filter on its node. */
  private fits(vm: VirtualMachine, cluster: ClusterState): boolean {
    const nodeId = vm.status!.nodeId;
    const required = vm.spec?.placement?.requiredNodeIds ?? [];
    if (required.length > 0 && !required.includes(nodeId)) return false;
    const spec = clone(VmSpecSchema, vm.spec ?? create(VmSpecSchema));
    (spec.placement ??= create(PlacementPolicySchema)).requiredNodeIds = [nodeId];
    cluster.unassign(vm, nodeId);
    try {
      return schedule({ id: vm.id, labels: vm.labels, spec }, cluster, { strategy: this.deps.strategy, isConnected: this.deps.isConnected }).ok;
    } finally {
      cluster.assign(vm, nodeId);
    }
  }

  /** Writes a placement (or why there is none) if the VM is unchanged; false when it changed. */
  private async record(vm: VirtualMachine, placement: Placement, now: number): Promise<boolean> {
    const next = await this.writeVm(vm, (s) => writePlacement(s, placement, vm.generation, now), true);
    return next !== undefined;
  }

  /** Edits a VM's status if it is unchanged since the pass read it; undefined when it changed or went. */
  private async writeVm(vm: VirtualMachine, edit: (s: VmStatus) => void, unchangedIsOk = false): Promise<VirtualMachine | undefined> {
    const now = this.deps.clock.now();
    try {
      const out = await updateWithEvents(
        this.deps.store,
        VM_KIND,
        vm.id,
        (cur) => {
          return withEditedStatus(cur, edit, now);
        },
        vmEvents,
        { expectedVersion: vm.resourceVersion, actor: SCHEDULER, nowMs: now },
      );
      return out.resourceVersion === vm.resourceVersion && !unchangedIsOk ? undefined : out;
    } catch (err) {
      if (err instanceof QuantixError && (err.code === "aborted" || err.code === "not_found")) {
        this.dirty = true;
        return undefined;
      }
      throw err;
    }
  }

  /** Reserves a migration's target: the VM's and the migration's writes in one transaction. */
  private async commitClaim(vm: VirtualMachine, m: Migration, vmEdit: (s: VmStatus) => void, mEdit: (s: MigrationStatus) => void): Promise<boolean> {
    const now = timestampFromMs(this.deps.clock.now());
    const nextVm = clone(VM_KIND.schema, vm) as VirtualMachine;
    nextVm.status = clone(VmStatusSchema, vm.status ?? create(VmStatusSchema));
    vmEdit(nextVm.status);
    nextVm.updatedAt = now;
    const nextM = clone(MigrationSchema, m);
    nextM.status = clone(MigrationStatusSchema, m.status ?? create(MigrationStatusSchema));
    mEdit(nextM.status);
    nextM.updatedAt = now;
    try {
      const events = vmEvents(vm, nextVm).map((e) => ({ op: "create" as const, kind: EVENT_KIND as never, object: eventOf(VM_KIND as never, nextVm, e, SCHEDULER, this.deps.clock.now()) }));
      await this.deps.store.commit([{ op: "update", kind: VM_KIND as never, object: nextVm }, { op: "update", kind: MIGRATION_KIND as never, object: nextM }, ...events], { actor: SCHEDULER });
      this.deps.log.log("info", "migration target reserved", { migration_id: m.id, vm_id: vm.id, source: vm.status?.nodeId, target: nextVm.status.migrationTargetNodeId });
      return true;
    } catch (err) {
      if (err instanceof QuantixError && (err.code === "aborted" || err.code === "not_found")) {
        this.dirty = true;
        return false;
      }
      throw err;
    }
  }

  private async failMigration(m: Migration, reason: string, code: string, message: string, now: number): Promise<void> {
    await this.deps.store
      .of(MIGRATION_KIND)
      .update(
        m.id,
        (cur) => {
          if (cur.status?.phase !== MPhase.PENDING) return undefined;
          cur.status.phase = MPhase.FAILED;
          cur.status.reason = reason;
          cur.status.errorCode = code;
          cur.status.message = message;
          cur.status.finishedAt = timestampFromMs(now);
          cur.updatedAt = timestampFromMs(now);
          return cur;
        },
        { expectedVersion: m.resourceVersion, actor: SCHEDULER },
      )
      .catch((err: unknown) => {
        if (!(err instanceof QuantixError && (err.code === "aborted" || err.code === "not_found"))) throw err;
        this.dirty = true;
      });
    this.deps.log.log("info", "migration refused", { migration_id: m.id, vm_id: m.vmId, reason, message });
  }

  /** Unfinished migrations, and the last ones of VMs that still hold a migration target. */
  private async migrationsOf(vms: readonly VirtualMachine[]): Promise<Migration[]> {
    const out = new Map<string, Migration>();
    const coll = this.deps.store.of(MIGRATION_KIND);
    for await (const m of allOf(coll, { where: { phase: ACTIVE_PHASES } })) out.set(m.id, m);
    for (const vm of vms) {
      if (!vm.status?.migrationTargetNodeId) continue;
      const page = await coll.list({ where: { vm_id: vm.id }, order: { field: "created_at", desc: true }, limit: 5, countTotal: false });
      for (const m of page.items) out.set(m.id, m);
    }
    return [...out.values()];
  }

  private later(which: "retry" | "wake", ms: number): void {
    clearTimeout(this[which]);
    const t = setTimeout(() => this.trigger(), ms);
    t.unref();
    this[which] = t;
  }

  private async allNodes(): Promise<Node[]> {
    const out: Node[] = [];
    for await (const n of allOf(this.deps.store.of(NODE_KIND))) out.push(n);
    return out;
  }

  /** Follows one store watch, starting a pass on changes that matter; after an interruption, resumes from now with a pass. */
  private async watch<T>(from: bigint, open: (rev: bigint, signal: AbortSignal) => AsyncIterable<WatchEvent<T>>, matters: (ev: ChangeEvent<T>) => boolean): Promise<void> {
    let rev = from;
    while (!this.abort.signal.aborted) {
      try {
        for await (const ev of open(rev, this.abort.signal)) {
          rev = ev.revision;
          if (ev.type !== "SYNCED" && matters(ev)) this.trigger();
        }
      } catch (err) {
        if (this.abort.signal.aborted) return;
        this.deps.log.log("warn", "scheduler watch interrupted; resyncing", { error: String(err) });
        rev = await this.deps.store.revision();
        this.trigger();
      }
    }
  }
}

/** The final migration a VM's migration_target_node_id stands for, once it has ended. */
function finishedMigrationOf(vm: VirtualMachine, migrations: readonly Migration[]): Migration | undefined {
  const target = vm.status?.migrationTargetNodeId;
  if (!target) return undefined;
  // The VM's latest migration is the one its reservation stands for; an earlier one that
  // ended between the same nodes must not end a newer one's reservation.
  const latest = migrations.filter((m) => m.vmId === vm.id).sort((a, b) => -oldestFirst(a, b))[0];
  if (!latest || !migrationFinished(latest) || latest.status?.targetNodeId !== target || latest.status.sourceNodeId !== vm.status?.nodeId) return undefined;
  return latest;
}

/** Sets what a placement means for a VM's status. */
function writePlacement(s: VmStatus, placement: Placement, generation: bigint, now: number): void {
  if (placement.ok) {
    if (s.nodeId) return;
    s.nodeId = placement.nodeId;
    s.state = State.PROVISIONING;
    s.conditions = setCondition(s.conditions, { type: "Scheduled", status: true, reason: "Placed", message: `placed on node '${placement.nodeId}'`, generation }, now);
    return;
  }
  s.state = State.PENDING;
  s.conditions = setCondition(s.conditions, { type: "Scheduled", status: false, reason: placement.reason, message: placement.message, generation }, now);
}

/** Creation order, then id: older objects first, the same way every pass. */
function oldestFirst(a: { createdAt?: Timestamp | undefined; id: string }, b: { createdAt?: Timestamp | undefined; id: string }): number {
  const ta = a.createdAt ? timestampMs(a.createdAt) : 0;
  const tb = b.createdAt ? timestampMs(b.createdAt) : 0;
  return ta - tb || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}
