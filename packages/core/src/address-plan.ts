import ipaddr from "ipaddr.js";
import { create } from "@bufbuild/protobuf";
import { AllocationPoolSchema, DhcpConfigSchema, type Subnet, type VirtualNetwork, type VirtualNetworkSpec } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { intToIpv4, ipv4Overlap, ipv4ToInt, parseIpv4Cidr, type Ipv4Subnet } from "./ipv4.js";
import type { Violations } from "./violations.js";

/**
 * A network's IPv4 subnets as IPAM sees them: the first one (spec.cidr, gateway_ip, the
 * DHCP range as its one pool) and the additional ones (spec.additional_subnets), each
 * with its gateway and allocation pools as numbers. Checking a network's subnets
 * (`checkSubnets`) fills in their defaults, so a stored network's plan reads them as
 * they are.
 */

/** Limits of a network's subnets. */
export const SUBNET_LIMITS = {
  prefixMin: 8,
  prefixMax: 30,
  /** The agent's limit is 8 subnets per network: the first and 7 more. */
  additionalMax: 7,
  poolsMax: 16,
  dnsServersMax: 5,
  hostRoutesMax: 32,
  leaseMin: 120,
  leaseMax: 31_536_000,
  leaseDefault: 86_400,
} as const;

/** A range of addresses, both ends included, as numbers. */
export interface Pool {
  readonly start: number;
  readonly end: number;
}

/** One subnet: where it is in the spec (for messages), its gateway and pools. */
export interface SubnetPlan {
  readonly subnet: Ipv4Subnet;
  readonly gateway: number;
  readonly pools: readonly Pool[];
  /** The spec path of the subnet's cidr: "spec.cidr" or "spec.additional_subnets[i].cidr". */
  readonly field: string;
}

/** What IPAM needs of a network: its subnets in order (the first one first). */
export interface AddressPlan {
  readonly subnets: readonly SubnetPlan[];
}

/** The network's first subnet (its spec checked and completed). */
export function subnetOf(n: VirtualNetwork): Ipv4Subnet {
  const s = parseIpv4Cidr(n.spec?.cidr ?? "");
  if (typeof s === "string") throw new Error(`network ${n.id}: ${s}`);
  return s;
}

/** The address plan of a stored (checked, completed) network. */
export function addressPlanOf(n: VirtualNetwork): AddressPlan {
  const first = subnetOf(n);
  const num = (s: string | undefined, d: number) => ipv4ToInt(s ?? "") ?? d;
  const out: SubnetPlan[] = [
    {
      subnet: first,
      gateway: num(n.spec?.gatewayIp, first.firstHost),
      pools: [{ start: num(n.spec?.dhcp?.rangeStart, first.firstHost), end: num(n.spec?.dhcp?.rangeEnd, first.lastHost) }],
      field: "spec.cidr",
    },
  ];
  (n.spec?.additionalSubnets ?? []).forEach((s, i) => {
    const subnet = parseIpv4Cidr(s.cidr);
    if (typeof subnet === "string") throw new Error(`network ${n.id}: additional_subnets[${i}]: ${subnet}`);
    const gateway = num(s.gatewayIp, subnet.firstHost);
    const pools = s.allocationPools.length > 0 ? s.allocationPools.map((p) => ({ start: num(p.start, subnet.firstHost), end: num(p.end, subnet.lastHost) })) : defaultPools(subnet, gateway);
    out.push({ subnet, gateway, pools, field: `spec.additional_subnets[${i}].cidr` });
  });
  return { subnets: out };
}

/** The whole subnet but the gateway, as one or two pools. */
function defaultPools(s: Ipv4Subnet, gateway: number): Pool[] {
  if (gateway < s.firstHost || gateway > s.lastHost) return [{ start: s.firstHost, end: s.lastHost }];
  return [
    { start: s.firstHost, end: gateway - 1 },
    { start: gateway + 1, end: s.lastHost },
  ].filter((p) => p.start <= p.end);
}

