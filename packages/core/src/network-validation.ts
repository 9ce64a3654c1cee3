import ipaddr from "ipaddr.js";
import { create } from "@bufbuild/protobuf";
import { DhcpConfigSchema, NetworkType, type RouterConfig, type VirtualNetwork } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import type { PortSpec } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { EtherType, SecurityGroupRuleDirection, SecurityGroupRuleProtocol, type SecurityGroupRule } from "@quantix/api/gen/Quantixkvm/network/v1/security_group_pb.js";
import { checkDnsList, checkSubnets, isIp, SUBNET_LIMITS } from "./address-plan.js";
import { ipv4ToInt, parseIpv4Cidr } from "./ipv4.js";
import { CONTROL_CHARS, ID_DESCRIPTION, ID_PATTERN, NAME_PATTERN, Violations } from "./violations.js";

/** Limits of networks, ports and security groups (the contract's, and this control plane's own where it sets none). */
export const NETWORK_LIMITS = {
  ...SUBNET_LIMITS,
  networkNameMax: 63,
  mtuMin: 576,
  mtuMax: 9000,
  /** VXLAN and ISOLATED: room for the 50-byte overlay header on a 1500-byte underlay. */
  overlayMtu: 1450,
  /** EXTERNAL (a host interface's own segment). */
  uplinkMtu: 1500,
  vniMax: 16_777_215,
  dnsDomainMax: 253,
  portNameMax: 255,
  fixedIpsMax: 16,
  securityGroupsPerPortMax: 16,
  addressPairsMax: 10,
  groupNameMax: 255,
  rulesMax: 500,
  rulesPerCallMax: 100,
  ruleDescriptionMax: 255,
} as const;

/** Port names: a letter or digit, then letters, digits, '_', '.' or '-' (may be empty). */
export const PORT_NAME_PATTERN = /^[a-zA-Z0-9][a-zA-Z0-9_.-]*$/;
/** MAC addresses as the contract writes them: six colon-separated lowercase hex bytes. */
export const MAC_PATTERN = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const DNS_LABEL = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

/** An IPv4 or IPv6 subnet in CIDR notation with its host bits zero, and its version; a string says what is wrong. */
function parseAnyCidr(s: string): { version: 4 | 6 } | string {
  if (!s.includes("/")) return `must be a subnet in CIDR notation, e.g. "203.0.113.0/24", got "${s}"`;
  if (/^[0-9.]+\//.test(s)) {
    const v4 = parseIpv4Cidr(s);
    return typeof v4 === "string" ? v4 : { version: 4 };
  }
  try {
    const [addr, prefix] = ipaddr.IPv6.parseCIDR(s);
    const net = ipaddr.IPv6.networkAddressFromCIDR(s);
    if (net.toNormalizedString() !== addr.toNormalizedString()) return `has host bits set: the subnet is "${net.toString()}/${prefix}"`;
    return { version: 6 };
  } catch {
    return `must be a subnet in CIDR notation, e.g. "203.0.113.0/24" or "2001:db8::/64", got "${s}"`;
  }
}

/** Network types this control plane builds: overlays (no uplink to map yet). */
export const SERVED_NETWORK_TYPES: ReadonlySet<NetworkType> = new Set([NetworkType.VXLAN, NetworkType.ISOLATED]);

/** The node network feature (agent capability) each network type needs. */
export const NETWORK_TYPE_FEATURE: Readonly<Record<NetworkType, string>> = {
  [NetworkType.UNSPECIFIED]: "",
  [NetworkType.VXLAN]: "network-vxlan",
  [NetworkType.ISOLATED]: "network-vxlan",
  [NetworkType.VLAN]: "network-vlan",
  [NetworkType.BRIDGE]: "network-uplink",
  [NetworkType.EXTERNAL]: "network-uplink",
};

/**
 * Checks a network as a user writes it (create, and update with `current`) and completes
 * it: the gateway, the DHCP settings and range, the MTU and the DNS domain get their
 * defaults, so reads return the effective values. Fields fixed after creation may not
 * change. The VNI is the service's (it claims one).
 */
