import { createHash } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { FloatingIp } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_pb.js";
import { ListenerProtocol, LoadBalancingAlgorithm, SessionPersistenceType, type BackendPool, type LoadBalancer } from "@quantix/api/gen/Quantixkvm/network/v1/load_balancer_pb.js";
import { RouterLoadBalancerAlgorithm, RouterLoadBalancerHealthCheckType, RouterLoadBalancerProtocol, type RouterLoadBalancerSchema } from "@quantix/api/gen/vmm/v1/network_pb.js";

/**
 * Load balancers on central routers (issue 15): a LoadBalancer of a network is served by
 * the network's router, its VIP (the VIP port's address) answered on the router's leg on
 * the network, so the network's guests reach it; a floating IP on the VIP port is served
 * as a second VIP on the router's external side (the same listeners and members), so the
 * outside reaches it, instead of a floating-IP mapping (a DNAT to the VIP would need a
 * second DNAT in the same hook, which nftables does not do). Pure: the agent's
 * RouterLoadBalancer entries of one network.
 */

export type RouterLoadBalancerInit = MessageInitShape<typeof RouterLoadBalancerSchema>;

/** A lowercase canonical UUID derived from `seed` (the agent names counters and chains after ids). */
export function derivedUuid(seed: string): string {
  const h = createHash("sha256").update(seed).digest("hex");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** The id of a member on the agent: from the load balancer, pool and member names (stable across updates). */
export const memberUuid = (lbId: string, pool: string, member: string): string => derivedUuid(`lb-member/${lbId}/${pool}/${member}`);
/** The id of a load balancer's external copy (its floating IP as a second VIP). */
export const externalLbUuid = (lbId: string): string => derivedUuid(`lb-external/${lbId}`);

const PROTOCOL: Partial<Record<ListenerProtocol, RouterLoadBalancerProtocol>> = {
  [ListenerProtocol.TCP]: RouterLoadBalancerProtocol.TCP,
  [ListenerProtocol.UDP]: RouterLoadBalancerProtocol.UDP,
};

function algorithmOf(pool: BackendPool): RouterLoadBalancerAlgorithm {
  if (pool.algorithm === LoadBalancingAlgorithm.SOURCE_IP_PORT) return RouterLoadBalancerAlgorithm.SOURCE_IP_PORT;
  if (pool.algorithm === LoadBalancingAlgorithm.SOURCE_IP || pool.sessionPersistence?.type === SessionPersistenceType.SOURCE_IP) return RouterLoadBalancerAlgorithm.SOURCE_IP;
  return RouterLoadBalancerAlgorithm.ROUND_ROBIN;
}

/**
 * The router entries of one network's load balancers: for each enabled one with its VIP
 * address, one entry at the VIP and, when a floating IP maps to its VIP port, one at the
 * floating IP. Members `disabled` are left out (no new connections; their established
 * ones are closed by the router, which deletes a removed member's conntrack entries).
 * Returns the entries and the floating IPs they serve (which the router's floating-IP
 * mappings leave out).
 */
export function routerLoadBalancers(lbs: readonly LoadBalancer[], fips: readonly FloatingIp[]): { entries: RouterLoadBalancerInit[]; servedFips: Set<string> } {
  const entries: RouterLoadBalancerInit[] = [];
  const servedFips = new Set<string>();
  for (const lb of [...lbs].sort((a, b) => a.id.localeCompare(b.id))) {
    const spec = lb.spec;
    const vip = spec?.vipAddress ?? "";
    if (!spec || spec.disabled || vip === "") continue;
    const pools = new Map(spec.pools.map((p) => [p.name, p]));
    const listeners = spec.listeners.flatMap((l) => {
      const protocol = PROTOCOL[l.protocol];
      const pool = pools.get(l.defaultPool);
      if (protocol === undefined || !pool) return [];
      const hm = pool.healthMonitor;
      return [
        {
          protocol,
          port: l.port,
          algorithm: algorithmOf(pool),
          members: pool.members.filter((m) => !m.disabled).map((m) => ({ memberId: memberUuid(lb.id, pool.name, m.name), address: m.address, port: m.port, weight: m.weight || 1 })),
          ...(hm ? { healthCheck: { type: RouterLoadBalancerHealthCheckType.TCP, intervalSeconds: hm.delaySeconds, timeoutSeconds: hm.timeoutSeconds, rise: hm.healthyThreshold, fall: hm.unhealthyThreshold } } : {}),
        },
      ];
    });
    if (listeners.length === 0) continue;
    entries.push({ loadBalancerId: lb.id, vip, listeners });
    const fip = fips.find((f) => f.portId !== "" && f.portId === lb.status?.vipPortId && f.fixedIp === vip);
    if (fip) {
      entries.push({ loadBalancerId: externalLbUuid(lb.id), vip: fip.address, listeners });
      servedFips.add(fip.id);
    }
  }
  return { entries, servedFips };
}