/** The subnet of the plan that contains address `a` (a number), if any. */
export function subnetContaining(p: AddressPlan, a: number): SubnetPlan | undefined {
  return p.subnets.find((s) => a >= s.subnet.network && a <= s.subnet.broadcast);
}

/** How many addresses ports may hold: every subnet's hosts but its gateway. */
export function assignableCount(p: AddressPlan): number {
  return p.subnets.reduce((n, s) => n + s.subnet.lastHost - s.subnet.firstHost, 0);
}

/** How many gateways the plan has (one per subnet: they count as allocated). */
export function gatewayCount(p: AddressPlan): number {
  return p.subnets.length;
}

/** The plan's subnets, as "10.0.0.0/24, 10.0.1.0/24". */
export function cidrList(p: AddressPlan): string {
  return p.subnets.map((s) => s.subnet.cidr).join(", ");
}

/**
 * Why `address` cannot be a port's fixed IP on the network (outside every subnet, a
 * subnet's network, broadcast or gateway address), or undefined when it can be.
 */
export function unusableAddress(p: AddressPlan, address: string): string | undefined {
  const a = ipv4ToInt(address);
  if (a === undefined) return `must be an IPv4 address, got ${JSON.stringify(address)}`;
  const s = subnetContaining(p, a);
  if (!s) return p.subnets.length === 1 ? `${address} is outside the network's subnet ${p.subnets[0]!.subnet.cidr}` : `${address} is outside the network's subnets ${cidrList(p)}`;
  if (a === s.subnet.network || a === s.subnet.broadcast) return `${address} is the subnet's ${a === s.subnet.network ? "network" : "broadcast"} address`;
  if (a === s.gateway) return `${address} is the ${p.subnets.length === 1 ? "network's" : `subnet ${s.subnet.cidr}'s`} gateway`;
  return undefined;
}

/** Whether `address` lies inside one of the pools of its subnet. */
export function inPools(p: AddressPlan, address: string): boolean {
  const a = ipv4ToInt(address);
  const s = a === undefined ? undefined : subnetContaining(p, a);
  return s !== undefined && s.pools.some((x) => a! >= x.start && a! <= x.end);
}

/** Whether `s` is an IPv4 dotted quad or an IPv6 address. */
export function isIp(s: string): boolean {
  return ipaddr.IPv4.isValidFourPartDecimal(s) || (s.includes(":") && ipaddr.IPv6.isValid(s));
}

/** Checks a list of DNS servers (at most 5 IP addresses, none twice) at `field`. */
export function checkDnsList(v: Violations, field: string, list: readonly string[]): void {
  if (list.length > SUBNET_LIMITS.dnsServersMax) v.add(field, "TOO_MANY", `at most ${SUBNET_LIMITS.dnsServersMax}, got ${list.length}`);
  const seen = new Set<string>();
  list.forEach((s, i) => {
    if (!isIp(s)) v.add(`${field}[${i}]`, "INVALID_FORMAT", `must be an IP address, got ${JSON.stringify(s)}`);
    else if (seen.has(s)) v.add(`${field}[${i}]`, "DUPLICATE", `${s} is listed twice`);
    seen.add(s);
  });
}

/** An address of `subnet` usable by a host (not its network or broadcast address), checked at `field`. */
function insideOf(v: Violations, subnet: Ipv4Subnet, field: string, s: string): number | undefined {
  const a = ipv4ToInt(s);
  if (a === undefined) v.add(field, "INVALID_FORMAT", `must be an IPv4 address, got ${JSON.stringify(s)}`);
  else if (a < subnet.network || a > subnet.broadcast) v.add(field, "OUT_OF_RANGE", `${s} is outside the subnet ${subnet.cidr}`);
  else if (a === subnet.network || a === subnet.broadcast) v.add(field, "OUT_OF_RANGE", `${s} is the subnet's ${a === subnet.network ? "network" : "broadcast"} address`);
  else return a;
  return undefined;
}

