import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { PortDeviceOwner, PortSpecSchema, PortState, type Port } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import type { VirtualNetwork } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import {
  addressAllocationId,
  addressPlanOf,
  ipv4ToInt,
  NETWORK_ALLOCATION_KIND,
  NETWORK_IPAM,
  PORT_KIND,
  QuantixError,
  subnetContaining,
  type Clock,
  type IdGenerator,
  type Resource,
  type Store,
  type TxOp,
} from "@quantix/core";
import { allocationsOf, claimOps, networkCountOp, pickFreeIn } from "../services/ipam.js";
import { PortDraft } from "../services/port-draft.js";

/**
 * The system's DHCP ports: one per (network, node) the network is set up on, holding an
 * address in each of the network's subnets (where that node's dnsmasq answers DHCP and
 * DNS for the subnet, as Neutron's DHCP port has an IP on each DHCP subnet). A subnet
 * added to the network later gets an address on the existing ports; a subnet removed
 * takes its address away (`reshapeOps`), so the service addresses in the other subnets
 * never change under the guests' leases.
 */

type P = Port & Resource;
type N = VirtualNetwork & Resource;

/** Attempts at a DHCP port commit whose picked address a concurrent commit took. */
const ATTEMPTS = 16;

export interface DhcpPortDeps {
  readonly store: Store;
  readonly clock: Clock;
  readonly ids: IdGenerator;
}

/** Makes the DHCP port of (net, node); undefined when made, else why not (in words for the network's status). */
export async function ensureDhcpPort(deps: DhcpPortDeps, net: N, nodeId: string): Promise<string | undefined> {
  const draft = await PortDraft.open(
    { store: deps.store, ids: deps.ids, ensureDefaultGroup: async () => ({ id: "" }), random: Math.random },
    { projectId: net.projectId, name: "", labels: {}, description: `DHCP and DNS of virtual network '${net.id}' on node '${nodeId}'` },
    create(PortSpecSchema, { networkId: net.id, portSecurityDisabled: true }),
  );
  for (let attempt = 1; ; attempt++) {
    const nowMs = deps.clock.now();
    try {
      const tried = await draft.attempt({ nowMs, everySubnet: true, status: { state: PortState.BUILD, deviceOwner: PortDeviceOwner.DHCP, deviceId: nodeId, nodeId, conditions: [] } });
      await deps.store.commit(tried.ops, { actor: NETWORK_IPAM });
      return undefined;
    } catch (err) {
      if (!(err instanceof QuantixError) || (err.code !== "already_exists" && err.code !== "aborted") || attempt >= ATTEMPTS) return `cannot make the network's DHCP port on node '${nodeId}': ${String((err as Error).message ?? err)}`;
    }
  }
}

/**
 * Brings a DHCP port's addresses in line with its network's subnets: keeps one per
 * subnet, picks one in each subnet it lacks (when the subnet's pools have one), releases
 * those in no subnet. `ops`: the commit's (the port's fixed IPs, changed only if they are
 * still what was read; the allocation records; the network's counts), absent when nothing
 * is to be done; `lacking`: the subnets (cidrs) the port still has no address in after it.
 */
export async function reshapeOps(store: Store, net: N, port: P, nowMs: number, random: () => number = Math.random): Promise<{ ops?: TxOp[]; lacking: string[] }> {
  const plan = addressPlanOf(net);
  const was = [...(port.spec?.fixedIps ?? [])];
  const keep: string[] = [];
  const drop: string[] = [];
  const seen = new Set<string>();
  for (const a of was) {
    const s = subnetContaining(plan, ipv4ToInt(a) ?? -1);
    if (s && !seen.has(s.subnet.cidr)) keep.push(a), seen.add(s.subnet.cidr);
    else drop.push(a);
  }
  const lacking = plan.subnets.filter((s) => !seen.has(s.subnet.cidr));
  if (lacking.length === 0 && drop.length === 0) return { lacking: [] };
  const taken = new Set((await allocationsOf(store, net.id)).keys());
  const add: string[] = [];
  const still: string[] = [];
  for (const s of lacking) {
    const free = pickFreeIn(s, taken, random);
    if (free) add.push(free), taken.add(free);
    else still.push(s.subnet.cidr);
  }
  if (add.length === 0 && drop.length === 0) return { lacking: still };
  const released: Resource[] = [];
  for (const a of drop) {
    const rec = await store.of(NETWORK_ALLOCATION_KIND).get(addressAllocationId(net.id, a));
    if (rec && rec.portId === port.id) released.push(rec);
  }
  const ops: TxOp[] = [
    {
      op: "update",
      kind: PORT_KIND as never,
      object: { id: port.id, resourceVersion: 0n },
      mutate: (cur) => {
        const p = cur as P;
        if ((p.spec?.fixedIps ?? []).join(",") !== was.join(",")) throw new QuantixError("aborted", `the DHCP port '${port.id}' changed meanwhile; retry`);
        p.spec!.fixedIps = [...keep, ...add];
        p.updatedAt = timestampFromMs(nowMs);
        return p;
      },
    },
    ...claimOps(net, port.id, port.projectId, add.map((address) => ({ address, requested: false })), nowMs),
    ...released.map((object) => ({ op: "delete" as const, kind: NETWORK_ALLOCATION_KIND as never, object })),
    networkCountOp(net.id, 0, add.length - released.length, add, nowMs),
  ];
  return { ops, lacking: still };
}

/**
 * Reshapes a DHCP port, trying again when a concurrent commit took a picked address:
 * whether it changed, and why it still lacks a subnet (in words for the network's
 * status: a subnet whose pools are full gets no DHCP on the node) or could not be changed.
 */
export async function reshapeDhcpPort(deps: DhcpPortDeps, net: N, port: P): Promise<{ changed: boolean; problem?: string }> {
  for (let attempt = 1; ; attempt++) {
    try {
      const cur = attempt === 1 ? port : ((await deps.store.of(PORT_KIND).get(port.id)) as P | undefined);
      if (!cur) return { changed: false };
      const { ops, lacking } = await reshapeOps(deps.store, net, cur, deps.clock.now());
      if (ops) await deps.store.commit(ops, { actor: NETWORK_IPAM });
      const problem = lacking.length > 0 ? `the network's DHCP port '${port.id}' has no address in subnet ${lacking.join(", ")} (its pools are full): guests there get no DHCP lease on this node until an address is free` : undefined;
      return { changed: ops !== undefined, ...(problem ? { problem } : {}) };
    } catch (err) {
      if (!(err instanceof QuantixError) || (err.code !== "already_exists" && err.code !== "aborted") || attempt >= ATTEMPTS) {
        return { changed: false, problem: `cannot give the network's DHCP port '${port.id}' an address in every subnet: ${String((err as Error).message ?? err)}` };
      }
    }
  }
}
