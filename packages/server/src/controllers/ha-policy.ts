import { timestampFromMs, timestampMs } from "@bufbuild/protobuf/wkt";
import { ConditionStatus } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { PowerState, VmStatus_State as State, type VirtualMachine, type VmStatus } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";

/** The condition HA writes on a VM: why it restarted it, or why it gave up. */
export const HA_CONDITION = "HaRestart";
/** HA's reason when max_restarts is reached; the VM stays as it is until a newer generation. */
export const GAVE_UP = "MaxRestartsReached";
/** Restarts are counted over this window (ha_policy.max_restarts is "within an hour"). */
export const RESTART_WINDOW_MS = 3_600_000;
/** max_restarts 0 means this many. */
export const DEFAULT_MAX_RESTARTS = 3;

/** What HA should do about one VM now. */
export type HaDecision =
  | { readonly kind: "none" }
  /** Not yet: restart_delay_sec has not passed since the failure; look again at `atMs`. */
  | { readonly kind: "wait"; readonly atMs: number }
  /** QEMU crashed on a healthy node: boot it again where it is. */
  | { readonly kind: "restart-in-place"; readonly count: number; readonly max: number }
  /** Its node is OFFLINE: take it off that node so that placement puts it on another. */
  | { readonly kind: "restart-elsewhere"; readonly count: number; readonly max: number; readonly lostNode: string }
  | { readonly kind: "give-up"; readonly message: string };

/**
 * Decides what HA does about a VM, given the phase of the node it is placed on
 * (undefined when it is unplaced or the node is unknown). Pure: the controller does the I/O.
 *
 * Rules:
 * - Only VMs whose ha_policy is enabled and whose desired power state is RUNNING.
 * - A VM being migrated is left to the migration.
 * - Crash: state CRASHED with a Crashed condition on a READY node: boot in place once
 *   restart_delay_sec has passed since the crash (the condition's transition time).
 * - Node lost: the node is OFFLINE. Only OFFLINE counts: a NOT_READY node may merely be
 *   cut off while its guests still run, and starting a second copy elsewhere could
 *   corrupt their disks. OFFLINE means silent for QUANTIX_NODE_LOST_AFTER_SEC, and a node
 *   that comes back has its stale copies fenced (powered off and deleted) anyway.
 * - At most max_restarts (0 means 3) restarts within an hour (status.ha_restarts); then
 *   HA gives up with a condition, until a newer spec generation (StartVM) starts afresh.
 */
export function decideHa(vm: VirtualMachine, nodePhase: Phase | undefined, nowMs: number): HaDecision {
  const policy = vm.spec?.haPolicy;
  const s = vm.status;
  if (!policy?.enabled || !s || vm.spec?.desiredPowerState !== PowerState.RUNNING) return { kind: "none" };
  if (isMigrating(vm)) return { kind: "none" };
  const crashed = s.conditions.find((c) => c.type === "Crashed" && c.status === ConditionStatus.TRUE);
  const nodeLost = s.nodeId !== "" && nodePhase === Phase.OFFLINE;
  const crashedHere = !nodeLost && s.state === State.CRASHED && crashed !== undefined && nodePhase === Phase.READY;
  if (!nodeLost && !crashedHere) return { kind: "none" };

  const gaveUp = s.conditions.find((c) => c.type === HA_CONDITION && c.reason === GAVE_UP);
  if (gaveUp && gaveUp.observedGeneration >= vm.generation) return { kind: "none" };
  const max = policy.maxRestarts > 0 ? policy.maxRestarts : DEFAULT_MAX_RESTARTS;
  const count = recentRestarts(vm, nowMs).length;
  if (count >= max) {
    return { kind: "give-up", message: `HA restarted this VM ${count} times within the last hour (max_restarts ${max}); it stays ${nodeLost ? `on lost node '${s.nodeId}'` : "CRASHED"} until StartVM` };
  }
  // The failure's time: the crash, or when the VM's node stopped answering.
  const failedAt = crashedHere ? crashed!.lastTransitionTime : s.conditions.find((c) => c.type === "NodeReachable")?.lastTransitionTime;
  const dueMs = (failedAt ? timestampMs(failedAt) : nowMs) + Math.max(0, policy.restartDelaySec) * 1000;
  if (nowMs < dueMs) return { kind: "wait", atMs: dueMs };
  return nodeLost ? { kind: "restart-elsewhere", count: count + 1, max, lostNode: s.nodeId } : { kind: "restart-in-place", count: count + 1, max };
}

/**
 * The VM's HA restarts that count now: those within the window, and none from before a
 * give-up that a newer generation has since overridden.
 */
export function recentRestarts(vm: VirtualMachine, nowMs: number): number[] {
  const s = vm.status;
  if (!s) return [];
  const gaveUp = s.conditions.find((c) => c.type === HA_CONDITION && c.reason === GAVE_UP);
  if (gaveUp && gaveUp.observedGeneration < vm.generation) return [];
  return s.haRestarts.map((t) => timestampMs(t)).filter((ms) => ms > nowMs - RESTART_WINDOW_MS);
}

/**
 * Whether a VM is being moved between nodes: then a copy on a node other than its
 * assigned one is the migration's target (or its source), not a stale copy.
 */
export function isMigrating(vm: VirtualMachine): boolean {
  const s = vm.status;
  return s?.state === State.MIGRATING || (s?.conditions.some((c) => c.type === "Migrating" && c.status === ConditionStatus.TRUE) ?? false);
}

/** HA's priority of a VM (higher first). */
export function haPriority(vm: VirtualMachine): number {
  return vm.spec?.haPolicy?.priority ?? 0;
}

/** Appends a restart to status.ha_restarts, dropping those outside the window and a give-up a newer generation overrode. */
export function recordRestart(s: VmStatus, vm: VirtualMachine, nowMs: number): void {
  s.haRestarts = [...recentRestarts(vm, nowMs), nowMs].map((ms) => timestampFromMs(ms));
  s.conditions = s.conditions.filter((c) => !(c.type === HA_CONDITION && c.reason === GAVE_UP));
}