/**
 * Checks a network's subnets and completes them: the first one (spec.cidr, gateway_ip,
 * the DHCP range and settings), the additional ones (each its cidr, gateway, pools and
 * DNS servers), no two overlapping, and the DHCP host routes (each next hop inside one of
 * the subnets). Defaults are filled in, so that reads return the effective values.
 */
export function checkSubnets(v: Violations, spec: VirtualNetworkSpec): void {
  if (!v.required("spec.cidr", spec.cidr !== "", 'is required: the IPv4 subnet, e.g. "10.0.0.0/24"')) return;
  const first = parseIpv4Cidr(spec.cidr, SUBNET_LIMITS.prefixMin, SUBNET_LIMITS.prefixMax);
  if (typeof first === "string") {
    v.add("spec.cidr", "INVALID_FORMAT", first);
    return;
  }
  checkFirstSubnet(v, spec, first);
  const all: { subnet: Ipv4Subnet; field: string }[] = [{ subnet: first, field: "spec.cidr" }];
  if (spec.additionalSubnets.length > SUBNET_LIMITS.additionalMax) {
    v.add("spec.additional_subnets", "TOO_MANY", `at most ${SUBNET_LIMITS.additionalMax} (8 subnets per network with the first), got ${spec.additionalSubnets.length}`);
  }
  spec.additionalSubnets.forEach((s, i) => {
    const subnet = checkAdditional(v, `spec.additional_subnets[${i}]`, s);
    if (!subnet) return;
    const clash = all.find((o) => ipv4Overlap(o.subnet, subnet));
    if (clash) v.add(`spec.additional_subnets[${i}].cidr`, "OVERLAP", `${subnet.cidr} overlaps ${clash.subnet.cidr} (${clash.field}): a network's subnets are disjoint`);
    else all.push({ subnet, field: `spec.additional_subnets[${i}].cidr` });
  });
  const dhcp = spec.dhcp!;
  if (dhcp.hostRoutes.length > SUBNET_LIMITS.hostRoutesMax) v.add("spec.dhcp.host_routes", "TOO_MANY", `at most ${SUBNET_LIMITS.hostRoutesMax}, got ${dhcp.hostRoutes.length}`);
  dhcp.hostRoutes.forEach((r, i) => {
    const dest = parseIpv4Cidr(r.destinationCidr, 0, 32);
    if (typeof dest === "string") v.add(`spec.dhcp.host_routes[${i}].destination_cidr`, "INVALID_FORMAT", dest);
    const hop = ipv4ToInt(r.nextHopIp);
    const field = `spec.dhcp.host_routes[${i}].next_hop_ip`;
    if (hop === undefined) v.add(field, "INVALID_FORMAT", `must be an IPv4 address, got ${JSON.stringify(r.nextHopIp)}`);
    else {
      const home = all.find((o) => hop >= o.subnet.network && hop <= o.subnet.broadcast);
      if (!home) v.add(field, "OUT_OF_RANGE", `${r.nextHopIp} is outside the network's subnets ${all.map((o) => o.subnet.cidr).join(", ")}`);
      else insideOf(v, home.subnet, field, r.nextHopIp);
    }
  });
}

