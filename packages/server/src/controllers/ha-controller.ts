import { clone, create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VmStatusSchema, type VirtualMachine, type VmStatus } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import type { Clock, Store, WatchEvent } from "@quantix/core";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";
import type { Logger } from "@quantix/rpc";
import { removeCondition, setCondition } from "./conditions.js";
import { Fencer } from "./fencing.js";
import { decideHa, GAVE_UP, HA_CONDITION, haPriority, recordRestart } from "./ha-policy.js";
import { WorkQueue } from "../runtime/work-queue.js";
import { VM_KIND, NODE_KIND, allOf } from "@quantix/core";
import { updateWithEvents } from "../events/record.js";
import { vmEvents } from "../events/vm-events.js";

/** Dependencies of the HA controller. */
export interface HaControllerDeps {
  readonly store: Store;
  readonly drivers: NodeDrivers;
  readonly clock: Clock;
  readonly log: Logger;
  /** Every HA VM and every node's VMs are looked at again at least this often. */
  readonly resyncMs?: number;
}

/**
 * Restarts HA VMs (leader-only, like every controller) as decideHa says: in place after a
 * crash, or off a lost (OFFLINE) node, in priority order, so that the placement the VM
 * reconciler does puts them on another node; and fences stale copies (see Fencer).
 * Level-based: store and hypervisor events only enqueue keys; a periodic resync is the
 * safety net. One HA key is handled at a time so that a lost node's VMs are released
 * highest priority first and win the free capacity.
 */
export class HaController {
  private readonly ha: WorkQueue;
  private readonly fences: WorkQueue;
  private readonly fencer: Fencer;
  private readonly abort = new AbortController();
  private readonly timers = new Set<NodeJS.Timeout>();
  private resync: NodeJS.Timeout | undefined;
  private unsubscribe: (() => void) | undefined;

  constructor(private readonly deps: HaControllerDeps) {
    const warn = (what: string) => (key: string, err: unknown) => deps.log.log("debug", `${what} failed; will retry`, { key, error: String(err) });
    this.ha = new WorkQueue((id) => this.reconcile(id), warn("HA check"), 1);
    this.fences = new WorkQueue((key) => this.fence(key), warn("fencing check"), 4);
    this.fencer = new Fencer(deps);
  }

  async start(): Promise<void> {
    this.unsubscribe = this.deps.drivers.onChange((nodeId, vmId) => this.fences.add(`${nodeId}/${vmId}`));
    const rev = await this.deps.store.revision();
    void this.follow("VM", rev, (r, signal) => this.deps.store.of(VM_KIND).watch(r, signal), (vm) => {
      if (vm.spec?.haPolicy?.enabled) this.ha.add(vm.id);
    });
    await this.resyncAll();
    this.resync = setInterval(() => void this.resyncAll().catch(() => undefined), this.deps.resyncMs ?? 30_000);
    this.resync.unref();
  }

  async stop(): Promise<void> {
    this.abort.abort();
    clearInterval(this.resync);
    for (const t of this.timers) clearTimeout(t);
    this.unsubscribe?.();
    await Promise.all([this.ha.close(), this.fences.close()]);
  }

  /** Resolves when no work is pending (tests). */
  async idle(): Promise<void> {
    await Promise.all([this.ha.idle(), this.fences.idle()]);
  }

  /** Follows a store watch from `from`, resyncing and resuming from the current revision when it breaks. */
  private async follow<T>(what: string, from: bigint, watch: (rev: bigint, signal: AbortSignal) => AsyncIterable<WatchEvent<T>>, on: (obj: T) => void): Promise<void> {
    let rev = from;
    while (!this.abort.signal.aborted) {
      try {
        for await (const ev of watch(rev, this.abort.signal)) {
          rev = ev.revision;
          if (ev.type !== "SYNCED" && ev.type !== "DELETED") on(ev.object);
        }
      } catch (err) {
        if (this.abort.signal.aborted) return;
        this.deps.log.log("warn", `HA: ${what} watch interrupted; resyncing`, { error: String(err) });
        rev = await this.deps.store.revision().catch(() => rev);
        await this.resyncAll().catch(() => undefined);
      }
    }
  }

