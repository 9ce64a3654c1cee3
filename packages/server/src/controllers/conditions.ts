import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ConditionSchema, ConditionStatus, type Condition } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";

/**
 * Sets a condition in a list, keeping its last_transition_time when its status did not
 * change (so that rewriting an unchanged status is a no-op).
 */
export function setCondition(
  list: Condition[],
  c: { type: string; status: boolean; reason: string; message: string; generation: bigint },
  nowMs: number,
): Condition[] {
  const status = c.status ? ConditionStatus.TRUE : ConditionStatus.FALSE;
  const old = list.find((x) => x.type === c.type);
  // Already so (a heartbeat's Ready and Heartbeat, every beat): the list as it is, nothing made.
  if (old && old.status === status && old.reason === c.reason && old.message === c.message && old.observedGeneration === c.generation && old.lastTransitionTime && isSorted(list)) return list;
  const next = create(ConditionSchema, {
    type: c.type,
    status,
    reason: c.reason,
    message: c.message,
    observedGeneration: c.generation,
    lastTransitionTime: old && old.status === status && old.lastTransitionTime ? old.lastTransitionTime : timestampFromMs(nowMs),
  });
  return [...list.filter((x) => x.type !== c.type), next].sort((a, b) => a.type.localeCompare(b.type));
}

function isSorted(list: readonly Condition[]): boolean {
  for (let i = 1; i < list.length; i++) if (list[i - 1]!.type.localeCompare(list[i]!.type) > 0) return false;
  return true;
}

/** Removes a condition. */
export function removeCondition(list: Condition[], type: string): Condition[] {
  return list.filter((x) => x.type !== type);
}
