import { create } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import {
  EtherType,
  GatewayMode,
  ListNetworksResponseSchema,
  ListSecurityGroupsResponseSchema,
  NetworkCapabilitiesSchema,
  NetworkService,
  NetworkStatusSchema,
  PortState,
  PortStatusSchema,
  RuleDirection,
  RuleProtocol,
  SecurityGroupStatusSchema,
  type NetworkCondition,
  type NetworkStatus,
  type PortStatus,
  type SecurityGroupStatus,
} from "@quantix/api/gen/vmm/v1/network_pb.js";
import { invalidArgument, Violations } from "@quantix/core";
import { route, type Route } from "@quantix/rpc";
import type { NetworkCapabilityProbe } from "../network/capabilities.js";
import type { SecurityGroupDesired } from "../network/model.js";
import type { Condition, NetworkHost, NetworkView, PortView } from "../network/network-host.js";
import { UUID } from "../network/names.js";
import type { RouterHost } from "../network/router-host.js";
import { routerMethods } from "./router-routes.js";
import { checkMemberIps, checkNetworkSpec, checkSecurityGroupSpec } from "../network/validation.js";

function requireId(field: string, value: string): void {
  const v = new Violations();
  if (v.required(field, value !== "")) v.pattern(field, value, UUID, "must be a lowercase canonical UUID");
  if (v.list.length > 0) throw invalidArgument(v.list);
}

/** vmm.v1 NetworkService over a NetworkHost: validation and conversion; the data plane lives in network/. */
export function networkServiceImpl(host: NetworkHost, features: () => Promise<NetworkCapabilityProbe>, routers?: RouterHost): ServiceImpl<typeof NetworkService> {
  return {
    ...routerMethods(routers),
    async applyNetwork(req) {
      const c = checkNetworkSpec(req.spec);
      if (!c.ok) throw invalidArgument(c.violations);
      const status = toNetwork(await host.applyNetwork(c.value, req.generation));
      // The network's bridge may have been recreated (its ports re-attached): so are the routers' legs on it, now rather than at the next resync.
      if (routers?.servesNetwork(c.value.networkId)) await routers.resync();
      return status;
    },
    async deleteNetwork(req) {
      requireId("network_id", req.networkId);
      await host.deleteNetwork(req.networkId);
      return {};
    },
    async getNetwork(req) {
      requireId("network_id", req.networkId);
      return toNetwork(await host.getNetwork(req.networkId));
    },
    listNetworks: async () => create(ListNetworksResponseSchema, { networks: (await host.listNetworks()).map(toNetwork) }),
    async getPort(req) {
      requireId("port_id", req.portId);
      return toPort(await host.getPort(req.portId));
    },
    async applySecurityGroup(req) {
      const c = checkSecurityGroupSpec(req.spec);
      if (!c.ok) throw invalidArgument(c.violations);
      return toGroup(await host.applySecurityGroup(c.value, req.generation));
    },
    async updateSecurityGroupMembers(req) {
      const v = new Violations();
      if (v.required("security_group_id", req.securityGroupId !== "")) v.pattern("security_group_id", req.securityGroupId, UUID, "must be a lowercase canonical UUID");
      const add = checkMemberIps(v, "add_ips", req.addIps);
      const remove = checkMemberIps(v, "remove_ips", req.removeIps);
      if (v.list.length > 0) throw invalidArgument(v.list);
      return toGroup(await host.updateMembers(req.securityGroupId, add, remove));
    },
    async deleteSecurityGroup(req) {
      requireId("security_group_id", req.securityGroupId);
      await host.deleteSecurityGroup(req.securityGroupId);
      return {};
    },
    listSecurityGroups: async () => create(ListSecurityGroupsResponseSchema, { securityGroups: (await host.listSecurityGroups()).map(toGroup) }),
    getNetworkCapabilities: async () => create(NetworkCapabilitiesSchema, await features()),
  };
}

