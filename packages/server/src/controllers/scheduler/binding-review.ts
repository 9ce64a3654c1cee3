import { MigrationStatus_Phase as MPhase, type Migration } from "@quantix/api/gen/Quantixkvm/compute/v1/migration_pb.js";
import { NodeStatus_Phase as Phase, DrainStatus_Phase as DrainPhase, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { PowerState, VmStatus_State as State, type VirtualMachine, type VmStatus } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { removeCondition, setCondition } from "../conditions.js";
import { decideHa, GAVE_UP, HA_CONDITION, recordRestart } from "../ha-policy.js";
import { desiredOf } from "../vm-status.js";

/** What the scheduler reads to review one VM's binding. */
export interface ReviewContext {
  readonly nowMs: number;
  readonly node: (id: string) => Node | undefined;
  /** The final migration of the VM that its migration_target_node_id stands for, if any. */
  readonly finishedMigration: (vm: VirtualMachine) => Migration | undefined;
  /** Whether the VM, with its spec as it is now, fits on its node (capacity, placement rules, the node's state). */
  readonly fits: (vm: VirtualMachine) => boolean;
}

/** What to change in a bound VM's status, if anything, and when to look again. */
export interface Review {
  /** The edit of the VM's status (the scheduler's write), when something changes. */
  readonly edit?: (s: VmStatus) => void;
  /** Why, for the log. */
  readonly why?: string;
  /** Look again at this time (an HA restart delay). */
  readonly wakeAtMs?: number;
}

const unbind = (reason: string, message: string, generation: bigint, nowMs: number) => (s: VmStatus) => {
  s.nodeId = "";
  s.conditions = setCondition(s.conditions, { type: "Scheduled", status: false, reason, message, generation }, nowMs);
};

/**
 * Reviews the binding of a VM placed on a node: the scheduler is its one writer (STYLE
 * rule 2), and every reason to change it is a rule here, level-based, read from what the
 * store says now:
 * - a migration that ended: SUCCEEDED moves the VM to its target; FAILED or CANCELLED
 *   gives up the target it had reserved;
 * - its node is gone (decommissioned): the VM is unplaced;
 * - its node is lost (OFFLINE) and its HA policy says so: it is unplaced, to be placed on
 *   another node (decideHa: restart delay, max_restarts, priority order at placement);
 * - it is off, to stay off, on a node being drained: it is unplaced (a drained node keeps
 *   no VMs; it gets a node when it starts);
 * - it is off and its spec changed since it was placed (resized, re-pinned): it keeps its
 *   node only if it still fits there, so starting it never overcommits the node.
 */
export function reviewBinding(vm: VirtualMachine, ctx: ReviewContext): Review {
  const s = vm.status!;
  const now = ctx.nowMs;
  const done = ctx.finishedMigration(vm);
  if (done) return migrationEnded(vm, done, now);
  if (s.migrationTargetNodeId) return {};
  const node = ctx.node(s.nodeId);
  if (!node) return { edit: unbind("NodeDecommissioned", `node '${s.nodeId}' was decommissioned`, vm.generation, now), why: "its node is gone" };
  if (node.status?.phase === Phase.OFFLINE) {
    const d = decideHa(vm, Phase.OFFLINE, now);
    switch (d.kind) {
      case "restart-elsewhere":
        return {
          why: `HA: node lost (restart ${d.count} of ${d.max})`,
          edit: (st) => {
            recordRestart(st, vm, now);
            st.nodeId = "";
            st.state = State.PENDING;
            st.errorMessage = "";
            delete st.startedAt;
            st.conditions = removeCondition(removeCondition(removeCondition(st.conditions, "Crashed"), "NodeReachable"), "Scheduled");
            st.conditions = setCondition(st.conditions, { type: HA_CONDITION, status: true, reason: "NodeLost", message: `node '${d.lostNode}' is OFFLINE: HA restarts the VM on another node (restart ${d.count} of ${d.max} within an hour); a copy left on '${d.lostNode}' is fenced when it comes back`, generation: vm.generation }, now);
          },
        };
      case "give-up":
        if (s.conditions.some((c) => c.type === HA_CONDITION && c.reason === GAVE_UP && c.message === d.message)) return {};
        return { why: "HA gave up", edit: (st) => (st.conditions = setCondition(st.conditions, { type: HA_CONDITION, status: false, reason: GAVE_UP, message: d.message, generation: vm.generation }, now)) };
      case "wait":
        return { wakeAtMs: d.atMs };
      default:
        break;
    }
  }
  const off = s.state === State.STOPPED && desiredOf(vm) === PowerState.STOPPED;
  if (off && draining(node)) return { edit: unbind("NodeDrained", "its node was drained; it gets a node when it starts", vm.generation, now), why: "its node is drained" };
  if (awaitsReview(vm)) {
    if (!ctx.fits(vm)) return { edit: unbind("Rescheduling", `its spec changed and it no longer fits on node '${node.hostname}'; it gets a node when it starts`, vm.generation, now), why: "resized or re-pinned" };
    return { edit: (st) => (st.conditions = setCondition(st.conditions, { type: "Scheduled", status: true, reason: "Placed", message: `placed on node '${s.nodeId}'`, generation: vm.generation }, now)) };
  }
  return {};
}

/**
 * Whether a placed VM waits for the scheduler to check that it still fits its node: it is
 * off, to stay off, and its spec changed since it was placed (the Scheduled condition's
 * generation). UpdateVM waits for that check before it answers.
 */
export function awaitsReview(vm: VirtualMachine): boolean {
  const s = vm.status;
  if (!s?.nodeId || s.migrationTargetNodeId || s.state !== State.STOPPED || desiredOf(vm) !== PowerState.STOPPED) return false;
  const placedAt = s.conditions.find((c) => c.type === "Scheduled")?.observedGeneration ?? 0n;
  return vm.generation > placedAt;
}

/** Whether a drain of the node asked for by DrainNode is still under way. */
export function draining(node: Node): boolean {
  const want = node.spec?.drain;
  if (!want || want.sequence === 0n || want.cancelled) return false;
  const st = node.status?.drain;
  return st?.sequence !== want.sequence || st.phase === DrainPhase.RUNNING || st.phase === DrainPhase.UNSPECIFIED;
}

/** The binding after a migration ended: on its target if it succeeded, else where it was. */
function migrationEnded(vm: VirtualMachine, m: Migration, now: number): Review {
  const ok = m.status?.phase === MPhase.SUCCEEDED;
  const reason = ok ? "Completed" : m.status?.reason || (m.status?.phase === MPhase.CANCELLED ? "Cancelled" : "Failed");
  return {
    why: `migration ${m.id} ${ok ? "succeeded" : "ended"}`,
    edit: (s) => {
      if (ok) s.nodeId = m.status!.targetNodeId;
      s.migrationTargetNodeId = "";
      if (s.state === State.MIGRATING) s.state = State.RUNNING;
      const message = ok ? (m.status?.message ?? "") : `${m.status?.message ?? "the migration ended"}; the VM keeps running on node '${s.nodeId}'`;
      s.conditions = setCondition(s.conditions, { type: "Migrating", status: false, reason, message, generation: vm.generation }, now);
    },
  };
}