export function checkVirtualNetwork(v: Violations, n: VirtualNetwork, current?: VirtualNetwork): void {
  if (v.required("name", n.name !== "") && v.length("name", n.name, 1, NETWORK_LIMITS.networkNameMax)) {
    v.pattern("name", n.name, NAME_PATTERN, "must start with a letter and contain only letters, digits, '-' and '_'");
  }
  const spec = n.spec;
  if (!spec) return v.add("spec", "REQUIRED", "is required");
  if (current?.spec) {
    const was = current.spec;
    const fixed: [string, unknown, unknown][] = [
      ["spec.type", spec.type, was.type],
      ["spec.cidr", spec.cidr, was.cidr],
      ["spec.ipv6_cidr", spec.ipv6Cidr, was.ipv6Cidr],
      ["spec.vni", spec.vni, was.vni],
      ["spec.vlan_id", spec.vlanId, was.vlanId],
      ["spec.physical_network", spec.physicalNetwork, was.physicalNetwork],
    ];
    for (const [field, now, before] of fixed) if (now !== before) v.add(field, "IMMUTABLE", `is fixed after creation (was ${JSON.stringify(before)})`);
  }
  if (v.required("spec.type", spec.type !== NetworkType.UNSPECIFIED, "is required: VXLAN or ISOLATED")) {
    if (NetworkType[spec.type] === undefined) v.add("spec.type", "INVALID_ENUM", `unknown value ${spec.type}`);
    else if (!SERVED_NETWORK_TYPES.has(spec.type) && spec.type !== NetworkType.EXTERNAL) {
      v.add("spec.type", "NOT_SUPPORTED", `${NetworkType[spec.type]} networks need an uplink mapping on the nodes, which is not built yet: use VXLAN or ISOLATED`);
    }
  }
  if (spec.vlanId !== 0) v.add("spec.vlan_id", "NOT_SUPPORTED", "is for VLAN networks, which are not built yet");
  const external = spec.type === NetworkType.EXTERNAL;
  if (external) checkExternal(v, spec);
  else if (spec.physicalNetwork !== "") v.add("spec.physical_network", "NOT_SUPPORTED", "is for BRIDGE, VLAN and EXTERNAL networks: of these only EXTERNAL is built");
  if (spec.ipv6Cidr !== "") v.add("spec.ipv6_cidr", "NOT_SUPPORTED", "IPv6 subnets are not built yet: networks are IPv4");
  if (spec.ipv6GatewayIp !== "") v.add("spec.ipv6_gateway_ip", "NOT_SUPPORTED", "IPv6 subnets are not built yet: networks are IPv4");
  if (spec.router) checkRouter(v, spec.router);
  if (spec.shared) v.add("spec.shared", "NOT_SUPPORTED", "shared networks are not built yet: a network's ports are in its project");
  if (spec.vni > NETWORK_LIMITS.vniMax) v.add("spec.vni", "OUT_OF_RANGE", `must be between 1 and ${NETWORK_LIMITS.vniMax}, or 0 to allocate one; got ${spec.vni}`);
  if (spec.mtu === 0) spec.mtu = external ? NETWORK_LIMITS.uplinkMtu : NETWORK_LIMITS.overlayMtu;
  else v.range("spec.mtu", spec.mtu, NETWORK_LIMITS.mtuMin, NETWORK_LIMITS.mtuMax, "bytes");
  checkDnsList(v, "spec.dns_servers", spec.dnsServers);
  if (spec.dnsDomain === "") spec.dnsDomain = `${n.name.toLowerCase()}.quantix.internal`;
  checkDnsDomain(v, spec.dnsDomain);
  checkSubnets(v, spec);
}

/** Physical network names: the agents' VMCP_NETWORK_PHYSICAL_NETWORKS keys. */
export const PHYSICAL_NETWORK_PATTERN = /^[a-z][a-z0-9-]{0,31}$/;

/**
 * An EXTERNAL network: the upstream segment routers and floating IPs take their
 * addresses from. It names its `physical_network` (which host interface each node maps
 * it to), has no VNI, no router and no DHCP (its DHCP range is the pool of addresses the
 * control plane hands out; default DHCP off).
 */
