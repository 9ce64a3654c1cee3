import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import { ListRoutersResponseSchema, RouterLoadBalancerAlgorithm, RouterLoadBalancerHealthCheckType, RouterLoadBalancerProtocol, RouterStatusSchema, RouterVpnPeerState, RouterVpnType, type NetworkService, type RouterStatus } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { invalidArgument, QuantixError, Violations } from "@quantix/core";
import { UUID } from "../network/names.js";
import type { RouterHost, RouterView } from "../network/router-host.js";
import type { LbAlgorithm, LbProtocol, LoadBalancerDesired } from "../network/router-model.js";
import type { LoadBalancerView } from "../network/router-lb-status.js";
import { checkRouterSpec } from "../network/router-validation.js";

type RouterMethods = Pick<ServiceImpl<typeof NetworkService>, "applyRouter" | "deleteRouter" | "getRouter" | "listRouters">;

function requireRouterId(value: string): void {
  const v = new Violations();
  if (v.required("router_id", value !== "")) v.pattern("router_id", value, UUID, "must be a lowercase canonical UUID");
  if (v.list.length > 0) throw invalidArgument(v.list);
}

/** NetworkService's router methods over a RouterHost (undefined: this agent has none, FAILED_PRECONDITION). */
export function routerMethods(routers: RouterHost | undefined): RouterMethods {
  const host = (): RouterHost => {
    if (!routers) throw new QuantixError("failed_precondition", "this agent runs no routers (its network data plane was started without them)");
    return routers;
  };
  return {
    async applyRouter(req) {
      const c = checkRouterSpec(req.spec);
      if (!c.ok) throw invalidArgument(c.violations);
      return toRouter(await host().applyRouter(c.value, req.generation));
    },
    async deleteRouter(req) {
      requireRouterId(req.routerId);
      await host().deleteRouter(req.routerId);
      return {};
    },
    async getRouter(req) {
      requireRouterId(req.routerId);
      return toRouter(await host().getRouter(req.routerId));
    },
    listRouters: async () => create(ListRoutersResponseSchema, { routers: routers ? (await routers.listRouters()).map(toRouter) : [] }),
  };
}

const VPN_TYPE = { wireguard: RouterVpnType.WIREGUARD, ipsec: RouterVpnType.IPSEC } as const;
const PEER_STATE = { up: RouterVpnPeerState.UP, connecting: RouterVpnPeerState.CONNECTING, down: RouterVpnPeerState.DOWN } as const;

function toRouter(v: RouterView): RouterStatus {
  const r = v.spec;
  return create(RouterStatusSchema, {
    routerId: r.routerId,
    spec: {
      routerId: r.routerId,
      external: { physicalNetwork: r.external.physicalNetwork, address: r.external.address, gatewayIp: r.external.gatewayIp, macAddress: r.external.mac },
      interfaces: r.interfaces.map((i) => ({ networkId: i.networkId, macAddress: i.mac, addresses: [...i.addresses] })),
      snatEnabled: r.snat,
      floatingIps: r.floatingIps.map((f) => ({ floatingIp: f.floatingIp, fixedIp: f.fixedIp })),
      loadBalancers: r.loadBalancers.map(lbSpec),
      // Secrets (private_key, preshared_key) are never returned.
      vpnConnections: (r.vpnConnections ?? []).map((c) => ({
        connectionId: c.connectionId,
        type: VPN_TYPE[c.type],
        localSubnets: [...c.localSubnets],
        listenPort: c.listenPort,
        localId: c.localId,
        ...(c.ipsec ? { ikeVersion: c.ipsec.ikeVersion, ikeProposals: [...c.ipsec.ikeProposals], espProposals: [...c.ipsec.espProposals], ikeLifetimeSeconds: c.ipsec.ikeLifetime, ipsecLifetimeSeconds: c.ipsec.ipsecLifetime, dpdIntervalSeconds: c.ipsec.dpd } : {}),
        peers: c.peers.map((p) => ({ peerId: p.peerId, endpoint: p.endpoint, remoteSubnets: [...p.remoteSubnets], publicKey: p.publicKey, persistentKeepaliveSeconds: p.keepalive, remoteId: p.remoteId })),
      })),
    },
    observedGeneration: BigInt(v.generation),
    namespace: v.namespace,
    conditions: v.conditions.map((c) => ({ ...c })),
    floatingIps: v.floatingIps.map((f) => ({ floatingIp: f.floatingIp, fixedIp: f.fixedIp, applied: f.applied })),
    loadBalancers: v.loadBalancers.map(lbStatus),
    vpnConnections: v.vpnConnections.map((c) => ({
      connectionId: c.connectionId,
      type: VPN_TYPE[c.type],
      interfaceName: c.interfaceName,
      publicKey: c.publicKey,
      listenPort: c.listenPort,
      applied: c.applied,
      message: c.message,
      peers: c.peers.map((p) => ({ peerId: p.peerId, state: PEER_STATE[p.state], lastHandshakeUnix: BigInt(p.lastHandshake), rxBytes: p.rx, txBytes: p.tx, endpoint: p.endpoint })),
    })),
  });
}

const PROTOCOL: Record<LbProtocol, RouterLoadBalancerProtocol> = { tcp: RouterLoadBalancerProtocol.TCP, udp: RouterLoadBalancerProtocol.UDP };
const ALGORITHM: Record<LbAlgorithm, RouterLoadBalancerAlgorithm> = {
  round_robin: RouterLoadBalancerAlgorithm.ROUND_ROBIN,
  source_ip: RouterLoadBalancerAlgorithm.SOURCE_IP,
  source_ip_port: RouterLoadBalancerAlgorithm.SOURCE_IP_PORT,
};

/** A load balancer's spec as applied (defaults filled in). */
function lbSpec(lb: LoadBalancerDesired) {
  return {
    loadBalancerId: lb.loadBalancerId,
    vip: lb.vip,
    listeners: lb.listeners.map((l) => ({
      protocol: PROTOCOL[l.protocol],
      port: l.port,
      algorithm: ALGORITHM[l.algorithm],
      members: l.members.map((m) => ({ memberId: m.memberId, address: m.address, port: m.port, weight: m.weight })),
      ...(l.healthCheck ? { healthCheck: { type: RouterLoadBalancerHealthCheckType.TCP, ...l.healthCheck } } : {}),
    })),
  };
}

function lbStatus(v: LoadBalancerView) {
  return {
    loadBalancerId: v.loadBalancerId,
    vip: v.vip,
    applied: v.applied,
    listeners: v.listeners.map((l) => ({ ...l, protocol: PROTOCOL[l.protocol], members: l.members.map((m) => ({ ...m })) })),
  };
}
