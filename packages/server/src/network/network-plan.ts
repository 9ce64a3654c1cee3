import type { MessageInitShape } from "@bufbuild/protobuf";
import type { VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { PortDeviceOwner, type Port } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { EtherType as CpEtherType, SecurityGroupRuleDirection, SecurityGroupRuleProtocol, type SecurityGroup, type SecurityGroupRule } from "@quantix/api/gen/Quantixkvm/network/v1/security_group_pb.js";
import type { VirtualNetwork } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { addressPlanOf, intToIpv4, ipv4ToInt, subnetContaining } from "@quantix/core";
import { EtherType, GatewayMode, RuleDirection, RuleProtocol, type NetworkSpecSchema, type SecurityGroupRuleSchema, type SecurityGroupSpecSchema } from "@quantix/api/gen/vmm/v1/network_pb.js";

/**
 * What every node's network data plane should hold, computed from the store (pure: the
 * network controller reads, this decides, the controller applies). A network is on a
 * node when a VM on that node (or migrating to it) has a NIC on one of its ports; each
 * such (network, node) has a DHCP port of the system's (its service address, where that
 * node's dnsmasq answers). Security groups go to the nodes whose ports use them, with
 * the groups their rules name as remote groups (whose member addresses the rules match).
 * A network with a router gets a gateway on every node that has it (NAT when the router's
 * snat_enabled, else ROUTED).
 */

export type NetworkSpecInit = MessageInitShape<typeof NetworkSpecSchema>;
export type GroupSpecInit = MessageInitShape<typeof SecurityGroupSpecSchema>;

export interface PlanInput {
  readonly networks: readonly VirtualNetwork[];
  readonly ports: readonly Port[];
  readonly groups: readonly SecurityGroup[];
  readonly vms: readonly VirtualMachine[];
}

/** A VM port and where it is: the nodes that hold it (its VM's node, and a migration's target). */
export interface PlacedPort {
  readonly port: Port;
  readonly vm: VirtualMachine;
  /** The node the VM runs on now (remote hosts send its MAC there). */
  readonly nodeId: string;
  /** Every node that holds its TAP: the VM's node and, while it migrates, the target. */
  readonly nodeIds: readonly string[];
}

/** The ports VMs use, each with its nodes; ports of VMs without a node are left out. */
export function placedPorts(input: PlanInput): PlacedPort[] {
  const vms = new Map(input.vms.map((v) => [v.id, v]));
  const out: PlacedPort[] = [];
  for (const port of input.ports) {
    if (port.status?.deviceOwner !== PortDeviceOwner.VM) continue;
    const vm = vms.get(port.status.deviceId);
    // A NIC removed from the spec that its node still has (being unplugged) keeps its TAP until it is gone.
    const named = (nics: readonly { portId: string }[] | undefined) => (nics ?? []).some((n) => n.portId === port.id);
    if (!vm || !(named(vm.spec?.nics) || named(vm.status?.nics))) continue;
    const nodeId = vm.status?.nodeId ?? "";
    const target = vm.status?.migrationTargetNodeId ?? "";
    const nodeIds = [nodeId, target].filter((n, i, all) => n !== "" && all.indexOf(n) === i);
    if (nodeIds.length === 0) continue;
    out.push({ port, vm, nodeId: nodeId || target, nodeIds });
  }
  return out;
}

/** The (network, node) pairs that need the network: `${networkId}/${nodeId}`. */
export function neededPairs(placed: readonly PlacedPort[]): Set<string> {
  const out = new Set<string>();
  for (const p of placed) for (const n of p.nodeIds) out.add(pairKey(p.port.spec?.networkId ?? "", n));
  return out;
}

export const pairKey = (networkId: string, nodeId: string): string => `${networkId}/${nodeId}`;

/** The system's DHCP port of (network, node), by pair key. */
export function dhcpPorts(ports: readonly Port[]): Map<string, Port> {
  const out = new Map<string, Port>();
  for (const p of ports) if (p.status?.deviceOwner === PortDeviceOwner.DHCP) out.set(pairKey(p.spec?.networkId ?? "", p.status.deviceId), p);
  return out;
}

/** One node's share: its networks (by id) and security groups (by id). */
export interface NodePlan {
  readonly networks: Map<string, NetworkSpecInit>;
  readonly groups: Map<string, GroupSpecInit>;
  /** Why a network cannot be set up on the node yet (no underlay address, no DHCP port), by network id. */
  readonly blocked: Map<string, string>;
}

/**
 * Every node's plan. `underlay` gives each node's VXLAN address (absent: the network
 * cannot be set up there, said in `blocked`).
 */
/** A central router as the networks' plans see it: on `nodeId`, answering on `addresses` (the gateways) with `mac`. */
export interface PlacedRouter {
  readonly nodeId: string;
  readonly mac: string;
  readonly addresses: readonly string[];
}

export function planNodes(input: PlanInput, underlay: ReadonlyMap<string, string>, routers: ReadonlyMap<string, PlacedRouter> = new Map()): Map<string, NodePlan> {
  const placed = placedPorts(input);
  const dhcp = dhcpPorts(input.ports);
  const networks = new Map(input.networks.map((n) => [n.id, n]));
  const groups = new Map(input.groups.map((g) => [g.id, g]));
  const plans = new Map<string, NodePlan>();
  const planOf = (nodeId: string) => {
    let p = plans.get(nodeId);
    if (!p) plans.set(nodeId, (p = { networks: new Map(), groups: new Map(), blocked: new Map() }));
    return p;
  };
  // Who holds each network: node ids, in a stable order.
  const holders = new Map<string, string[]>();
  for (const p of placed) {
    const nid = p.port.spec?.networkId ?? "";
    const list = holders.get(nid) ?? [];
    for (const n of p.nodeIds) if (!list.includes(n)) list.push(n);
    holders.set(nid, list.sort());
  }
  // A central router's node has its network too (its leg is on the network's bridge).
  for (const [nid, r] of routers) {
    if (r.nodeId === "") continue;
    const list = holders.get(nid) ?? [];
    if (!list.includes(r.nodeId)) list.push(r.nodeId);
    holders.set(nid, list.sort());
  }
  // Group members: every address of every VM port using the group, wherever it runs.
  const members = new Map<string, Set<string>>();
  for (const p of placed) for (const g of p.port.spec?.securityGroupIds ?? []) for (const ip of p.port.spec?.fixedIps ?? []) (members.get(g) ?? members.set(g, new Set()).get(g)!).add(ip);
  for (const [networkId, nodes] of holders) {
    const net = networks.get(networkId);
    if (!net) continue;
    for (const nodeId of nodes) {
      const plan = planOf(nodeId);
      const local = underlay.get(nodeId) ?? "";
      const dhcpPort = dhcp.get(pairKey(networkId, nodeId));
      if (local === "") {
        plan.blocked.set(networkId, `node '${nodeId}' reports no underlay address for VXLAN (set VMCP_NETWORK_UNDERLAY_ADDRESS on its agent)`);
        continue;
      }
      const mine = placed.filter((p) => p.port.spec?.networkId === networkId && p.nodeIds.includes(nodeId));
      const remote = placed.filter((p) => p.port.spec?.networkId === networkId && !p.nodeIds.includes(nodeId));
      // A node that has the network for its router only serves no DHCP (no guest of it is there).
      const dhcpOn = (net.spec?.dhcp?.enabled ?? true) && mine.length > 0;
      if (dhcpOn && (dhcpPort?.spec?.fixedIps.length ?? 0) === 0) {
        plan.blocked.set(networkId, `the network's DHCP port on node '${nodeId}' is being made`);
        continue;
      }
      const router = routers.get(networkId);
      const routerRemote = router && router.nodeId !== "" && router.nodeId !== nodeId && (underlay.get(router.nodeId) ?? "") !== "" ? [{ macAddress: router.mac, underlayAddress: underlay.get(router.nodeId)!, ipAddresses: [...router.addresses], hostname: "" }] : [];
      const spec: NetworkSpecInit = {
        networkId,
        vni: net.spec?.vni ?? 0,
        mtu: net.spec?.mtu ?? 0,
        localUnderlayAddress: local,
        peerUnderlayAddresses: nodes.filter((n) => n !== nodeId).map((n) => underlay.get(n) ?? "").filter((a) => a !== "" && a !== local),
        subnets: agentSubnets(net, dhcpOn ? (dhcpPort?.spec?.fixedIps ?? []) : []),
        ports: mine.map((p) => ({
          portId: p.port.id,
          macAddress: p.port.spec?.macAddress ?? "",
          fixedIps: [...(p.port.spec?.fixedIps ?? [])],
          allowedAddressPairs: (p.port.spec?.allowedAddressPairs ?? []).filter((a) => !a.ipAddress.includes(":")).map((a) => ({ ipPrefix: a.ipAddress, macAddress: a.macAddress })),
          securityGroupIds: p.port.spec?.portSecurityDisabled ? [] : [...(p.port.spec?.securityGroupIds ?? [])],
          portSecurityDisabled: p.port.spec?.portSecurityDisabled ?? false,
          hostname: hostnameOf(p.vm.name),
        })),
        remotePorts: remote
          .filter((p) => (underlay.get(p.nodeId) ?? "") !== "")
          .map((p) => ({ macAddress: p.port.spec?.macAddress ?? "", underlayAddress: underlay.get(p.nodeId)!, ipAddresses: [...(p.port.spec?.fixedIps ?? [])], hostname: hostnameOf(p.vm.name) }))
          // A central router on another node is reached across the overlay like a remote guest.
          .concat(routerRemote),
        dnsDomain: net.spec?.dnsDomain ?? "",
        // A distributed gateway uplinks to each node's own stack: every node is the gateway of its own guests.
        ...(net.spec?.router && net.spec.router.externalNetworkId === "" ? { gateway: { mode: net.spec.router.snatEnabled ? GatewayMode.NAT : GatewayMode.ROUTED } } : {}),
      };
      plan.networks.set(networkId, spec);
      // The groups its ports use, and the groups their rules name (their members are matched).
      const want = new Set<string>();
      for (const p of mine) if (!p.port.spec?.portSecurityDisabled) for (const g of p.port.spec?.securityGroupIds ?? []) want.add(g);
      const queue = [...want];
      while (queue.length > 0) {
        const g = groups.get(queue.pop()!);
        for (const r of g?.rules ?? []) if (r.remote.case === "remoteGroupId" && !want.has(r.remote.value)) want.add(r.remote.value), queue.push(r.remote.value);
      }
      for (const id of want) {
        const g = groups.get(id);
        if (g) plan.groups.set(id, { securityGroupId: id, rules: agentRules(g.rules), memberIps: [...(members.get(id) ?? [])].sort() });
      }
    }
  }
  return plans;
}

/**
 * A network's subnets as a node's agent takes them: each with its gateway, its DNS
 * servers (an additional subnet's own, else the network's; DHCPv4 hands out IPv4 servers
 * only), and DHCP where the node's DHCP port has an address in it (`service`: that port's
 * addresses; dnsmasq answers there).
 */
export function agentSubnets(net: VirtualNetwork, service: readonly string[]): NonNullable<NetworkSpecInit["subnets"]> {
  const plan = addressPlanOf(net);
  const spec = net.spec!;
  const v4 = (list: readonly string[]) => list.filter((d) => !d.includes(":"));
  return plan.subnets.map((sp, i) => {
    const extra = i === 0 ? undefined : spec.additionalSubnets[i - 1];
    const address = service.find((a) => subnetContaining({ subnets: [sp] }, ipv4ToInt(a) ?? -1)) ?? "";
    return {
      cidr: sp.subnet.cidr,
      gatewayIp: intToIpv4(sp.gateway),
      dnsServers: v4(extra && extra.dnsServers.length > 0 ? extra.dnsServers : spec.dnsServers),
      dhcpEnabled: address !== "",
      serviceAddress: address,
      leaseSeconds: spec.dhcp?.leaseSeconds ?? 0,
    };
  });
}

/**
 * A group's rules as the agent takes them: IPv4 only (the networks have IPv4 subnets: an
 * IPv6 rule matches no address a port has), and protocols the agent filters (any, TCP,
 * UDP, ICMP). An SCTP or numbered-protocol rule is not applied (traffic it would allow
 * stays denied) and is named by `unsupportedRules`.
 */
export function agentRules(rules: readonly SecurityGroupRule[]): MessageInitShape<typeof SecurityGroupRuleSchema>[] {
  const out: MessageInitShape<typeof SecurityGroupRuleSchema>[] = [];
  for (const r of rules) {
    if (r.ethertype === CpEtherType.IPV6 || r.protocol === SecurityGroupRuleProtocol.ICMPV6) continue;
    const protocol = PROTOCOLS[r.protocol];
    if (protocol === undefined) continue;
    out.push({
      direction: r.direction === SecurityGroupRuleDirection.INGRESS ? RuleDirection.INGRESS : RuleDirection.EGRESS,
      ethertype: EtherType.IPV4,
      protocol,
      portRangeMin: r.portRangeMin,
      portRangeMax: r.portRangeMax,
      ...(r.icmpType !== undefined ? { icmpType: r.icmpType } : {}),
      ...(r.icmpCode !== undefined ? { icmpCode: r.icmpCode } : {}),
      remoteIpPrefix: r.remote.case === "remoteCidr" ? r.remote.value : "",
      remoteGroupId: r.remote.case === "remoteGroupId" ? r.remote.value : "",
    });
  }
  return out;
}

/** The IPv4 rules the agent cannot apply (SCTP, a protocol number), as "rules[i]" paths. */
export function unsupportedRules(rules: readonly SecurityGroupRule[]): string[] {
  return rules.flatMap((r, i) => (r.ethertype !== CpEtherType.IPV6 && r.protocol !== SecurityGroupRuleProtocol.ICMPV6 && PROTOCOLS[r.protocol] === undefined ? [`rules[${i}]`] : []));
}

const PROTOCOLS: Partial<Record<SecurityGroupRuleProtocol, RuleProtocol>> = {
  [SecurityGroupRuleProtocol.UNSPECIFIED]: RuleProtocol.UNSPECIFIED,
  [SecurityGroupRuleProtocol.TCP]: RuleProtocol.TCP,
  [SecurityGroupRuleProtocol.UDP]: RuleProtocol.UDP,
  [SecurityGroupRuleProtocol.ICMP]: RuleProtocol.ICMP,
};

const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** A VM's name as its DHCP host name and DNS label: lowercased when it is a valid RFC 1123 label, else none. */
export function hostnameOf(name: string): string {
  const n = name.toLowerCase();
  return LABEL.test(n) ? n : "";
}
