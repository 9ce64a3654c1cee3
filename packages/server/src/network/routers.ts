import { createHash } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { NodeStatus_Phase as Node_Phase, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { FloatingIp } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_pb.js";
import { NetworkType, type VirtualNetwork } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import type { RouterSpecSchema } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { addressPlanOf, intToIpv4, ipv4ToInt, subnetContaining } from "@quantix/core";

/**
 * Central routers (issue 15, docs/adr/0011-network-edge.md): a network whose
 * spec.router names an EXTERNAL network gets one router, in its own namespace on one
 * network node, whose id is the network's. Pure: which networks have one, where each
 * goes, the MACs, and the agent's RouterSpec; the network controller reads, claims the
 * external address and applies.
 */

export type RouterSpecInit = MessageInitShape<typeof RouterSpecSchema>;

/** A network's central router, as the controller plans it. */
export interface CentralRouter {
  readonly network: VirtualNetwork;
  readonly external: VirtualNetwork;
  /** The router's external address (claimed); empty while none is held. */
  readonly externalIp: string;
  /** The node it runs on; empty while no node can host it. */
  readonly nodeId: string;
  /** Why no node hosts it (empty when placed). */
  readonly why: string;
}

/** The networks with a central router whose external network exists and is EXTERNAL. */
export function centralRouterNetworks(networks: readonly VirtualNetwork[]): { network: VirtualNetwork; external: VirtualNetwork }[] {
  const byId = new Map(networks.map((n) => [n.id, n]));
  const out: { network: VirtualNetwork; external: VirtualNetwork }[] = [];
  for (const n of networks) {
    const ext = byId.get(n.spec?.router?.externalNetworkId ?? "");
    if (ext && ext.spec?.type === NetworkType.EXTERNAL && n.spec?.type !== NetworkType.EXTERNAL) out.push({ network: n, external: ext });
  }
  return out;
}

/** A locally administered unicast MAC from `seed` ("fa:" and five bytes of its hash). */
function derivedMac(seed: string): string {
  const h = createHash("sha256").update(seed).digest();
  return ["fa", ...[...h.subarray(0, 5)].map((b) => b.toString(16).padStart(2, "0"))].join(":");
}

/** The router's MAC on its network (the gateway's MAC the guests learn). */
export const routerInternalMac = (networkId: string): string => derivedMac(`router/internal/${networkId}`);
/** The router's MAC on its external network (the same on whichever node it runs: neighbours' caches stay right after a move). */
export const routerExternalMac = (networkId: string): string => derivedMac(`router/external/${networkId}`);

/** The gateways of a network's subnets, "a.b.c.d" each: the router's addresses on it. */
export function gatewayAddresses(net: VirtualNetwork): string[] {
  return addressPlanOf(net).subnets.map((s) => intToIpv4(s.gateway));
}

/** What a node offers a router: heartbeating, reached, and the physical networks its agent maps. */
export interface RouterHostCandidate {
  readonly node: Node;
  readonly physicalNetworks: readonly string[];
  /** Why it cannot host routers at all now (unreachable, no underlay); empty when it can. */
  readonly why: string;
}

/** Phases in which a node keeps a router it has (it heartbeats); new routers go to READY nodes only. */
const KEEPS = new Set([Node_Phase.READY, Node_Phase.NOT_READY, Node_Phase.MAINTENANCE, Node_Phase.DRAINING]);

/**
 * Where each router runs: where it runs now while that node still heartbeats, reaches
 * the control plane and maps the external network's physical network; else the READY
 * candidate mapping it with the fewest routers (ties by node id), so routers spread over
 * the network nodes. `current`: the node each router's network status names. Returns,
 * per network id, the node or why none fits (each node's reason).
 */
export function placeRouters(
  routers: readonly { network: VirtualNetwork; external: VirtualNetwork }[],
  current: ReadonlyMap<string, string>,
  candidates: readonly RouterHostCandidate[],
): Map<string, { nodeId: string; why: string }> {
  const out = new Map<string, { nodeId: string; why: string }>();
  const load = new Map<string, number>();
  const byId = new Map(candidates.map((c) => [c.node.id, c]));
  const fits = (c: RouterHostCandidate | undefined, physnet: string) => !!c && c.why === "" && c.physicalNetworks.includes(physnet);
  // Routers that stay first: their nodes' load counts before new ones are placed.
  const moving: typeof routers[number][] = [];
  for (const r of routers) {
    const nodeId = current.get(r.network.id) ?? "";
    const c = byId.get(nodeId);
    if (nodeId !== "" && fits(c, r.external.spec?.physicalNetwork ?? "") && KEEPS.has(c!.node.status?.phase ?? Node_Phase.UNKNOWN)) {
      out.set(r.network.id, { nodeId, why: "" });
      load.set(nodeId, (load.get(nodeId) ?? 0) + 1);
    } else moving.push(r);
  }
  for (const r of [...moving].sort((a, b) => a.network.id.localeCompare(b.network.id))) {
    const physnet = r.external.spec?.physicalNetwork ?? "";
    const ok = candidates.filter((c) => fits(c, physnet) && c.node.status?.phase === Node_Phase.READY).sort((a, b) => (load.get(a.node.id) ?? 0) - (load.get(b.node.id) ?? 0) || a.node.id.localeCompare(b.node.id));
    const pick = ok[0];
    if (pick) {
      out.set(r.network.id, { nodeId: pick.node.id, why: "" });
      load.set(pick.node.id, (load.get(pick.node.id) ?? 0) + 1);
      continue;
    }
    const reasons = candidates.map((c) => {
      const label = `node '${c.node.id}'`;
      if (c.why !== "") return `${label}: ${c.why}`;
      if (c.node.status?.phase !== Node_Phase.READY) return `${label}: is ${Node_Phase[c.node.status?.phase ?? 0]}`;
      return `${label}: maps no physical network '${physnet}' (it maps ${c.physicalNetworks.map((p) => `'${p}'`).join(", ") || "none"})`;
    });
    out.set(r.network.id, { nodeId: "", why: `no node can host the router to external network '${r.external.id}' (a READY node whose agent maps physical network '${physnet}', VMCP_NETWORK_PHYSICAL_NETWORKS): ${reasons.join("; ") || "the cluster has no network nodes"}` });
  }
  return out;
}

/**
 * The agent's RouterSpec of a network's router: its id is the network's; one interface
 * on the network holding every subnet's gateway; the external side at `externalIp` with
 * its subnet's prefix and gateway; SNAT as spec.router.snat_enabled; the floating IPs of
 * the network's ports on that external network. Undefined when `externalIp` is not in
 * the external network's subnets (the claim is checked before, so only a network changed
 * meanwhile gets here). `loadBalancers`: the network's load balancers (load-balancers.ts); `vpnConnections`: its VPN services (vpns.ts).
 */
export function routerSpecOf(net: VirtualNetwork, ext: VirtualNetwork, externalIp: string, floatingIps: readonly FloatingIp[], loadBalancers: NonNullable<RouterSpecInit["loadBalancers"]> = [], vpnConnections: NonNullable<RouterSpecInit["vpnConnections"]> = []): RouterSpecInit | undefined {
  const extPlan = addressPlanOf(ext);
  const at = subnetContaining(extPlan, ipv4ToInt(externalIp) ?? -1);
  if (!at) return undefined;
  const plan = addressPlanOf(net);
  return {
    routerId: net.id,
    external: { physicalNetwork: ext.spec?.physicalNetwork ?? "", address: `${externalIp}/${at.subnet.prefix}`, gatewayIp: intToIpv4(at.gateway), macAddress: routerExternalMac(net.id) },
    interfaces: [{ networkId: net.id, macAddress: routerInternalMac(net.id), addresses: plan.subnets.map((s) => `${intToIpv4(s.gateway)}/${s.subnet.prefix}`) }],
    snatEnabled: net.spec?.router?.snatEnabled ?? false,
    floatingIps: floatingIps
      .filter((f) => f.networkId === net.id && f.externalNetworkId === ext.id && f.portId !== "" && f.fixedIp !== "")
      .map((f) => ({ floatingIp: f.address, fixedIp: f.fixedIp }))
      .sort((a, b) => (ipv4ToInt(a.floatingIp) ?? 0) - (ipv4ToInt(b.floatingIp) ?? 0)),
    loadBalancers: [...loadBalancers],
    vpnConnections: [...vpnConnections],
  };
}
