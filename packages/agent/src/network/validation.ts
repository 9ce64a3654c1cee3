import { EtherType, GatewayMode, RuleDirection, RuleProtocol, type NetworkSpec, type SecurityGroupSpec } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { Violations, type FieldViolation } from "@quantix/core";
import { contains4, formatIp4, formatPrefix4, overlaps4, parseIp4, parsePrefix4, type Prefix4 } from "./ipv4.js";
import type { GatewayDesired, NetworkDesired, PortDesired, RemotePortDesired, RuleDesired, SecurityGroupDesired, SubnetDesired } from "./model.js";
import { gatewayMac, hostGatewayMac, UUID } from "./names.js";

/**
 * Validation of NetworkService requests into the canonical desired state (pure): every
 * violation at once, with its field path; nothing reaches the host unless this passes.
 */

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
/** RFC 1123 label: letters, digits, hyphens; no leading or trailing hyphen. */
const LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const DEFAULT_MTU = 1450;
const DEFAULT_LEASE = 43200;

/** The result of a validation: the desired state, or the violations. */
export type Checked<T> = { ok: true; value: T } | { ok: false; violations: FieldViolation[] };

export function uuid(v: Violations, field: string, value: string): boolean {
  return v.required(field, value !== "") && v.pattern(field, value, UUID, "must be a lowercase canonical UUID");
}

export function mac(v: Violations, field: string, value: string): string | undefined {
  const m = value.toLowerCase();
  if (!v.required(field, value !== "") || !v.pattern(field, m, MAC, "must be six colon-separated hex bytes, e.g. 52:54:00:12:34:56")) return undefined;
  if ((parseInt(m.slice(0, 2), 16) & 1) === 1 || m === "00:00:00:00:00:00") {
    v.add(field, "INVALID_FORMAT", "must be a unicast, non-zero address");
    return undefined;
  }
  return m;
}

export function ip(v: Violations, field: string, value: string): string | undefined {
  const n = parseIp4(value);
  if (n === undefined) {
    v.add(field, "INVALID_FORMAT", "must be an IPv4 address in dotted-quad form, e.g. 10.0.0.5");
    return undefined;
  }
  return formatIp4(n);
}

function label(v: Violations, field: string, value: string): string | undefined {
  if (value === "") return undefined;
  const l = value.toLowerCase();
  if (!LABEL.test(l)) {
    v.add(field, "INVALID_FORMAT", "must be an RFC 1123 label: 1-63 letters, digits or hyphens, not starting or ending with a hyphen");
    return undefined;
  }
  return l;
}

function domain(v: Violations, field: string, value: string): string | undefined {
  if (value === "") return undefined;
  const d = value.toLowerCase();
  if (d.length > 253 || !d.split(".").every((l) => LABEL.test(l))) {
    v.add(field, "INVALID_FORMAT", "must be an RFC 1123 domain name: dot-separated labels of letters, digits or hyphens");
    return undefined;
  }
  return d;
}

function many(v: Violations, field: string, n: number, max: number): void {
  if (n > max) v.add(field, "TOO_MANY", `at most ${max}, got ${n}`);
}