function checkExternal(v: Violations, spec: VirtualNetwork["spec"] & object): void {
  if (v.required("spec.physical_network", spec.physicalNetwork !== "", 'is required for an EXTERNAL network: the name each node maps to a host interface (VMCP_NETWORK_PHYSICAL_NETWORKS), e.g. "ext"')) {
    v.pattern("spec.physical_network", spec.physicalNetwork, PHYSICAL_NETWORK_PATTERN, "must be a lowercase letter, then lowercase letters, digits or '-', at most 32 characters");
  }
  if (spec.vni !== 0) v.add("spec.vni", "CONFLICT", "EXTERNAL networks are no overlay: leave it 0");
  if (spec.router) v.add("spec.router", "CONFLICT", "an EXTERNAL network is what routers uplink to: it has no router of its own");
  spec.dhcp ??= create(DhcpConfigSchema, { enabled: false });
  if (spec.dhcp.enabled) v.add("spec.dhcp.enabled", "CONFLICT", "EXTERNAL networks serve no DHCP: their range is the pool routers and floating IPs take addresses from");
}

/**
 * A router's own fields: a central router's external network is a well-formed id (that
 * it exists and is EXTERNAL is the service's check) and its external IP an IPv4 address
 * (its place in the external network's pools too); a distributed gateway has no external
 * IP. Static routes are not built: refused naming the field.
 */
function checkRouter(v: Violations, r: RouterConfig): void {
  if (r.externalNetworkId !== "") v.pattern("spec.router.external_network_id", r.externalNetworkId, ID_PATTERN, ID_DESCRIPTION);
  if (r.routes.length > 0) v.add("spec.router.routes", "NOT_SUPPORTED", "static routes on the router are not built yet");
  if (r.externalIp !== "") {
    if (r.externalNetworkId === "") v.add("spec.router.external_ip", "CONFLICT", "needs spec.router.external_network_id: a router that uplinks to each node's own stack has no external address of its own (with snat_enabled, guests leave behind their node's address)");
    else if (ipv4ToInt(r.externalIp) === undefined) v.add("spec.router.external_ip", "INVALID_FORMAT", `must be an IPv4 address, got ${JSON.stringify(r.externalIp)}`);
  }
}

function checkDnsDomain(v: Violations, d: string): void {
  if (d.length > NETWORK_LIMITS.dnsDomainMax || !d.split(".").every((l) => DNS_LABEL.test(l))) {
    v.add("spec.dns_domain", "INVALID_FORMAT", `must be a DNS domain of lowercase labels (letters, digits, '-') separated by '.', at most ${NETWORK_LIMITS.dnsDomainMax} characters`);
  }
}

