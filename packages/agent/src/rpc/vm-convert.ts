import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { VmEventSchema, VmEventType, VmState, type VmEvent } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import type { BackendVmState } from "../backend.js";
import type { VmChange } from "../vm-watch-hub.js";

const TO_PROTO: Record<BackendVmState, VmState> = {
  created: VmState.CREATED,
  running: VmState.RUNNING,
  paused: VmState.PAUSED,
  shutdown: VmState.SHUTDOWN,
  crashed: VmState.CRASHED,
  suspended: VmState.SUSPENDED,
};

/** A backend state as vmm.v1 names it. */
export function toVmState(state: BackendVmState | undefined): VmState {
  return state === undefined ? VmState.UNSPECIFIED : TO_PROTO[state];
}

/** ListVmsRequest.state_filter as a backend state; UNSPECIFIED (and unknown numbers) mean any. */
export function fromVmState(state: VmState): BackendVmState | undefined {
  switch (state) {
    case VmState.CREATED:
      return "created";
    case VmState.RUNNING:
      return "running";
    case VmState.PAUSED:
      return "paused";
    case VmState.SHUTDOWN:
      return "shutdown";
    case VmState.CRASHED:
      return "crashed";
    case VmState.SUSPENDED:
      return "suspended";
    default:
      return undefined;
  }
}

const EVENT_TYPE: Record<VmChange["type"], VmEventType> = {
  existing: VmEventType.EXISTING,
  synced: VmEventType.SYNCED,
  changed: VmEventType.CHANGED,
  deleted: VmEventType.DELETED,
};

/** A manager change as a WatchVms event. */
export function toVmEvent(c: VmChange): VmEvent {
  return create(VmEventSchema, {
    type: EVENT_TYPE[c.type],
    vmId: c.vmId,
    state: toVmState(c.state),
    reason: c.reason,
    processId: c.pid ?? 0,
    metadata: { ...c.metadata },
    synced: c.type === "synced",
    ...(c.startedAtMs !== undefined ? { startedAt: timestampFromMs(c.startedAtMs) } : {}),
  });
}
