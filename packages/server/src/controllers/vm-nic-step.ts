import type { VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { PortState } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { PORT_KIND, QuantixError, type HypervisorPort, type ObservedNic, type Store, type VmObservation } from "@quantix/core";

/** The condition of a VM whose NICs on its node differ from its spec (False while they are being changed, with why). */
export const NICS_PLUGGED = "NicsPlugged";

/** Why a VM's NICs on its node are not yet its spec's: the NicsPlugged=False condition's reason and message. */
export interface NicsPending {
  readonly reason: "WaitingForNetwork" | "HotplugUnsupported" | "WaitingForState";
  readonly message: string;
}

/** What a NIC step did, and what it waits for (undefined: the node has the spec's NICs, or does not say). */
export interface NicStep {
  readonly stepped: boolean;
  readonly pending?: NicsPending;
}

/** A hot-plug or hot-unplug the node refused or failed: NicsPlugged=False with this reason, retried with backoff. */
export class NicStepFailure extends Error {
  override readonly name = "NicStepFailure";
  constructor(
    readonly reason: "NicAttachFailed" | "NicDetachFailed",
    message: string,
    options: { cause: unknown },
  ) {
    super(message, options);
  }
}

const key = (n: { id: string; portId: string }) => `${n.id}\u0000${n.portId}`;

/**
 * Brings the NICs a VM has on its node to its spec's (issue 14), level-based: compares
 * spec.nics with the NICs the hypervisor reports (`obs.nics`; nothing is done when it does
 * not say). A VM defined there but not running (created, shut down, crashed) from an older
 * spec has its definition dropped, so that its next start defines it with its NICs. A
 * running or paused VM gets removed NICs hot-unplugged and added ones hot-plugged once
 * their port is ACTIVE on the node (the network controller sets it up because the spec
 * names it); a node without "nic-hotplug" keeps them until the VM is stopped.
 */
export async function stepNics(store: Store, vm: VirtualMachine, d: HypervisorPort, obs: VmObservation): Promise<NicStep> {
  const have: readonly ObservedNic[] | undefined = obs.nics;
  if (!have) return { stepped: false };
  const want = vm.spec?.nics ?? [];
  const wanted = new Set(want.map(key));
  const had = new Set(have.map(key));
  const add = want.filter((n) => !had.has(key(n)));
  const remove = have.filter((n) => !wanted.has(key(n)));
  if (add.length + remove.length === 0) return { stepped: false };
  const what = [...add.map((n) => `add NIC '${n.id}'`), ...remove.map((n) => `remove NIC '${n.id}'`)].join(", ");
  switch (obs.power) {
    case "created":
    case "shutdown":
    case "crashed":
      await d.deleteVM(vm.id);
      return { stepped: true };
    case "running":
    case "paused":
      break;
    default:
      return { stepped: false, pending: { reason: "WaitingForState", message: `to ${what}, the VM must be running, paused or stopped; it is ${obs.power}` } };
  }
  if (!d.capabilities.has("nic-hotplug") || !d.nics) {
    return { stepped: false, pending: { reason: "HotplugUnsupported", message: `the node's ${d.kind} hypervisor lacks the 'nic-hotplug' capability: to ${what}, stop the VM (its next start has the spec's NICs)` } };
  }
  const nics = d.nics;
  let stepped = false;
  // Removals first: a NIC id that moved to another port is unplugged, then plugged again.
  for (const n of remove) {
    await hot("NicDetachFailed", `unplug NIC '${n.id}'`, () => nics.detach(vm.id, n.id));
    stepped = true;
  }
  const nodeId = vm.status?.nodeId ?? "";
  const waiting: string[] = [];
  for (const n of add) {
    const p = n.portId === "" ? undefined : await store.of(PORT_KIND).get(n.portId);
    if (!p || p.status?.deviceId !== vm.id) {
      waiting.push(`NIC '${n.id}' (port '${n.portId}'): the port is not bound to this VM`);
      continue;
    }
    if (p.status.nodeId !== nodeId || p.status.state !== PortState.ACTIVE) {
      const why = p.status.conditions.find((c) => c.type === "Ready")?.message || "the network controller has not set it up yet";
      waiting.push(`NIC '${n.id}' (port '${p.id}'): not ACTIVE on node '${nodeId}' yet (${why})`);
      continue;
    }
    await hot("NicAttachFailed", `plug NIC '${n.id}' in`, () => nics.attach(vm.id, { id: n.id, portId: n.portId, macAddress: n.macAddress, model: n.model }));
    stepped = true;
  }
  if (waiting.length === 0) return { stepped };
  return { stepped, pending: { reason: "WaitingForNetwork", message: `the NICs are being set up on node '${nodeId}': ${waiting.join("; ")}` } };
}

/** One hot-plug call; a failure other than an unreachable node becomes a {@link NicStepFailure}. */
async function hot(reason: NicStepFailure["reason"], step: string, call: () => Promise<void>): Promise<void> {
  try {
    await call();
  } catch (err) {
    if (!(err instanceof QuantixError) || err.code === "unavailable") throw err;
    const words = err.code === "internal" ? "its agent failed unexpectedly (the agent's log on the node has the details)" : err.message;
    throw new NicStepFailure(reason, `the node could not ${step}: ${words}`, { cause: err });
  }
}
