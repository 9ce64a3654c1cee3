import { clone, create, equals } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { ConditionStatus } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { ResourcesSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { PowerState, VmStatusSchema, VmStatus_State as State, type VirtualMachine, type VmStatus } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { demandOf, QuantixError, type Clock, type HypervisorConsole, type HypervisorPort, type ShutdownOptions, type Store, type VmObservation, VM_KIND, NODE_KIND, allOf } from "@quantix/core";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";
import { migrationOutcome, type MigrationOutcome } from "../services/migration-outcome.js";
import type { Logger } from "../log.js";
import { setCondition, removeCondition } from "./conditions.js";
import { desiredOf, stateOf } from "./vm-status.js";
import { WorkQueue } from "./work-queue.js";

/** Dependencies of the VM reconciler. */
export interface VmReconcilerDeps {
  readonly store: Store;
  readonly drivers: NodeDrivers;
  readonly clock: Clock;
  readonly log: Logger;
  /** Every VM is reconciled at least this often, as a safety net. */
  readonly resyncMs?: number;
}

/**
 * Level-based reconciler (STYLE rule 1): `reconcile(id)` reads the VM and what its node's
 * hypervisor observes, takes one idempotent step towards the desired power state, and
 * writes the status rebuilt from the observation. Store changes, hypervisor events and a
 * periodic resync only enqueue ids.
 */
export class VmReconciler {
  private readonly queue: WorkQueue;
  private readonly abort = new AbortController();
  private readonly stopHints = new Map<string, ShutdownOptions>();
  /** Where deleted VMs last ran, so their processes can be removed. */
  private readonly tombstones = new Map<string, string>();
  /** VMs a live migration owns for now: the reconciler neither steps nor writes their status. */
  private readonly migrating = new Set<string>();
  private resync: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;

  constructor(private readonly deps: VmReconcilerDeps) {
    this.queue = new WorkQueue(
      (key) => (key.startsWith("node:") ? this.refreshNode(key.slice(5)) : this.reconcile(key.slice(3))),
      (key, err, retryInMs) => deps.log.log("warn", "reconcile failed; retrying with backoff", { key, error: String(err), retryInMs }),
    );
  }

  /** Starts watching the store and the hypervisors. */
  async start(): Promise<void> {
    const from = await this.deps.store.revision();
    this.unsubscribe = this.deps.drivers.onChange((_node, vmId) => this.enqueue(vmId));
    void this.watchLoop(from);
    await this.resyncAll();
    this.resync = setInterval(() => void this.resyncAll(), this.deps.resyncMs ?? 30_000);
    this.resync.unref();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    clearInterval(this.resync);
    this.unsubscribe?.();
    await this.queue.close();
  }

  enqueue(vmId: string): void {
    this.queue.add(`vm:${vmId}`);
  }

  /** The node hypervisors this reconciler drives; agents are attached to them (see attachAgentNodes). */
  get drivers(): NodeDrivers {
    return this.deps.drivers;
  }

  /** Resolves when no work is pending (tests). */
  idle(): Promise<void> {
    return this.queue.idle();
  }

  /**
   * Hands a VM to a live migration until the returned release is called: reconciling it
   * would observe a VM that is in two places at once. Release reconciles the VM again and
   * refreshes what both nodes have given out.
   */
  holdForMigration(vmId: string, nodeIds: readonly string[]): () => void {
    this.migrating.add(vmId);
    return () => {
      this.migrating.delete(vmId);
      this.enqueue(vmId);
      for (const n of nodeIds) this.queue.add(`node:${n}`);
    };
  }

  /** Remembers how the next shutdown of a VM should be done (StopVM's force and timeout). */
  hintStop(vmId: string, options: ShutdownOptions): void {
    this.stopHints.set(vmId, options);
  }

  /** Reboots a VM on its node now. The caller has checked the state table. */
  async reboot(vm: VirtualMachine, force: boolean): Promise<void> {
    const driver = this.driverFor(vm);
    this.requireCapability(driver, "reboot", vm.id);
    await driver.rebootVM(vm.id, force);
  }

  /**
   * The console of a VM's node. FAILED_PRECONDITION when the VM is not placed or its
   * node's hypervisor lacks the "console" capability; UNAVAILABLE when the node is not
   * connected.
   */
  consoleOf(vm: VirtualMachine): HypervisorConsole {
    if (!vm.status?.nodeId) throw new QuantixError("failed_precondition", `VM '${vm.id}' is not placed on a node, so it has no console yet; start it first`);
    const driver = this.driverFor(vm);
    if (!driver.capabilities.has("console") || !driver.console) {
      throw new QuantixError("failed_precondition", `VM '${vm.id}' runs on a ${driver.kind} hypervisor, which lacks the 'console' capability`);
    }
    return driver.console;
  }

  private driverFor(vm: VirtualMachine): HypervisorPort {
    const nodeId = vm.status?.nodeId ?? "";
    const driver = nodeId ? this.deps.drivers.get(nodeId) : undefined;
    if (!driver) throw new QuantixError("unavailable", `VM '${vm.id}' has no reachable node${nodeId ? ` (node '${nodeId}' is not connected)` : ""}; retry when its node is READY`);
    return driver;
  }

  private requireCapability(driver: HypervisorPort, cap: "reboot" | "pause" | "suspend", vmId: string): void {
    if (!driver.capabilities.has(cap)) {
      throw new QuantixError("failed_precondition", `VM '${vmId}' runs on a ${driver.kind} hypervisor, which lacks the '${cap}' capability`);
    }
  }

  private async watchLoop(from: bigint): Promise<void> {
    let rev = from;
    while (!this.abort.signal.aborted) {
      try {
        for await (const ev of this.deps.store.of(VM_KIND).watch(rev, this.abort.signal)) {
          rev = ev.revision;
          if (ev.type === "SYNCED") continue;
          const nodeId = ev.object.status?.nodeId ?? "";
          if (ev.type === "DELETED" && nodeId) this.tombstones.set(ev.object.id, nodeId);
          this.enqueue(ev.object.id);
          if (nodeId) this.queue.add(`node:${nodeId}`);
        }
      } catch (err) {
        if (this.abort.signal.aborted) return;
        this.deps.log.log("warn", "VM watch interrupted; resyncing", { error: String(err) });
        rev = await this.deps.store.revision();
        await this.resyncAll();
      }
    }
  }

  private async resyncAll(): Promise<void> {
    for await (const vm of allOf(this.deps.store.of(VM_KIND))) this.enqueue(vm.id);
    for (const [nodeId, driver] of this.deps.drivers.entries()) {
      for (const obs of await driver.list()) this.enqueue(obs.vmId);
      this.queue.add(`node:${nodeId}`);
    }
  }

  /** One level-based pass for one VM. */
  private async reconcile(vmId: string): Promise<void> {
    if (this.migrating.has(vmId)) return;
    const vm = await this.deps.store.of(VM_KIND).get(vmId);
    if (!vm) return this.removeDeleted(vmId);
    // A migration run by another replica holds the VM through the store: its Migrating=True
    // condition, kept fresh by progress writes. One gone quiet for longer than the lease was
    // interrupted (that replica stopped) and is cleared below like any other leftover.
    if (migratingElsewhere(vm, this.deps.clock.now())) return;
    if (vm.status?.migrationTargetNodeId) return this.resolveMigration(vm);
    const desired = desiredOf(vm);
    const nodeId = vm.status?.nodeId ?? "";
    if (!nodeId) return this.reconcileUnplaced(vm, desired);
    const driver = this.deps.drivers.get(nodeId);
    if (!driver) {
      return this.writeStatus(vm, (s) => {
        s.state = State.UNKNOWN;
        s.errorMessage = `node '${nodeId}' is not connected; the VM's state cannot be observed`;
      });
    }
    let obs: VmObservation;
    try {
      obs = await driver.observe(vm.id);
      const stepped = await this.step(vm, desired, driver, obs);
      if (stepped) obs = await driver.observe(vm.id);
    } catch (err) {
      if (err instanceof QuantixError && err.code === "unavailable") {
        // Retryable: say so in status, then fail the pass so the queue retries with backoff.
        await this.writeUnreachable(vm, err.message);
        throw err;
      }
      if (err instanceof SpecRejected) return this.writeRejected(vm, err.message);
      throw err;
    }
    await this.writeObserved(vm, desired, driver, obs);
  }

  /**
   * A migration whose replica stopped before resolving it (its lease expired): both nodes
   * are observed. The target is adopted if the source's copy is gone and the target runs
   * it; otherwise the target's copy is removed and the VM stays on its source. Nothing is
   * defined or booted until then: a node that cannot be asked fails the pass (retried).
   */
  private async resolveMigration(vm: VirtualMachine): Promise<void> {
    const sourceId = vm.status!.nodeId;
    const targetId = vm.status!.migrationTargetNodeId;
    const src = this.deps.drivers.get(sourceId);
    const dst = this.deps.drivers.get(targetId);
    let outcome: MigrationOutcome = "source";
    if (dst || (await this.deps.store.of(NODE_KIND).get(targetId))) {
      if (!src || !dst) throw new QuantixError("unavailable", `VM '${vm.id}' has an interrupted migration from node '${sourceId}' to node '${targetId}'; it is resolved once both nodes are connected`);
      outcome = await migrationOutcome(vm.id, src, dst);
      if (outcome === "source") await dst.deleteVM(vm.id);
    }
    const now = this.deps.clock.now();
    const nodeId = outcome === "target" ? targetId : sourceId;
    await this.deps.store.of(VM_KIND).update(vm.id, (cur) => {
      if (cur.status?.migrationTargetNodeId !== targetId || migratingElsewhere(cur, now)) return undefined;
      cur.status.nodeId = nodeId;
      cur.status.migrationTargetNodeId = "";
      if (outcome === "target") cur.status.hypervisor = dst!.kind;
      const message = `the control plane stopped during the migration to node '${targetId}'; ${outcome === "target" ? "it had completed, and the VM runs there" : "the VM stays on its node"} ('${nodeId}')`;
      cur.status.conditions = setCondition(cur.status.conditions, { type: "Migrating", status: false, reason: "Interrupted", message, generation: cur.generation }, now);
      cur.updatedAt = timestampFromMs(now);
      return cur;
    });
    this.deps.log.log("warn", "resolved an interrupted migration", { vm_id: vm.id, source: sourceId, target: targetId, outcome });
    for (const n of [sourceId, targetId]) this.queue.add(`node:${n}`);
  }

  /** Takes at most one idempotent step towards the desired state; returns whether it acted. */
  private async step(vm: VirtualMachine, desired: PowerState, d: HypervisorPort, obs: VmObservation): Promise<boolean> {
    const p = obs.power;
    switch (desired) {
      case PowerState.RUNNING:
        if (p === "absent") { await define(d, vm); await d.bootVM(vm.id); return true; }
        if (p === "created" || p === "shutdown" || p === "suspended") { await d.bootVM(vm.id); return true; }
        if (p === "paused") { await d.resumeVM(vm.id); return true; }
        // A crash is final until StartVM asks again (a newer generation than the crash's).
        if (p === "crashed" && vm.generation > (crashedAt(vm) ?? vm.generation)) { await d.bootVM(vm.id); return true; }
        return false;
      case PowerState.PAUSED:
        if (p === "running") { await d.pauseVM(vm.id); return true; }
        return false;
      case PowerState.SUSPENDED:
        if (p === "running" || p === "paused") { await d.suspendVM(vm.id); return true; }
        return false;
      case PowerState.STOPPED:
      case PowerState.UNSPECIFIED:
        if (p === "running" || p === "paused" || p === "starting" || p === "crashed" || p === "suspended" || (p === "stopping" && this.stopHints.get(vm.id)?.force)) {
          const hint = this.stopHints.get(vm.id) ?? { force: false, timeoutSec: 60 };
          this.stopHints.delete(vm.id);
          await d.shutdownVM(vm.id, hint);
          return true;
        }
        return false;
      default:
        return false;
    }
  }

  private async reconcileUnplaced(vm: VirtualMachine, desired: PowerState): Promise<void> {
    if (desired === PowerState.STOPPED) {
      return this.writeStatus(vm, (s) => {
        s.state = State.STOPPED;
        // A stopped VM needs no placement; keep only the reason it lost its node, if any.
        if (s.conditions.find((c) => c.type === "Scheduled")?.reason !== "NodeDecommissioned") s.conditions = removeCondition(s.conditions, "Scheduled");
      });
    }
    // Placement is the scheduler's (vm-scheduler.ts): it sets the node and the Scheduled
    // condition. Until then the VM waits.
    await this.writeStatus(vm, (s) => {
      if (!s.nodeId) s.state = State.PENDING;
    });
  }

  private async writeObserved(vm: VirtualMachine, desired: PowerState, driver: HypervisorPort, obs: VmObservation): Promise<void> {
    const now = this.deps.clock.now();
    await this.writeStatus(vm, (s) => {
      s.state = stateOf(obs.power, desired);
      s.hypervisor = driver.kind;
      s.errorMessage = obs.power === "crashed" ? `the hypervisor process ended unexpectedly${obs.error ? `: ${obs.error}` : ""}; StartVM restarts it` : "";
      if (obs.power === "crashed") {
        if (!s.conditions.some((c) => c.type === "Crashed")) {
          s.conditions = setCondition(s.conditions, { type: "Crashed", status: true, reason: "ProcessExited", message: s.errorMessage, generation: vm.generation }, now);
        }
      } else if (obs.power === "running") {
        s.conditions = removeCondition(s.conditions, "Crashed");
      }
      s.conditions = removeCondition(removeCondition(s.conditions, "NodeReachable"), "SpecAccepted");
      // Migrating=True outside a running migration is left from a control plane that stopped mid-way.
      if (s.conditions.some((c) => c.type === "Migrating" && c.status === ConditionStatus.TRUE)) {
        s.conditions = setCondition(s.conditions, { type: "Migrating", status: false, reason: "Interrupted", message: `the control plane stopped during the migration; the VM is observed on node '${s.nodeId}'`, generation: vm.generation }, now);
      }
      if (obs.startedAt !== undefined) s.startedAt = timestampFromMs(obs.startedAt);
      else delete s.startedAt;
      s.observedGeneration = vm.generation;
    });
  }

  /** The node cannot be asked: the status says so instead of repeating the last state seen. */
  private async writeUnreachable(vm: VirtualMachine, why: string): Promise<void> {
    const now = this.deps.clock.now();
    await this.writeStatus(vm, (s) => {
      s.state = State.UNKNOWN;
      s.errorMessage = `${why}; the VM's state cannot be observed until the node is back`;
      s.conditions = setCondition(s.conditions, { type: "NodeReachable", status: false, reason: "NodeUnreachable", message: s.errorMessage, generation: vm.generation }, now);
    });
  }

  /** The node's hypervisor refused the VM's spec: ERROR until the spec changes. */
  private async writeRejected(vm: VirtualMachine, why: string): Promise<void> {
    const now = this.deps.clock.now();
    await this.writeStatus(vm, (s) => {
      s.state = State.ERROR;
      s.errorMessage = why;
      s.conditions = setCondition(s.conditions, { type: "SpecAccepted", status: false, reason: "HypervisorRejected", message: why, generation: vm.generation }, now);
      s.observedGeneration = vm.generation;
    });
  }

  private async writeStatus(vm: VirtualMachine, edit: (s: VmStatus) => void): Promise<void> {
    const now = this.deps.clock.now();
    await this.deps.store.of(VM_KIND).update(vm.id, (cur) => {
      // A status read before a migration took the VM is not written over the migration's.
      if (this.migrating.has(vm.id)) return undefined;
      const before = cur.status ?? create(VmStatusSchema);
      const next = clone(VmStatusSchema, before);
      edit(next);
      if (equals(VmStatusSchema, before, next)) return undefined;
      cur.status = next;
      cur.updatedAt = timestampFromMs(now);
      return cur;
    });
  }

  private async removeDeleted(vmId: string): Promise<void> {
    const nodeId = this.tombstones.get(vmId);
    if (!nodeId) return;
    const driver = this.deps.drivers.get(nodeId);
    if (driver) {
      const obs = await driver.observe(vmId);
      if (obs.power !== "absent" && obs.power !== "shutdown" && obs.power !== "created") {
        await driver.shutdownVM(vmId, { force: true, timeoutSec: 0 });
      }
      await driver.deleteVM(vmId);
    }
    this.tombstones.delete(vmId);
    this.queue.add(`node:${nodeId}`);
  }

  /** Recomputes what the VMs placed on a node ask for. */
  private async refreshNode(nodeId: string): Promise<void> {
    const node = await this.deps.store.of(NODE_KIND).get(nodeId);
    if (!node) return;
    const vmIds: string[] = [];
    let cpu = 0;
    let mem = 0;
    for await (const vm of allOf(this.deps.store.of(VM_KIND), { where: { node_id: nodeId } })) {
      const d = demandOf(vm.spec);
      vmIds.push(vm.id);
      cpu += d.vcpus;
      mem += d.memoryMib;
    }
    vmIds.sort();
    const allocated = create(ResourcesSchema, { cpuCores: cpu, memoryMib: BigInt(mem) });
    const now = this.deps.clock.now();
    await this.deps.store.of(NODE_KIND).update(nodeId, (cur) => {
      if (!cur.status) return undefined;
      const same = cur.status.allocated && equals(ResourcesSchema, cur.status.allocated, allocated) && cur.status.vmIds.join() === vmIds.join();
      if (same) return undefined;
      cur.status.allocated = allocated;
      cur.status.vmIds = vmIds;
      cur.updatedAt = timestampFromMs(now);
      return cur;
    });
  }
}

/** A node's hypervisor refused to define a VM: retrying the same spec cannot help. */
class SpecRejected extends Error {}

/** Defines a VM on its node, telling a refused spec apart from a passing failure. */
async function define(d: HypervisorPort, vm: VirtualMachine): Promise<void> {
  try {
    await d.createVM(vm.id, vm.spec!);
  } catch (err) {
    if (err instanceof QuantixError && (err.code === "failed_precondition" || err.code === "invalid_argument" || err.code === "already_exists")) {
      throw new SpecRejected(`node refused the VM: ${err.message}`, { cause: err });
    }
    throw err;
  }
}

/** The generation at which the VM was seen crashed (StartVM bumps past it); undefined before it is recorded. */
function crashedAt(vm: VirtualMachine): bigint | undefined {
  return vm.status?.conditions.find((c) => c.type === "Crashed")?.observedGeneration;
}

/** Milliseconds of a VM's started_at, or undefined. */
export function startedAtMs(vm: VirtualMachine): number | undefined {
  return vm.status?.startedAt ? timestampMs(vm.status.startedAt) : undefined;
}

/** How long a Migrating=True condition without a new write holds a VM for the replica migrating it. */
export const MIGRATION_LEASE_MS = 30_000;

function migratingElsewhere(vm: VirtualMachine, nowMs: number): boolean {
  const migrating = !!vm.status?.migrationTargetNodeId || vm.status?.conditions.some((c) => c.type === "Migrating" && c.status === ConditionStatus.TRUE);
  const updated = vm.updatedAt ? timestampMs(vm.updatedAt) : 0;
  return !!migrating && nowMs - updated < MIGRATION_LEASE_MS;
}