  private async resyncAll(): Promise<void> {
    const ha: VirtualMachine[] = [];
    for await (const vm of allOf(this.deps.store.of(VM_KIND))) if (vm.spec?.haPolicy?.enabled) ha.push(vm);
    ha.sort((a, b) => haPriority(b) - haPriority(a));
    for (const vm of ha) this.ha.add(vm.id);
    for (const [nodeId, driver] of this.deps.drivers.entries()) {
      for (const obs of await driver.list().catch(() => [])) this.fences.add(`${nodeId}/${obs.vmId}`);
    }
  }

  private async fence(key: string): Promise<void> {
    const slash = key.indexOf("/");
    await this.fencer.fence(key.slice(0, slash), key.slice(slash + 1));
  }

  /** One level-based HA pass for one VM. */
  private async reconcile(vmId: string): Promise<void> {
    const vm = await this.deps.store.of(VM_KIND).get(vmId);
    if (!vm) return;
    const nodeId = vm.status?.nodeId ?? "";
    const node = nodeId ? await this.deps.store.of(NODE_KIND).get(nodeId) : undefined;
    // A lost node's VMs are the scheduler's (it unplaces them for placement elsewhere).
    if (node?.status?.phase === Phase.OFFLINE) return;
    const now = this.deps.clock.now();
    const d = decideHa(vm, node?.status?.phase, now);
    switch (d.kind) {
      case "none":
        return;
      case "wait": {
        const t = setTimeout(() => {
          this.timers.delete(t);
          this.ha.add(vmId);
        }, Math.max(0, d.atMs - now));
        t.unref();
        this.timers.add(t);
        return;
      }
      case "give-up":
        this.deps.log.log("warn", "HA gave up on a VM", { vm_id: vmId, reason: d.message });
        return this.writeStatus(vm, (s) => {
          s.conditions = setCondition(s.conditions, { type: HA_CONDITION, status: false, reason: GAVE_UP, message: d.message, generation: vm.generation }, now);
        });
      case "restart-in-place": {
        const driver = this.deps.drivers.get(nodeId);
        if (!driver) return;
        // Boot first, then record: a status write before the boot would let the VM
        // reconciler observe the old crash again and look like a second one.
        await driver.bootVM(vmId);
        this.deps.log.log("warn", "HA restarted a crashed VM in place", { vm_id: vmId, node_id: nodeId, restart: d.count, max_restarts: d.max });
        return this.writeStatus(vm, (s) => {
          recordRestart(s, vm, now);
          s.conditions = setCondition(removeCondition(s.conditions, "Crashed"), { type: HA_CONDITION, status: true, reason: "RestartedAfterCrash", message: `HA restarted the VM on node '${nodeId}' after its process crashed (restart ${d.count} of ${d.max} within an hour)`, generation: vm.generation }, now);
        });
      }
      case "restart-elsewhere":
        // A lost node's VMs are the scheduler's: it unplaces and places them, by priority.
        return;
      default: {
        const never: never = d;
        throw new Error(`unknown HA decision ${String(never)}`);
      }
    }
  }

  private async writeStatus(vm: VirtualMachine, edit: (s: VmStatus) => void): Promise<void> {
    const now = this.deps.clock.now();
    await updateWithEvents(
      this.deps.store,
      VM_KIND,
      vm.id,
      (cur) => {
        // Another writer moved the VM meanwhile: the decision was made on an old status.
        if ((cur.status?.nodeId ?? "") !== (vm.status?.nodeId ?? "") || cur.generation !== vm.generation) return undefined;
        const next = clone(VmStatusSchema, cur.status ?? create(VmStatusSchema));
        edit(next);
        cur.status = next;
        cur.updatedAt = timestampFromMs(now);
        return cur;
      },
      vmEvents,
      { actor: "ha-controller", nowMs: now },
    );
  }
}
