import { VmStatus_State as State, type VirtualMachine, type VmSpec } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import type { UpdateVMRequest } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { invalidArgument, NODE_KIND, QuantixError, type FieldViolation, type Store } from "@quantix/core";
import { NicPorts, type NicPortDeps } from "./vm-networks.js";

/** The node capability a running VM's NIC changes need (the agent's AttachNic and DetachNic). */
export const NIC_HOTPLUG = "nic-hotplug";

type Nic = VmSpec["nics"][number];

/** Whether an UpdateVM request may write spec.nics: its mask names them (or spec), or it has no mask and carries a spec. */
export function touchesNics(req: UpdateVMRequest): boolean {
  const paths = req.updateMask?.paths ?? [];
  if (paths.length === 0) return req.spec !== undefined;
  return paths.some((p) => p === "spec" || p === "spec.nics" || p.startsWith("spec.nics."));
}

/**
 * The NICs an UpdateVM adds (ids `cur` lacks), planned as CreateVM plans its NICs: a
 * port made for each naming a network, the port bound for each naming one, in the
 * update's own commit. Undefined when the request adds none.
 */
export async function planAddedNics(deps: NicPortDeps, cur: VirtualMachine, spec: VmSpec): Promise<NicPorts | undefined> {
  const had = new Set((cur.spec?.nics ?? []).map((n) => n.id));
  const indices = new Set(spec.nics.flatMap((n, i) => (had.has(n.id) ? [] : [i])));
  if (indices.size === 0) return undefined;
  return NicPorts.plan(deps, cur.projectId, cur.name, spec, { indices, vmId: cur.id });
}

/** The NIC ids `next` adds to and removes from `cur`. */
export function nicDiff(cur: VmSpec | undefined, next: VmSpec | undefined): { added: string[]; removed: string[] } {
  const before = new Set((cur?.nics ?? []).map((n) => n.id));
  const after = new Set((next?.nics ?? []).map((n) => n.id));
  return { added: [...after].filter((id) => !before.has(id)), removed: [...before].filter((id) => !after.has(id)) };
}

/**
 * Whether `vm`'s node can hot-plug NICs: undefined when the VM does not run (its NICs
 * change cold), else the node's answer. Read before the update's commit; the commit's
 * check (checkNicChanges) looks at the VM's state again under the lock.
 */
export async function nodeHotplugs(store: Store, vm: VirtualMachine): Promise<boolean | undefined> {
  if (!isLive(vm.status?.state ?? State.UNKNOWN)) return undefined;
  const node = await store.of(NODE_KIND).get(vm.status?.nodeId ?? "");
  return (node?.status?.hypervisor?.capabilities ?? []).includes(NIC_HOTPLUG);
}

/** States in which a VM's guest holds its NICs: a change is hot-plugged. */
function isLive(state: State): boolean {
  return state === State.RUNNING || state === State.PAUSED;
}

/**
 * The rules of NIC changes in an UpdateVM, checked on the VM as the write leaves it
 * (`spec`, completed here) against the stored one (`cur`):
 * - a NIC kept (same id) keeps its network, port and MAC (empty fields are filled in from
 *   the stored NIC; another value is INVALID_ARGUMENT naming `spec.nics[i]`: remove the
 *   NIC and add a new one) and its security groups (the port's, changed with UpdatePort);
 * - an added NIC has been given its port by planAddedNics (ABORTED otherwise: the VM's
 *   NICs changed meanwhile, try again); no two NICs name one port;
 * - NICs are added or removed only while the VM is stopped (cold) or running or paused
 *   on a node with the `nic-hotplug` capability (`hotplug`); a running VM's NIC model does
 *   not change; other states are FAILED_PRECONDITION naming the state.
 */
export function checkNicChanges(vm: VirtualMachine, spec: VmSpec, cur: VirtualMachine, hotplug: boolean | undefined): void {
  const old = new Map((cur.spec?.nics ?? []).map((n) => [n.id, n]));
  const bad: FieldViolation[] = [];
  const ports = new Map<string, number>();
  let unplanned = false;
  const state = cur.status?.state ?? State.UNKNOWN;
  const live = isLive(state);
  spec.nics.forEach((n, i) => {
    const f = `spec.nics[${i}]`;
    const o = old.get(n.id);
    if (o) keepNic(n, o, f, bad, live);
    else if (n.portId === "") unplanned = true;
    if (n.portId !== "") {
      const j = ports.get(n.portId);
      if (j !== undefined) bad.push({ field: `${f}.port_id`, reason: "DUPLICATE", description: `port '${n.portId}' is also spec.nics[${j}]'s: a port is one NIC` });
      ports.set(n.portId, i);
    }
  });
  if (bad.length > 0) throw invalidArgument(bad);
  if (unplanned) throw new QuantixError("aborted", `the NICs of VM '${cur.id}' changed while this update was prepared: read the VM and try again`);
  const { added, removed } = nicDiff(cur.spec, spec);
  if (added.length + removed.length === 0) return;
  const what = [...added.map((id) => `add NIC '${id}'`), ...removed.map((id) => `remove NIC '${id}'`)].join(", ");
  if (state === State.STOPPED || state === State.PENDING || state === State.PROVISIONING || state === State.CRASHED || state === State.ERROR) return;
  if (live) {
    if (hotplug === true) return;
    throw new QuantixError("failed_precondition", `cannot ${what} of VM '${vm.id}' while it is ${State[state]}: its node '${cur.status?.nodeId ?? ""}' lacks the '${NIC_HOTPLUG}' capability; stop the VM first`);
  }
  throw new QuantixError("failed_precondition", `cannot ${what} of VM '${vm.id}' while it is ${State[state]}: NICs change while it is stopped, running or paused`);
}

/** A kept NIC: fills in its port's fields, refuses changing them. */
function keepNic(n: Nic, o: Nic, f: string, bad: FieldViolation[], live: boolean): void {
  const fixed = [
    ["port_id", "portId"],
    ["network_id", "networkId"],
    ["mac_address", "macAddress"],
  ] as const;
  for (const [field, key] of fixed) {
    if (n[key] === "") n[key] = o[key];
    else if (n[key] !== o[key]) bad.push({ field: `${f}.${field}`, reason: "IMMUTABLE", description: `NIC '${n.id}' has ${field} '${o[key]}': a NIC's network, port and MAC do not change; remove the NIC and add a new one (another id)` });
  }
  if (n.securityGroups.length === 0) n.securityGroups = [...o.securityGroups];
  else if (n.securityGroups.join(",") !== o.securityGroups.join(",")) bad.push({ field: `${f}.security_groups`, reason: "IMMUTABLE", description: `NIC '${n.id}' uses port '${o.portId}''s security groups: change them with UpdatePort (spec.security_group_ids)` });
  if (live && n.model !== o.model) bad.push({ field: `${f}.model`, reason: "IMMUTABLE", description: `NIC '${n.id}' is plugged into the running guest: its model changes while the VM is stopped (or remove the NIC and add a new one)` });
}