/** Checks the parts of a port's spec that need no other object: formats, limits, combinations. */
export function checkPortSpec(v: Violations, name: string, spec: PortSpec | undefined): void {
  if (name !== "" && v.length("name", name, 1, NETWORK_LIMITS.portNameMax)) {
    v.pattern("name", name, PORT_NAME_PATTERN, "must start with a letter or digit and contain only letters, digits, '_', '.' and '-'");
  }
  if (!spec) return v.add("spec", "REQUIRED", "is required");
  if (v.required("spec.network_id", spec.networkId !== "")) v.pattern("spec.network_id", spec.networkId, ID_PATTERN, ID_DESCRIPTION);
  if (spec.macAddress !== "") checkMac(v, "spec.mac_address", spec.macAddress);
  if (spec.fixedIps.length > NETWORK_LIMITS.fixedIpsMax) v.add("spec.fixed_ips", "TOO_MANY", `at most ${NETWORK_LIMITS.fixedIpsMax}, got ${spec.fixedIps.length}`);
  const ips = new Set<string>();
  spec.fixedIps.forEach((ip, i) => {
    if (ipaddr.IPv4.isValidFourPartDecimal(ip)) {
      if (ips.has(ip)) v.add(`spec.fixed_ips[${i}]`, "DUPLICATE", `${ip} is listed twice`);
      ips.add(ip);
    } else if (ip.includes(":") && ipaddr.IPv6.isValid(ip)) v.add(`spec.fixed_ips[${i}]`, "NOT_SUPPORTED", "IPv6 subnets are not built yet: fixed IPs are IPv4");
    else v.add(`spec.fixed_ips[${i}]`, "INVALID_FORMAT", `must be an IPv4 address, got ${JSON.stringify(ip)}`);
  });
  if (spec.securityGroupIds.length > NETWORK_LIMITS.securityGroupsPerPortMax) v.add("spec.security_group_ids", "TOO_MANY", `at most ${NETWORK_LIMITS.securityGroupsPerPortMax}, got ${spec.securityGroupIds.length}`);
  const groups = new Set<string>();
  spec.securityGroupIds.forEach((id, i) => {
    if (v.pattern(`spec.security_group_ids[${i}]`, id, ID_PATTERN, ID_DESCRIPTION) && groups.has(id)) v.add(`spec.security_group_ids[${i}]`, "DUPLICATE", `'${id}' is listed twice`);
    groups.add(id);
  });
  if (spec.ownerVmId !== "") v.add("spec.owner_vm_id", "OUTPUT_ONLY", "is set by CreateVM for the ports it makes for a VM's NICs, never by a client");
  // Not applied by the data plane yet: refused rather than stored and ignored.
  if (spec.disabled) v.add("spec.disabled", "NOT_SUPPORTED", "administratively disabling a port is not built yet: delete the port, or stop the VM");
  if (spec.maxIngressMbps !== 0) v.add("spec.max_ingress_mbps", "NOT_SUPPORTED", "bandwidth limits are not built yet: leave 0 (unlimited)");
  if (spec.maxEgressMbps !== 0) v.add("spec.max_egress_mbps", "NOT_SUPPORTED", "bandwidth limits are not built yet: leave 0 (unlimited)");
  if (spec.portSecurityDisabled && spec.securityGroupIds.length > 0) v.add("spec.security_group_ids", "CONFLICT", "must be empty when port_security_disabled is set (no filtering applies)");
  if (spec.allowedAddressPairs.length > NETWORK_LIMITS.addressPairsMax) v.add("spec.allowed_address_pairs", "TOO_MANY", `at most ${NETWORK_LIMITS.addressPairsMax}, got ${spec.allowedAddressPairs.length}`);
  spec.allowedAddressPairs.forEach((p, i) => {
    const f = `spec.allowed_address_pairs[${i}]`;
    if (!isIp(p.ipAddress)) {
      const c = p.ipAddress.includes("/") ? parseAnyCidr(p.ipAddress) : "must be an IP address or a subnet in CIDR notation";
      if (typeof c === "string") v.add(`${f}.ip_address`, "INVALID_FORMAT", `${c} (got ${JSON.stringify(p.ipAddress)})`);
    }
    if (p.macAddress !== "") checkMac(v, `${f}.mac_address`, p.macAddress);
  });
}

/** A unicast MAC address in the contract's form (not all zeros). */
export function checkMac(v: Violations, field: string, mac: string): void {
  if (!v.pattern(field, mac, MAC_PATTERN, `must be six colon-separated lowercase hex bytes, e.g. "52:54:00:12:34:56", got ${JSON.stringify(mac)}`)) return;
  const first = parseInt(mac.slice(0, 2), 16);
  if (first & 1) v.add(field, "INVALID_FORMAT", `${mac} is a multicast address: a port's MAC is unicast`);
  else if (mac === "00:00:00:00:00:00") v.add(field, "INVALID_FORMAT", "must not be all zeros");
}

/** A MAC address from `random` (3 bytes): QEMU's locally administered unicast prefix 52:54:00. */
export function macFromBytes(random: Uint8Array): string {
  return ["52", "54", "00", ...[...random.slice(0, 3)].map((b) => b.toString(16).padStart(2, "0"))].join(":");
}

const PORTED = new Set([SecurityGroupRuleProtocol.TCP, SecurityGroupRuleProtocol.UDP, SecurityGroupRuleProtocol.SCTP]);

/**
 * Checks one security group rule (`field` its path) and completes it: the ether type
 * from remote_cidr (or IPv4), port_range_max from port_range_min. The remote group's
 * existence is the service's.
 */