/** NetworkService's route, for the agent server. */
export function networkRoute(host: NetworkHost, features: () => Promise<NetworkCapabilityProbe>, routers?: RouterHost): Route {
  return route(NetworkService, networkServiceImpl(host, features, routers));
}

const cond = (c: Condition): NetworkCondition => ({ $typeName: "vmm.v1.NetworkCondition", ...c });

const GATEWAY_MODES = { routed: GatewayMode.ROUTED, nat: GatewayMode.NAT } as const;

const PORT_STATES = { down: PortState.DOWN, active: PortState.ACTIVE, error: PortState.ERROR } as const;

function toPort(p: PortView): PortStatus {
  return create(PortStatusSchema, { portId: p.portId, networkId: p.networkId, tapDevice: p.tap, state: PORT_STATES[p.state], carrier: p.carrier, conditions: p.conditions.map(cond) });
}

function toNetwork(v: NetworkView): NetworkStatus {
  const n = v.spec;
  return create(NetworkStatusSchema, {
    networkId: n.networkId,
    spec: {
      networkId: n.networkId,
      vni: n.vni,
      mtu: n.mtu,
      localUnderlayAddress: n.localUnderlay,
      peerUnderlayAddresses: [...n.peers],
      subnets: n.subnets.map((s) => ({ cidr: s.cidr, gatewayIp: s.gatewayIp ?? "", dnsServers: [...s.dnsServers], dhcpEnabled: s.dhcp, serviceAddress: s.serviceAddress ?? "", leaseSeconds: s.leaseSeconds })),
      ports: n.ports.map((p) => ({
        portId: p.portId,
        macAddress: p.mac,
        fixedIps: [...p.fixedIps],
        allowedAddressPairs: p.pairs.map((x) => ({ ipPrefix: x.ipPrefix, macAddress: x.mac })),
        securityGroupIds: [...p.securityGroupIds],
        portSecurityDisabled: !p.portSecurity,
        hostname: p.hostname ?? "",
      })),
      remotePorts: n.remotePorts.map((r) => ({ macAddress: r.mac, underlayAddress: r.underlay, ipAddresses: [...r.ips], hostname: r.hostname ?? "" })),
      dnsDomain: n.dnsDomain ?? "",
      ...(n.gateway ? { gateway: { mode: GATEWAY_MODES[n.gateway.mode] } } : {}),
    },
    observedGeneration: BigInt(v.generation),
    bridge: v.bridge,
    vxlanDevice: v.vxlan,
    dnsmasqPid: v.dnsmasqPid,
    conditions: v.conditions.map(cond),
    ports: v.ports.map(toPort),
  });
}

const DIRS = { ingress: RuleDirection.INGRESS, egress: RuleDirection.EGRESS } as const;
const PROTOS = { any: RuleProtocol.UNSPECIFIED, tcp: RuleProtocol.TCP, udp: RuleProtocol.UDP, icmp: RuleProtocol.ICMP } as const;

function toGroup(g: { spec: SecurityGroupDesired; generation: string; conditions: Condition[] }): SecurityGroupStatus {
  return create(SecurityGroupStatusSchema, {
    securityGroupId: g.spec.securityGroupId,
    spec: {
      securityGroupId: g.spec.securityGroupId,
      rules: g.spec.rules.map((r) => ({
        direction: DIRS[r.direction],
        ethertype: EtherType.IPV4,
        protocol: PROTOS[r.protocol],
        portRangeMin: r.portMin ?? 0,
        portRangeMax: r.portMax ?? 0,
        ...(r.icmpType !== undefined ? { icmpType: r.icmpType } : {}),
        ...(r.icmpCode !== undefined ? { icmpCode: r.icmpCode } : {}),
        remoteIpPrefix: r.remotePrefix ?? "",
        remoteGroupId: r.remoteGroupId ?? "",
      })),
      memberIps: [...g.spec.members],
    },
    observedGeneration: BigInt(g.generation),
    conditions: g.conditions.map(cond),
  });
}
