import { clone, create, equals } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { PowerState, VmStatusSchema, VmStatus_State as State, type VirtualMachine, type VmStatus } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { ClusterState, QuantixError, schedule, type ChangeEvent, type Clock, type Placement, type ScoringStrategy, type Store, type WatchEvent, VM_KIND, NODE_KIND, allOf } from "@quantix/core";
import type { Logger } from "../log.js";
import { setCondition } from "./conditions.js";
import { desiredOf } from "./vm-status.js";
import { markNoExecute } from "./no-execute.js";
import { nodeChangeMatters, vmChangeMatters } from "./scheduler-triggers.js";

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

/**
 * Places VMs that want to run and have no node (STYLE: "the scheduler places it"). One
 * pass at a time in this process: a pass reads every node and every VM, builds a
 * ClusterState whose loads include every VM already assigned, and places the pending VMs
 * oldest first, recording each placement in that state before the next. Each placement
 * is written only if the VM is unchanged since the pass read it (expectedVersion), so a
 * VM stopped or deleted meanwhile is not placed. Concurrent creates therefore never
 * overcommit a node: nothing else in the control plane assigns nodes, and controllers run
 * only on the store's leader.
 *
 * A VM that fits nowhere stays PENDING with the condition Scheduled=False, reason
 * Unschedulable, and the explanation as message; store changes that may free or add
 * capacity (a node enabled, untainted, added or ready; a VM deleted, moved or resized)
 * start another pass.
 */
export class VmScheduler {
  private readonly abort = new AbortController();
  private running: Promise<void> | undefined;
  private dirty = false;
  private resync: NodeJS.Timeout | undefined;
  private retry: NodeJS.Timeout | undefined;

  constructor(private readonly deps: VmSchedulerDeps) {}

  /** Watches the store and runs a first pass. */
  async start(): Promise<void> {
    const from = await this.deps.store.revision();
    void this.watchVms(from);
    void this.watchNodes(from);
    this.trigger();
    this.resync = setInterval(() => this.trigger(), this.deps.resyncMs ?? 30_000);
    this.resync.unref();
    await this.idle();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    clearInterval(this.resync);
    clearTimeout(this.retry);
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

  /** One pass: place every pending VM that fits, explain every one that does not. */
  private async pass(): Promise<void> {
    const nodes = await this.allNodes();
    const vms: VirtualMachine[] = [];
    for await (const vm of allOf(this.deps.store.of(VM_KIND))) vms.push(vm);
    const cluster = ClusterState.of(nodes, vms);
    const pending = vms.filter((vm) => !vm.status?.nodeId && desiredOf(vm) !== PowerState.STOPPED).sort(oldestFirst);
    let waitForConnect = false;
    for (const vm of pending) {
      if (this.abort.signal.aborted) return;
      const placement = schedule(vm, cluster, { strategy: this.deps.strategy, isConnected: this.deps.isConnected });
      if (!placement.ok && placement.message.includes("no connected hypervisor")) waitForConnect = true;
      if (await this.record(vm, placement)) {
        if (placement.ok) cluster.assign(vm, placement.nodeId);
      } else {
        this.dirty = true; // the VM changed since this pass read it: look again
      }
    }
    await markNoExecute(this.deps.store, this.deps.clock, nodes, vms);
    if (waitForConnect) {
      clearTimeout(this.retry);
      this.retry = setTimeout(() => this.trigger(), this.deps.connectRetryMs ?? 1000);
      this.retry.unref();
    }
  }

  /** Writes a placement (or why there is none) if the VM is unchanged; false when it changed. */
  private async record(vm: VirtualMachine, placement: Placement): Promise<boolean> {
    const now = this.deps.clock.now();
    try {
      await this.deps.store.of(VM_KIND).update(
        vm.id,
        (cur) => {
          const before = cur.status ?? create(VmStatusSchema);
          const next = clone(VmStatusSchema, before);
          writePlacement(next, placement, cur.generation, now);
          if (equals(VmStatusSchema, before, next)) return undefined;
          cur.status = next;
          cur.updatedAt = timestampFromMs(now);
          return cur;
        },
        { expectedVersion: vm.resourceVersion },
      );
      return true;
    } catch (err) {
      if (err instanceof QuantixError && (err.code === "aborted" || err.code === "not_found")) return false;
      throw err;
    }
  }

  private async allNodes(): Promise<Node[]> {
    const out: Node[] = [];
    let after: { key: string; id: string } | undefined;
    for (;;) {
      const page = await this.deps.store.of(NODE_KIND).list({ order: { field: "hostname", desc: false }, after, limit: 1000, countTotal: false });
      out.push(...page.items);
      const last = page.items[page.items.length - 1];
      if (!page.hasMore || !last) return out;
      after = { key: last.hostname, id: last.id };
    }
  }

  private async watchVms(from: bigint): Promise<void> {
    await this.watch(from, (rev, signal) => this.deps.store.of(VM_KIND).watch(rev, signal), vmChangeMatters);
  }

  private async watchNodes(from: bigint): Promise<void> {
    await this.watch(from, (rev, signal) => this.deps.store.of(NODE_KIND).watch(rev, signal), nodeChangeMatters);
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

/** Creation order, then id: older VMs are placed first, the same way every pass. */
function oldestFirst(a: VirtualMachine, b: VirtualMachine): number {
  const ta = a.createdAt ? timestampMs(a.createdAt) : 0;
  const tb = b.createdAt ? timestampMs(b.createdAt) : 0;
  return ta - tb || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}