/** Validates ApplyNetwork's spec (under `spec`). */
export function checkNetworkSpec(spec: NetworkSpec | undefined, p = "spec"): Checked<NetworkDesired> {
  const v = new Violations();
  if (!v.required(p, spec !== undefined) || !spec) return { ok: false, violations: v.list };
  uuid(v, `${p}.network_id`, spec.networkId);
  v.range(`${p}.vni`, spec.vni, 1, 16777215);
  const mtu = spec.mtu === 0 ? DEFAULT_MTU : spec.mtu;
  if (spec.mtu !== 0) v.range(`${p}.mtu`, spec.mtu, 576, 9000);
  const local = v.required(`${p}.local_underlay_address`, spec.localUnderlayAddress !== "") ? ip(v, `${p}.local_underlay_address`, spec.localUnderlayAddress) : undefined;
  many(v, `${p}.peer_underlay_addresses`, spec.peerUnderlayAddresses.length, 1024);
  const peers = new Set<string>();
  spec.peerUnderlayAddresses.forEach((a, i) => {
    const x = ip(v, `${p}.peer_underlay_addresses[${i}]`, a);
    if (x !== undefined && x === local) v.add(`${p}.peer_underlay_addresses[${i}]`, "INVALID_VALUE", "must not be this host's own underlay address");
    if (x !== undefined) peers.add(x);
  });
  many(v, `${p}.subnets`, spec.subnets.length, 8);
  const prefixes: Prefix4[] = [];
  const subnets: SubnetDesired[] = [];
  spec.subnets.forEach((s, i) => {
    const f = `${p}.subnets[${i}]`;
    if (!v.required(`${f}.cidr`, s.cidr !== "")) return;
    const pre = parsePrefix4(s.cidr, { strict: true });
    if (!pre || pre.len > 30 || pre.len < 8) {
      v.add(`${f}.cidr`, "INVALID_FORMAT", "must be an IPv4 subnet a.b.c.d/len with no host bits set, len 8 to 30");
      return;
    }
    const clash = prefixes.findIndex((q) => overlaps4(q, pre));
    if (clash >= 0) v.add(`${f}.cidr`, "OVERLAP", `overlaps ${p}.subnets[${clash}]`);
    prefixes.push(pre);
    const inside = (field: string, value: string): string | undefined => {
      const x = ip(v, field, value);
      if (x === undefined) return undefined;
      const n = parseIp4(x)!;
      const bcast = (pre.net | (~(0xffffffff << (32 - pre.len)) >>> 0)) >>> 0;
      if (!contains4(pre, n) || n === pre.net || n === bcast) {
        v.add(field, "OUT_OF_RANGE", `must be a host address inside ${formatPrefix4(pre)}`);
        return undefined;
      }
      return x;
    };
    const gw = s.gatewayIp === "" ? undefined : inside(`${f}.gateway_ip`, s.gatewayIp);
    many(v, `${f}.dns_servers`, s.dnsServers.length, 8);
    const dns = s.dnsServers.map((d, j) => ip(v, `${f}.dns_servers[${j}]`, d)).filter((d): d is string => d !== undefined);
    let svc: string | undefined;
    if (s.serviceAddress !== "") svc = inside(`${f}.service_address`, s.serviceAddress);
    else if (s.dhcpEnabled) v.add(`${f}.service_address`, "REQUIRED", "is required when dhcp_enabled (dnsmasq answers there)");
    if (svc !== undefined && svc === gw) v.add(`${f}.service_address`, "INVALID_VALUE", "must not be the gateway's address");
    if (s.leaseSeconds !== 0) v.range(`${f}.lease_seconds`, s.leaseSeconds, 120, 31536000, "s");
    subnets.push({ cidr: formatPrefix4(pre), gatewayIp: gw, dnsServers: dns, dhcp: s.dhcpEnabled, serviceAddress: svc, leaseSeconds: s.leaseSeconds || DEFAULT_LEASE });
  });
  const inSubnet = (x: string) => prefixes.some((q) => contains4(q, parseIp4(x)!));
  many(v, `${p}.ports`, spec.ports.length, 4096);
  const portIds = new Set<string>();
  const shorts = new Set<string>();
  const usedIps = new Map<string, string>();
  const ports: PortDesired[] = [];
  spec.ports.forEach((port, i) => {
    const f = `${p}.ports[${i}]`;
    if (uuid(v, `${f}.port_id`, port.portId)) {
      const short = port.portId.replaceAll("-", "").slice(0, 12);
      if (portIds.has(port.portId)) v.add(`${f}.port_id`, "DUPLICATE", "appears twice");
      else if (shorts.has(short)) v.add(`${f}.port_id`, "DUPLICATE", "shares its first 12 hex digits (its TAP name) with another port");
      portIds.add(port.portId);
      shorts.add(short);
    }
    const m = mac(v, `${f}.mac_address`, port.macAddress);
    many(v, `${f}.fixed_ips`, port.fixedIps.length, 8);
    const fixed: string[] = [];
    port.fixedIps.forEach((a, j) => {
      const x = ip(v, `${f}.fixed_ips[${j}]`, a);
      if (x === undefined) return;
      if (!inSubnet(x)) v.add(`${f}.fixed_ips[${j}]`, "OUT_OF_RANGE", "must lie inside one of the network's subnets");
      else if (usedIps.has(x)) v.add(`${f}.fixed_ips[${j}]`, "DUPLICATE", `is already ${usedIps.get(x)!}'s`);
      else if (subnets.some((s) => s.serviceAddress === x || s.gatewayIp === x)) v.add(`${f}.fixed_ips[${j}]`, "INVALID_VALUE", "is a subnet's gateway or service address");
      usedIps.set(x, f);
      fixed.push(x);
    });
    many(v, `${f}.allowed_address_pairs`, port.allowedAddressPairs.length, 16);
    const pairs = port.allowedAddressPairs.flatMap((pair, j) => {
      const pre = parsePrefix4(pair.ipPrefix, { strict: true, bareOk: true });
      if (!pre) v.add(`${f}.allowed_address_pairs[${j}].ip_prefix`, "INVALID_FORMAT", "must be an IPv4 address or prefix with no host bits set");
      const pm = pair.macAddress === "" ? m : mac(v, `${f}.allowed_address_pairs[${j}].mac_address`, pair.macAddress);
      return pre && pm ? [{ ipPrefix: formatPrefix4(pre), mac: pm }] : [];
    });
    many(v, `${f}.security_group_ids`, port.securityGroupIds.length, 16);
    port.securityGroupIds.forEach((g, j) => uuid(v, `${f}.security_group_ids[${j}]`, g));
    const hostname = label(v, `${f}.hostname`, port.hostname);
    if (m) ports.push({ portId: port.portId, mac: m, fixedIps: fixed, pairs, securityGroupIds: [...new Set(port.securityGroupIds)], portSecurity: !port.portSecurityDisabled, hostname });
  });
  many(v, `${p}.remote_ports`, spec.remotePorts.length, 65536);
  const remotePorts: RemotePortDesired[] = [];
  spec.remotePorts.forEach((r, i) => {
    const f = `${p}.remote_ports[${i}]`;
    const m = mac(v, `${f}.mac_address`, r.macAddress);
    const u = v.required(`${f}.underlay_address`, r.underlayAddress !== "") ? ip(v, `${f}.underlay_address`, r.underlayAddress) : undefined;
    if (u !== undefined && !peers.has(u)) v.add(`${f}.underlay_address`, "INVALID_VALUE", "must be one of peer_underlay_addresses");
    many(v, `${f}.ip_addresses`, r.ipAddresses.length, 8);
    const ips = r.ipAddresses.map((a, j) => ip(v, `${f}.ip_addresses[${j}]`, a)).filter((x): x is string => x !== undefined);
    const hostname = label(v, `${f}.hostname`, r.hostname);
    if (m && u) remotePorts.push({ mac: m, underlay: u, ips, hostname });
  });
  const dnsDomain = domain(v, `${p}.dns_domain`, spec.dnsDomain);
  let gateway: GatewayDesired | undefined;
  if (spec.gateway) {
    const mode = spec.gateway.mode === GatewayMode.ROUTED ? "routed" : spec.gateway.mode === GatewayMode.NAT ? "nat" : undefined;
    if (!mode) v.add(`${p}.gateway.mode`, spec.gateway.mode === GatewayMode.UNSPECIFIED ? "REQUIRED" : "INVALID_VALUE", "must be ROUTED or NAT");
    else gateway = { mode };
    if (spec.subnets.length === 0) v.add(`${p}.subnets`, "REQUIRED", "a gateway needs a subnet with a gateway_ip");
    spec.subnets.forEach((s, i) => {
      if (s.gatewayIp === "") v.add(`${p}.subnets[${i}].gateway_ip`, "REQUIRED", "is required when spec.gateway is set: the host answers on it");
    });
    if (UUID.test(spec.networkId)) {
      // The gateway MAC, and each host's own MAC for the frames it routes across the tunnel.
      const reserved = new Map([[gatewayMac(spec.networkId), "the network's gateway MAC"]]);
      for (const u of [local, ...peers]) if (u !== undefined) reserved.set(hostGatewayMac(spec.networkId, u), `the gateway MAC of the host at ${u}`);
      const check = (field: string, value: string) => {
        const what = reserved.get(value.toLowerCase());
        if (what) v.add(field, "CONFLICT", `is ${what} (${value.toLowerCase()})`);
      };
      spec.ports.forEach((x, i) => check(`${p}.ports[${i}].mac_address`, x.macAddress));
      spec.remotePorts.forEach((x, i) => check(`${p}.remote_ports[${i}].mac_address`, x.macAddress));
    }
  }
  if (v.list.length > 0) return { ok: false, violations: v.list };
  return {
    ok: true,
    value: { networkId: spec.networkId, vni: spec.vni, mtu, localUnderlay: local!, peers: [...peers].sort(), subnets, ports: [...ports].sort((a, b) => a.portId.localeCompare(b.portId)), remotePorts, dnsDomain, gateway },
  };
}

