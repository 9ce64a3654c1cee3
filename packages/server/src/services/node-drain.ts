import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { DrainFailureSchema, DrainNodeResponseSchema, type DrainFailure, type DrainNodeRequest, type DrainNodeResponse } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { PowerState, VmStatus_State as State, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { QuantixError, type Clock, type Store, VM_KIND, NODE_KIND, allOf } from "@quantix/core";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";
import { setCondition } from "../controllers/conditions.js";
import type { Logger } from "../log.js";
import type { NodeService } from "./node-service.js";
import type { VmMigrationService } from "./vm-migration.js";
import type { VmPowerService } from "./vm-power.js";
import { waitFor } from "./wait.js";

/** The node condition a drain writes: False with progress while it runs, then its outcome. */
export const DRAINED_CONDITION = "Drained";

/** Dependencies of {@link NodeDrainService}. */
export interface NodeDrainDeps {
  readonly store: Store;
  readonly nodes: NodeService;
  readonly migration: VmMigrationService;
  readonly power: VmPowerService;
  /** The nodes' hypervisors: a forced stop goes to the VM's node directly, with the drain's grace period. */
  readonly drivers: NodeDrivers;
  readonly clock: Clock;
  readonly log: Logger;
}

/**
 * DrainNode: marks the node unschedulable first (nothing new lands on it), then handles its
 * VMs one at a time (live migrations share the hosts' CPUs and links): a RUNNING VM is
 * migrated to target_node_id or to the node the scheduler picks; a VM that is off and
 * wants to stay off is unplaced (it gets a node when it starts) and counts as moved; any
 * other VM, or one whose migration fails, is reported as failed with the reason, or with
 * force stopped (graceful for grace_period_sec, then powered off). The node's Drained
 * condition shows the progress to WatchNodes clients. A cancelled call handles no further
 * VM: each one left is reported as failed, "drain cancelled". Migrations run one at a
 * time and each target is chosen by the scheduler over the store as it is then, so a
 * target filled by an earlier VM is not picked again.
 */
export class NodeDrainService {
  constructor(private readonly deps: NodeDrainDeps) {}

  async drain(req: DrainNodeRequest, signal: AbortSignal): Promise<DrainNodeResponse> {
    const node = await this.deps.nodes.get(req.id);
    if (req.targetNodeId === node.id) throw new QuantixError("invalid_argument", `target_node_id: must differ from the node being drained ('${node.hostname}')`, [{ field: "target_node_id", reason: "INVALID", description: "must differ from id" }]);
    if (req.targetNodeId) await this.deps.nodes.get(req.targetNodeId);
    if (req.gracePeriodSec < 0 || req.gracePeriodSec > 3600) throw new QuantixError("invalid_argument", "grace_period_sec: must be between 0 and 3600 (0 means 60)", [{ field: "grace_period_sec", reason: "OUT_OF_RANGE", description: "must be between 0 and 3600" }]);
    await this.deps.nodes.setSchedulable(node.id, false);

    const vms: VirtualMachine[] = [];
    for await (const vm of allOf(this.deps.store.of(VM_KIND), { where: { node_id: node.id } })) vms.push(vm);
    const res = create(DrainNodeResponseSchema);
    const failed = (vmId: string, reason: string): DrainFailure => create(DrainFailureSchema, { vmId, reason });
    await this.progress(node.id, false, "InProgress", `draining: 0 of ${vms.length} VM(s) handled`);
    for (const [i, vm] of vms.entries()) {
      if (signal.aborted) {
        res.failures.push(failed(vm.id, "drain cancelled"));
        continue;
      }
      let outcome: string;
      try {
        if (await this.unplaceIfOff(vm, node.id)) {
          res.migratedVmIds.push(vm.id);
          outcome = `VM '${vm.name}' is off and was unplaced`;
        } else {
          const moved = await this.deps.migration.migrate({ vmId: vm.id, targetNodeId: req.targetNodeId, live: true, maxDowntimeMs: 0, bandwidthMbps: 0 }, signal);
          res.migratedVmIds.push(vm.id);
          outcome = `VM '${vm.name}' migrated to node '${moved.vm.status?.nodeId}'`;
        }
      } catch (err) {
        const why = err instanceof Error ? err.message : String(err);
        if (req.force && !signal.aborted) {
          outcome = await this.stop(vm, req.gracePeriodSec, signal).then(
            () => {
              res.stoppedVmIds.push(vm.id);
              return `VM '${vm.name}' could not move and was stopped (${why})`;
            },
            (stopErr: unknown) => {
              res.failures.push(failed(vm.id, `${why}; stopping it failed too: ${stopErr instanceof Error ? stopErr.message : String(stopErr)}`));
              return `VM '${vm.name}' could neither move nor stop`;
            },
          );
        } else {
          res.failures.push(failed(vm.id, why));
          outcome = `VM '${vm.name}' could not move: ${why}`;
        }
      }
      await this.progress(node.id, false, "InProgress", `draining: ${i + 1} of ${vms.length} VM(s) handled; last: ${outcome}`);
    }
    const summary = `${res.migratedVmIds.length} moved, ${res.stoppedVmIds.length} stopped, ${res.failures.length} failed`;
    const ok = res.failures.length === 0;
    res.node = await this.progress(node.id, ok, ok ? "Drained" : "DrainIncomplete", ok ? `drained: ${summary}` : `drain incomplete: ${summary}; DrainNode again retries`);
    this.deps.log.log("info", "node drained", { node_id: node.id, migrated: res.migratedVmIds.length, stopped: res.stoppedVmIds.length, failed: res.failures.length });
    return res;
  }

  /** A VM that is off and should stay off has nothing to move: it loses its node. */
  private async unplaceIfOff(vm: VirtualMachine, nodeId: string): Promise<boolean> {
    if (vm.status?.state !== State.STOPPED || vm.spec?.desiredPowerState === PowerState.RUNNING) return false;
    const now = this.deps.clock.now();
    const after = await this.deps.store.of(VM_KIND).update(vm.id, (cur) => {
      if (cur.status?.nodeId !== nodeId || cur.status.state !== State.STOPPED) return undefined;
      cur.status.nodeId = "";
      cur.status.conditions = setCondition(cur.status.conditions, { type: "Scheduled", status: false, reason: "NodeDrained", message: "its node was drained; it gets a node when it starts", generation: cur.generation }, now);
      cur.updatedAt = timestampFromMs(now);
      return cur;
    });
    return after.status?.nodeId === "";
  }

  /**
   * Stops a VM gracefully for the grace period, then powers it off. The desired state
   * (STOPPED) keeps it off; the shutdown itself goes to its node here, because the
   * reconciler that would carry the grace period may run on another replica.
   */
  private async stop(vm: VirtualMachine, graceSec: number, signal: AbortSignal): Promise<void> {
    const timeoutSec = graceSec > 0 ? graceSec : 60;
    const budget = { ms: (timeoutSec + 15) * 1000, signal };
    const waiting = this.deps.power.act("stop", vm.id, budget, { force: false, timeoutSec });
    const driver = this.deps.drivers.get(vm.status?.nodeId ?? "");
    if (driver) {
      // Only once STOPPED is desired: a reconciler seeing the VM off before would boot it again.
      const off = await waitFor(this.deps.store.of(VM_KIND), "VM", vm.id, (x) => x.spec?.desiredPowerState !== PowerState.RUNNING, budget.ms, signal);
      if (off.spec?.desiredPowerState !== PowerState.RUNNING) await driver.shutdownVM(vm.id, { force: false, timeoutSec });
    }
    const stopped = await waiting;
    if (stopped.status?.state !== State.STOPPED) throw new QuantixError("unavailable", `VM '${vm.id}' is ${State[stopped.status?.state ?? State.UNKNOWN]} after the grace period`);
  }

  private progress(nodeId: string, status: boolean, reason: string, message: string) {
    const now = this.deps.clock.now();
    return this.deps.store.of(NODE_KIND).update(nodeId, (cur) => {
      if (!cur.status) return undefined;
      cur.status.conditions = setCondition(cur.status.conditions, { type: DRAINED_CONDITION, status, reason, message, generation: 0n }, now);
      cur.updatedAt = timestampFromMs(now);
      return cur;
    });
  }
}
