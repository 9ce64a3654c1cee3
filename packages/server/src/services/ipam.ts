import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ConditionStatus, type Condition } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { ConditionSchema } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import type { VirtualNetwork } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { NetworkAllocationSchema, type NetworkAllocation } from "@quantix/api/gen/Quantixkvm/network/v1/network_allocation_pb.js";
import {
  addressAllocationId,
  addressPlanOf,
  allOf,
  assignableCount,
  gatewayCount,
  intToIpv4,
  NETWORK_ALLOCATION_KIND,
  QuantixError,
  SECURITY_GROUP_KIND,
  unusableAddress,
  VIRTUAL_NETWORK_KIND,
  type AddressPlan,
  type SubnetPlan,
  type Resource,
  type Store,
  type TxOp,
} from "@quantix/core";

type A = NetworkAllocation & Resource;
type N = VirtualNetwork & Resource;

/** Why a network is on no node: no VM uses one of its ports (the network controller writes the same). */
export const NETWORK_UNUSED = { reason: "NoPorts", message: "no VM uses a port of this network yet: it is set up on a node when a VM with a NIC on it is placed there" } as const;
/** Why a port is on no node: no VM's NIC names it. */
export const PORT_UNBOUND = { reason: "NotBound", message: "no VM uses this port: it is set up on a node when a VM's NIC names it (spec.nics[].port_id)" } as const;

/** The Ready=False condition of a new network or port: on no node until a VM uses it. */
export function notRealized(what: "network" | "port", nowMs: number): Condition {
  const why = what === "network" ? NETWORK_UNUSED : PORT_UNBOUND;
  return create(ConditionSchema, { type: "Ready", status: ConditionStatus.FALSE, reason: why.reason, message: why.message, lastTransitionTime: timestampFromMs(nowMs) });
}

/** A network's address counts with `allocations` addresses held by ports (the subnets' gateways count as allocated). */
export function addressCounts(plan: AddressPlan, allocations: number): { allocatedIpCount: number; availableIpCount: number } {
  return { allocatedIpCount: allocations + gatewayCount(plan), availableIpCount: assignableCount(plan) - allocations };
}

/** What holds an address, in words: a floating IP, a network's router (its external address) or a port. */
export function holderOf(a: { portId: string; floatingIpId: string; routerNetworkId: string }): string {
  return a.floatingIpId !== "" ? `floating IP '${a.floatingIpId}'` : a.routerNetworkId !== "" ? `the router of virtual network '${a.routerNetworkId}'` : `port '${a.portId}'`;
}

/** Every address allocation of a network, by address. */
export async function allocationsOf(store: Store, networkId: string): Promise<Map<string, A>> {
  const out = new Map<string, A>();
  for await (const a of allOf(store.of(NETWORK_ALLOCATION_KIND), { where: { network_id: networkId } })) if (a.address !== "") out.set(a.address, a);
  return out;
}

/**
 * A free address of one subnet's pools: from a random place in them onwards (so that
 * concurrent creates, which all read the same allocations, mostly pick different
 * addresses), never the gateway; undefined when every address of the pools is taken.
 */
export function pickFreeIn(s: SubnetPlan, taken: ReadonlySet<string>, random: () => number): string | undefined {
  const size = s.pools.reduce((n, p) => n + p.end - p.start + 1, 0);
  if (size <= 0) return undefined;
  const at = (k: number): number => {
    for (const p of s.pools) {
      const len = p.end - p.start + 1;
      if (k < len) return p.start + k;
      k -= len;
    }
    throw new Error("unreachable: k is below the pools' size");
  };
  const start = Math.floor(random() * size);
  for (let i = 0; i < size; i++) {
    const a = at((start + i) % size);
    if (a === s.gateway) continue;
    const str = intToIpv4(a);
    if (!taken.has(str)) return str;
  }
  return undefined;
}

/** A free address of the network: from the first subnet, in order, whose pools have one. */
export function pickFree(plan: AddressPlan, taken: ReadonlySet<string>, random: () => number): string | undefined {
  for (const s of plan.subnets) {
    const a = pickFreeIn(s, taken, random);
    if (a) return a;
  }
  return undefined;
}

/** A subnet with its pools, as "subnet 10.0.0.0/24 (pool 10.0.0.2-10.0.0.254)". */
export function describeSubnet(s: SubnetPlan): string {
  const pools = s.pools.map((p) => `${intToIpv4(p.start)}-${intToIpv4(p.end)}`);
  return `subnet ${s.subnet.cidr} (${s.field === "spec.cidr" ? "DHCP range" : pools.length === 1 ? "pool" : "pools"} ${pools.join(", ")})`;
}

/** RESOURCE_EXHAUSTED naming the network's subnets and their pools. */
export function exhausted(n: N, plan: AddressPlan): QuantixError {
  const what = plan.subnets.map(describeSubnet).join(", ");
  return new QuantixError(
    "resource_exhausted",
    `${what} of virtual network '${n.id}': every address is allocated (add a subnet with UpdateVirtualNetwork spec.additional_subnets, ask for a fixed IP outside the pools, or delete ports)`,
  );
}

/** The creates of a port's address allocations. */
export function claimOps(n: N, portId: string, projectId: string, addresses: readonly { address: string; requested: boolean }[], nowMs: number): TxOp[] {
  return addresses.map(({ address, requested }) => ({
    op: "create" as const,
    kind: NETWORK_ALLOCATION_KIND as never,
    object: create(NetworkAllocationSchema, { id: addressAllocationId(n.id, address), networkId: n.id, address, portId, projectId, requested, createdAt: timestampFromMs(nowMs) }) as A,
  }));
}

/**
 * The network's counts changed by `ports` ports and `addresses` addresses, read and
 * written under the commit's lock; the addresses a port takes are checked against the
 * network as it is then (a gateway or range changed meanwhile refuses the commit).
 */
export function networkCountOp(networkId: string, ports: number, addresses: number, taking: readonly string[], nowMs: number): TxOp {
  return {
    op: "update",
    kind: VIRTUAL_NETWORK_KIND as never,
    object: { id: networkId, resourceVersion: 0n },
    mutate: (cur) => {
      const n = cur as N;
      const plan = addressPlanOf(n);
      for (const a of taking) {
        const why = unusableAddress(plan, a);
        if (why) throw new QuantixError("aborted", `virtual network '${n.id}' changed meanwhile: ${why}; retry`);
      }
      const s = n.status!;
      const held = s.allocatedIpCount - gatewayCount(plan) + addresses;
      s.portCount += ports;
      Object.assign(s, addressCounts(plan, held));
      n.updatedAt = timestampFromMs(nowMs);
      return n;
    },
  };
}

/** The use counts of security groups changed by `delta` (a port joins: 1; leaves: -1). */
export function groupCountOps(groupIds: readonly string[], delta: number, nowMs: number): TxOp[] {
  return groupIds.map((id) => ({
    op: "update" as const,
    kind: SECURITY_GROUP_KIND as never,
    object: { id, resourceVersion: 0n },
    mutate: (cur: Resource) => {
      const g = cur as Resource & { portCount: number; updatedAt?: unknown };
      g.portCount = Math.max(0, g.portCount + delta);
      g.updatedAt = timestampFromMs(nowMs);
      return g;
    },
  }));
}
