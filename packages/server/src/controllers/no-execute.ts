import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { effectName, evictingTaints, QuantixError, type Clock, type Store, VM_KIND } from "@quantix/core";
import { removeCondition, setCondition } from "./conditions.js";

/** The condition a VM carries while its node has a NoExecute taint it does not tolerate. */
export const EVICTING = "Evicting";

/**
 * NO_EXECUTE, as far as the scheduler goes: no new VM is placed on the node (the taint
 * filter), and every VM on it that does not tolerate the taint gets Evicting=True (reason
 * NoExecuteTaint) naming the taint, removed again when the taint goes or is tolerated.
 * The scheduler moves nothing itself: moving a running guest is DrainNode's work, which
 * reads this condition; stopping it instead would lose the guest's state.
 */
export async function markNoExecute(store: Store, clock: Clock, nodes: readonly Node[], vms: readonly VirtualMachine[]): Promise<void> {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  for (const vm of vms) {
    const node = byId.get(vm.status?.nodeId ?? "");
    const message = node ? messageFor(node, vm) : "";
    const has = vm.status?.conditions.find((c) => c.type === EVICTING);
    if ((has?.message ?? "") === message) continue;
    const now = clock.now();
    await store.of(VM_KIND)
      .update(vm.id, (cur) => {
        if (!cur.status || cur.status.nodeId !== vm.status?.nodeId) return undefined;
        cur.status.conditions = message
          ? setCondition(cur.status.conditions, { type: EVICTING, status: true, reason: "NoExecuteTaint", message, generation: cur.generation }, now)
          : removeCondition(cur.status.conditions, EVICTING);
        cur.updatedAt = timestampFromMs(now);
        return cur;
      })
      .catch((err: unknown) => {
        // Deleted meanwhile: nothing to mark.
        if (!(err instanceof QuantixError && err.code === "not_found")) throw err;
      });
  }
}

/** Why a VM must leave its node, or "" when it may stay. */
function messageFor(node: Node, vm: VirtualMachine): string {
  const taints = evictingTaints(node.spec?.taints ?? [], vm.spec?.placement?.tolerations ?? []);
  if (taints.length === 0) return "";
  const names = taints.map((t) => `${t.key}${t.value ? `=${t.value}` : ""}:${effectName(t.effect)}`).join(", ");
  return `node '${node.hostname}' has taint ${names}, which the VM does not tolerate; DrainNode moves it off`;
}