/** The first subnet's gateway, DHCP settings and range; fills their defaults. */
function checkFirstSubnet(v: Violations, spec: VirtualNetworkSpec, subnet: Ipv4Subnet): void {
  if (spec.gatewayIp === "") spec.gatewayIp = intToIpv4(subnet.firstHost);
  const gw = insideOf(v, subnet, "spec.gateway_ip", spec.gatewayIp);
  const dhcp = (spec.dhcp ??= create(DhcpConfigSchema, { enabled: true }));
  if (dhcp.leaseSeconds === 0) dhcp.leaseSeconds = SUBNET_LIMITS.leaseDefault;
  else v.range("spec.dhcp.lease_seconds", dhcp.leaseSeconds, SUBNET_LIMITS.leaseMin, SUBNET_LIMITS.leaseMax, "s");
  const given = dhcp.rangeStart !== "" || dhcp.rangeEnd !== "";
  if (dhcp.rangeStart === "") dhcp.rangeStart = intToIpv4(gw === subnet.firstHost ? subnet.firstHost + 1 : subnet.firstHost);
  if (dhcp.rangeEnd === "") dhcp.rangeEnd = intToIpv4(gw === subnet.lastHost ? subnet.lastHost - 1 : subnet.lastHost);
  const start = insideOf(v, subnet, "spec.dhcp.range_start", dhcp.rangeStart);
  const end = insideOf(v, subnet, "spec.dhcp.range_end", dhcp.rangeEnd);
  if (start !== undefined && end !== undefined) {
    if (start > end) v.add("spec.dhcp.range_end", "OUT_OF_RANGE", `must not come before range_start (${dhcp.rangeStart})`);
    else if (given && gw !== undefined && gw >= start && gw <= end) v.add("spec.dhcp.range_start", "CONFLICT", `the range ${dhcp.rangeStart}-${dhcp.rangeEnd} contains the gateway ${spec.gatewayIp}`);
  }
  if (dhcp.ipv6Mode !== 0) v.add("spec.dhcp.ipv6_mode", "NOT_SUPPORTED", "IPv6 subnets are not built yet");
}

/** An additional subnet: its cidr, gateway, pools (default: the whole subnet but the gateway) and DNS servers; its parsed cidr when valid. */
function checkAdditional(v: Violations, f: string, s: Subnet): Ipv4Subnet | undefined {
  if (!v.required(`${f}.cidr`, s.cidr !== "", 'is required: an IPv4 subnet, e.g. "10.0.1.0/24"')) return undefined;
  const subnet = parseIpv4Cidr(s.cidr, SUBNET_LIMITS.prefixMin, SUBNET_LIMITS.prefixMax);
  if (typeof subnet === "string") {
    v.add(`${f}.cidr`, "INVALID_FORMAT", subnet);
    return undefined;
  }
  if (s.gatewayIp === "") s.gatewayIp = intToIpv4(subnet.firstHost);
  const gw = insideOf(v, subnet, `${f}.gateway_ip`, s.gatewayIp);
  if (s.allocationPools.length > SUBNET_LIMITS.poolsMax) v.add(`${f}.allocation_pools`, "TOO_MANY", `at most ${SUBNET_LIMITS.poolsMax}, got ${s.allocationPools.length}`);
  if (s.allocationPools.length === 0 && gw !== undefined) {
    s.allocationPools = defaultPools(subnet, gw).map((p) => create(AllocationPoolSchema, { start: intToIpv4(p.start), end: intToIpv4(p.end) }));
  }
  const seen: { pool: Pool; i: number }[] = [];
  s.allocationPools.forEach((p, i) => {
    const pf = `${f}.allocation_pools[${i}]`;
    const start = insideOf(v, subnet, `${pf}.start`, p.start);
    const end = insideOf(v, subnet, `${pf}.end`, p.end);
    if (start === undefined || end === undefined) return;
    if (start > end) return v.add(`${pf}.end`, "OUT_OF_RANGE", `must not come before start (${p.start})`);
    if (gw !== undefined && gw >= start && gw <= end) return v.add(`${pf}.start`, "CONFLICT", `the pool ${p.start}-${p.end} contains the subnet's gateway ${s.gatewayIp}`);
    const clash = seen.find((o) => start <= o.pool.end && o.pool.start <= end);
    if (clash) return v.add(`${pf}.start`, "OVERLAP", `the pool ${p.start}-${p.end} overlaps allocation_pools[${clash.i}]`);
    seen.push({ pool: { start, end }, i });
  });
  checkDnsList(v, `${f}.dns_servers`, s.dnsServers);
  return subnet;
}
