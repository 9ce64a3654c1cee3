import type { Taint } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { TaintEffect, TolerationOperator, type Toleration } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";

/** A taint's effect as people write it ("maintenance:NoSchedule"). */
export function effectName(effect: TaintEffect): string {
  switch (effect) {
    case TaintEffect.NO_SCHEDULE:
      return "NoSchedule";
    case TaintEffect.PREFER_NO_SCHEDULE:
      return "PreferNoSchedule";
    case TaintEffect.NO_EXECUTE:
      return "NoExecute";
    case TaintEffect.UNSPECIFIED:
      return "Unspecified";
    default: {
      const never: never = effect;
      return String(never);
    }
  }
}

/**
 * Whether one of the tolerations lets a VM past a taint: the effect matches (or the
 * toleration names none), and EXISTS matches the key (an empty key, every key) while
 * EQUAL (the default) needs key and value to match.
 */
export function tolerates(tolerations: readonly Toleration[], taint: Taint): boolean {
  return tolerations.some((t) => {
    if (t.effect !== TaintEffect.UNSPECIFIED && t.effect !== taint.effect) return false;
    if (t.operator === TolerationOperator.EXISTS) return t.key === "" || t.key === taint.key;
    return t.key === taint.key && t.value === taint.value;
  });
}

/**
 * The first taint that keeps a VM off a node (NO_SCHEDULE or NO_EXECUTE, not tolerated),
 * or undefined. A taint with no effect is treated as NO_SCHEDULE: it was set to keep VMs off.
 */
export function blockingTaint(taints: readonly Taint[], tolerations: readonly Toleration[]): Taint | undefined {
  return taints.find((t) => t.effect !== TaintEffect.PREFER_NO_SCHEDULE && !tolerates(tolerations, t));
}

/** How many PREFER_NO_SCHEDULE taints of a node a VM does not tolerate. */
export function untoleratedPreferences(taints: readonly Taint[], tolerations: readonly Toleration[]): number {
  let n = 0;
  for (const t of taints) if (t.effect === TaintEffect.PREFER_NO_SCHEDULE && !tolerates(tolerations, t)) n++;
  return n;
}

/**
 * The NO_EXECUTE taints a running VM does not tolerate: such a VM must leave the node.
 * The scheduler only reports them (a VM condition); moving the VM is the drain's work.
 */
export function evictingTaints(taints: readonly Taint[], tolerations: readonly Toleration[]): Taint[] {
  return taints.filter((t) => t.effect === TaintEffect.NO_EXECUTE && !tolerates(tolerations, t));
}