/** Validates an IPv4 address list (members), under `field`. */
export function checkMemberIps(v: Violations, field: string, ips: readonly string[]): string[] {
  many(v, field, ips.length, 65536);
  return [...new Set(ips.map((a, i) => ip(v, `${field}[${i}]`, a)).filter((x): x is string => x !== undefined))].sort();
}

/** Validates ApplySecurityGroup's spec (under `spec`). */
export function checkSecurityGroupSpec(spec: SecurityGroupSpec | undefined, p = "spec"): Checked<SecurityGroupDesired> {
  const v = new Violations();
  if (!v.required(p, spec !== undefined) || !spec) return { ok: false, violations: v.list };
  uuid(v, `${p}.security_group_id`, spec.securityGroupId);
  many(v, `${p}.rules`, spec.rules.length, 256);
  const rules: RuleDesired[] = [];
  spec.rules.forEach((r, i) => {
    const f = `${p}.rules[${i}]`;
    const direction = r.direction === RuleDirection.INGRESS ? "ingress" : r.direction === RuleDirection.EGRESS ? "egress" : undefined;
    if (!direction) v.add(`${f}.direction`, r.direction === RuleDirection.UNSPECIFIED ? "REQUIRED" : "INVALID_VALUE", "must be INGRESS or EGRESS");
    if (r.ethertype !== EtherType.UNSPECIFIED && r.ethertype !== EtherType.IPV4) v.add(`${f}.ethertype`, "UNSUPPORTED", "only IPV4 is supported");
    const protocol = ({ [RuleProtocol.UNSPECIFIED]: "any", [RuleProtocol.TCP]: "tcp", [RuleProtocol.UDP]: "udp", [RuleProtocol.ICMP]: "icmp" } as const)[r.protocol as 0 | 1 | 2 | 3];
    if (!protocol) v.add(`${f}.protocol`, "INVALID_VALUE", "must be UNSPECIFIED (any), TCP, UDP or ICMP");
    let portMin: number | undefined;
    let portMax: number | undefined;
    if (r.portRangeMin !== 0 || r.portRangeMax !== 0) {
      if (protocol !== "tcp" && protocol !== "udp") v.add(`${f}.port_range_min`, "NOT_ALLOWED", "port ranges need protocol TCP or UDP");
      else if (r.portRangeMin === 0) v.add(`${f}.port_range_min`, "REQUIRED", "is required when port_range_max is set");
      else {
        const max = r.portRangeMax === 0 ? r.portRangeMin : r.portRangeMax;
        v.range(`${f}.port_range_min`, r.portRangeMin, 1, 65535);
        v.range(`${f}.port_range_max`, max, r.portRangeMin, 65535);
        portMin = r.portRangeMin;
        portMax = max;
      }
    }
    if (r.icmpType !== undefined) {
      if (protocol !== "icmp") v.add(`${f}.icmp_type`, "NOT_ALLOWED", "needs protocol ICMP");
      v.range(`${f}.icmp_type`, r.icmpType, 0, 255);
    }
    if (r.icmpCode !== undefined) {
      if (r.icmpType === undefined) v.add(`${f}.icmp_code`, "NOT_ALLOWED", "needs icmp_type");
      v.range(`${f}.icmp_code`, r.icmpCode, 0, 255);
    }
    let remotePrefix: string | undefined;
    if (r.remoteIpPrefix !== "") {
      const pre = parsePrefix4(r.remoteIpPrefix, { strict: true, bareOk: true });
      if (!pre) v.add(`${f}.remote_ip_prefix`, "INVALID_FORMAT", "must be an IPv4 prefix a.b.c.d/len with no host bits set");
      else remotePrefix = formatPrefix4(pre);
      if (r.remoteGroupId !== "") v.add(`${f}.remote_group_id`, "NOT_ALLOWED", "not with remote_ip_prefix");
    }
    if (r.remoteGroupId !== "") uuid(v, `${f}.remote_group_id`, r.remoteGroupId);
    if (direction && protocol) rules.push({ direction, protocol, portMin, portMax, icmpType: r.icmpType, icmpCode: r.icmpCode, remotePrefix, remoteGroupId: r.remoteGroupId || undefined });
  });
  const members = checkMemberIps(v, `${p}.member_ips`, spec.memberIps);
  if (v.list.length > 0) return { ok: false, violations: v.list };
  return { ok: true, value: { securityGroupId: spec.securityGroupId, rules, members } };
}
