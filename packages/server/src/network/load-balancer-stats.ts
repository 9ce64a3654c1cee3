import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ListenerProtocol, type LoadBalancer } from "@quantix/api/gen/Quantixkvm/network/v1/load_balancer_pb.js";
import { ListenerStatsSchema, LoadBalancerStatsSchema, MemberStatsSchema, type LoadBalancerStats } from "@quantix/api/gen/Quantixkvm/network/v1/load_balancer_service_pb.js";
import { RouterLoadBalancerProtocol } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { QuantixError, VIRTUAL_NETWORK_KIND, type Clock, type Store } from "@quantix/core";
import { externalLbUuid, memberUuid } from "./load-balancers.js";
import type { NodeNetwork } from "./node-network.js";

/**
 * GetLoadBalancerStats from the router that serves the load balancer, read live from its
 * node (GetRouter): per listener, the connections, packets and bytes of the router's
 * nftables counters (both directions), summed over the VIP and a floating IP on the VIP
 * port, and the same per member. FAILED_PRECONDITION while no router has applied it
 * (saying why), UNAVAILABLE while the router's node cannot be reached.
 */
export async function loadBalancerStats(deps: { store: Store; clock: Clock; network: (nodeId: string) => NodeNetwork | undefined }, lb: LoadBalancer): Promise<LoadBalancerStats> {
  const netId = lb.spec?.vipNetworkId ?? "";
  const net = await deps.store.of(VIRTUAL_NETWORK_KIND).get(netId);
  const nodeId = net?.status?.router?.nodeId ?? "";
  if (nodeId === "") throw new QuantixError("failed_precondition", `the load balancer has not been applied: the router of network '${netId}' runs on no node yet${net?.status?.router?.message ? ` (${net.status.router.message})` : ""}`);
  const nn = deps.network(nodeId);
  if (!nn) throw new QuantixError("unavailable", `node '${nodeId}', where the router of network '${netId}' runs, is not reachable from this control plane; retry`);
  const router = await nn.getRouter(netId);
  const entries = router.loadBalancers.filter((x) => (x.loadBalancerId === lb.id || x.loadBalancerId === externalLbUuid(lb.id)) && x.applied);
  if (entries.length === 0) throw new QuantixError("failed_precondition", `the load balancer has not been applied by the router on node '${nodeId}' yet`);
  const pools = new Map((lb.spec?.pools ?? []).map((p) => [p.name, p]));
  const listeners = (lb.spec?.listeners ?? []).map((l) => {
    const protocol = l.protocol === ListenerProtocol.UDP ? RouterLoadBalancerProtocol.UDP : RouterLoadBalancerProtocol.TCP;
    const seen = entries.flatMap((e) => e.listeners.filter((x) => x.protocol === protocol && x.port === l.port));
    const pool = pools.get(l.defaultPool);
    const members = (pool?.members ?? []).map((m) => {
      const id = memberUuid(lb.id, pool!.name, m.name);
      const ms = seen.flatMap((x) => x.members.filter((y) => y.memberId === id));
      return create(MemberStatsSchema, { poolName: pool!.name, memberName: m.name, totalConnections: sum(ms.map((y) => y.connections)), packets: sum(ms.map((y) => y.packets)), bytes: sum(ms.map((y) => y.bytes)) });
    });
    return create(ListenerStatsSchema, { listenerName: l.name, totalConnections: sum(seen.map((x) => x.connections)), packets: sum(seen.map((x) => x.packets)), bytes: sum(seen.map((x) => x.bytes)), members });
  });
  return create(LoadBalancerStatsSchema, { loadBalancerId: lb.id, listeners, sampledAt: timestampFromMs(deps.clock.now()) });
}

const sum = (xs: readonly bigint[]): bigint => xs.reduce((a, b) => a + b, 0n);