export function checkRule(v: Violations, field: string, r: SecurityGroupRule): void {
  if (r.direction === SecurityGroupRuleDirection.UNSPECIFIED) v.add(`${field}.direction`, "REQUIRED", "is required: INGRESS or EGRESS");
  else v.enumValue(`${field}.direction`, r.direction, [SecurityGroupRuleDirection.INGRESS, SecurityGroupRuleDirection.EGRESS]);
  v.enumValue(`${field}.ethertype`, r.ethertype, [EtherType.IPV4, EtherType.IPV6]);
  v.enumValue(`${field}.protocol`, r.protocol, Object.values(SecurityGroupRuleProtocol).filter((x): x is number => typeof x === "number" && x !== 0));
  if (r.description.length > NETWORK_LIMITS.ruleDescriptionMax || CONTROL_CHARS.test(r.description)) v.add(`${field}.description`, "INVALID_FORMAT", `at most ${NETWORK_LIMITS.ruleDescriptionMax} characters, no control characters`);
  const remote = r.remote;
  if (remote.case === "remoteCidr") {
    const c = parseAnyCidr(remote.value);
    if (typeof c === "string") v.add(`${field}.remote_cidr`, "INVALID_FORMAT", c);
    else {
      const et = c.version === 4 ? EtherType.IPV4 : EtherType.IPV6;
      if (r.ethertype === EtherType.UNSPECIFIED) r.ethertype = et;
      else if (r.ethertype !== et) v.add(`${field}.remote_cidr`, "CONFLICT", `is IPv${c.version}, the rule's ethertype ${EtherType[r.ethertype]}`);
    }
  } else if (remote.case === "remoteGroupId") {
    v.pattern(`${field}.remote_group_id`, remote.value, ID_PATTERN, ID_DESCRIPTION);
  }
  if (r.ethertype === EtherType.UNSPECIFIED) r.ethertype = EtherType.IPV4;
  if (r.protocol === SecurityGroupRuleProtocol.OTHER) v.range(`${field}.protocol_number`, r.protocolNumber, 0, 255);
  else if (r.protocolNumber !== 0) v.add(`${field}.protocol_number`, "CONFLICT", "is only for protocol OTHER");
  if (PORTED.has(r.protocol)) {
    if (r.portRangeMin === 0 && r.portRangeMax !== 0) v.add(`${field}.port_range_min`, "REQUIRED", "is required with port_range_max");
    else if (r.portRangeMin !== 0) {
      v.range(`${field}.port_range_min`, r.portRangeMin, 1, 65535);
      if (r.portRangeMax === 0) r.portRangeMax = r.portRangeMin;
      else if (r.portRangeMax < r.portRangeMin || r.portRangeMax > 65535) v.add(`${field}.port_range_max`, "OUT_OF_RANGE", `must be between port_range_min (${r.portRangeMin}) and 65535, got ${r.portRangeMax}`);
    }
  } else if (r.portRangeMin !== 0 || r.portRangeMax !== 0) {
    v.add(`${field}.port_range_min`, "CONFLICT", "port ranges are only for TCP, UDP and SCTP");
  }
  const icmp = r.protocol === SecurityGroupRuleProtocol.ICMP || r.protocol === SecurityGroupRuleProtocol.ICMPV6;
  if (icmp) {
    if (r.protocol === SecurityGroupRuleProtocol.ICMP && r.ethertype !== EtherType.IPV4) v.add(`${field}.protocol`, "CONFLICT", "ICMP is IPv4: use ICMPV6 for IPv6");
    if (r.protocol === SecurityGroupRuleProtocol.ICMPV6 && r.ethertype !== EtherType.IPV6) v.add(`${field}.protocol`, "CONFLICT", "ICMPV6 is IPv6: use ICMP for IPv4");
    if (r.icmpType !== undefined) v.range(`${field}.icmp_type`, r.icmpType, 0, 255);
    if (r.icmpCode !== undefined) {
      if (r.icmpType === undefined) v.add(`${field}.icmp_code`, "REQUIRED", "needs icmp_type");
      else v.range(`${field}.icmp_code`, r.icmpCode, 0, 255);
    }
  } else {
    if (r.icmpType !== undefined) v.add(`${field}.icmp_type`, "CONFLICT", "is only for ICMP and ICMPV6");
    if (r.icmpCode !== undefined) v.add(`${field}.icmp_code`, "CONFLICT", "is only for ICMP and ICMPV6");
  }
}

/** What makes two rules the same (ignoring id and description): equal rules are one. */
export function ruleKey(r: SecurityGroupRule): string {
  return JSON.stringify([r.direction, r.ethertype, r.protocol, r.protocolNumber, r.portRangeMin, r.portRangeMax, r.icmpType ?? -1, r.icmpCode ?? -1, r.remote.case ?? "", r.remote.value ?? ""]);
}

/** Checks a group's name (1-255 characters, no control characters). */
export function checkGroupName(v: Violations, name: string): void {
  if (v.required("name", name !== "") && v.length("name", name, 1, NETWORK_LIMITS.groupNameMax) && CONTROL_CHARS.test(name)) {
    v.add("name", "INVALID_FORMAT", "must not contain control characters");
  }
}
