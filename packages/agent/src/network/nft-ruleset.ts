import { formatPrefix4, parsePrefix4 } from "./ipv4.js";
import type { HostNetworkState, NetworkDesired, PortDesired, RuleDesired } from "./model.js";
import { bridgeName, gatewayMac, hostGatewayMac, sgName, shortId, tapName, vxlanName } from "./names.js";

/**
 * The host's whole filtering as one nft script (pure), applied in one `nft -f`
 * transaction that replaces our tables atomically:
 *
 * - `bridge quantix_l2`: stateless anti-spoofing keyed on the port's TAP (this kernel has
 *   no conntrack in the bridge family): a port sends only from its MAC and addresses
 *   (or an allowed pair), DHCP requests from 0.0.0.0 pass, DHCP server replies and IPv6
 *   from ports are dropped.
 * - `inet quantix`: stateful security groups. br_netfilter shows bridged packets to the
 *   inet family with the *bridge* as iif/oif, so ports are found by `bridge . ip` verdict
 *   maps (sound only with the anti-spoofing above). Egress runs at priority -10 and
 *   ingress at 0: an accept ends only its own base chain, so both apply. Remote groups
 *   are named sets (`sgm_<hex>`) that UpdateSecurityGroupMembers changes by element.
 *   An input chain lets ports reach the host's service addresses for DHCP, DNS and ping
 *   only.
 * - `ip quantix_nat`: per network whose gateway is "nat", postrouting masquerade of its
 *   subnets' traffic leaving through any interface other than the bridges of this host's
 *   networks with a gateway (traffic between guests of routed networks keeps its
 *   addresses: the receiving guest answers through its own host, which could not undo
 *   another host's translation).
 * - Gateways (in `bridge quantix_l2`): ARP for or from a gateway address and frames from
 *   or to a gateway MAC are dropped on the network's VXLAN device, both ways, so each
 *   host's guests reach their own host's gateway and never another's. One exception,
 *   before the drops on the way out: an IPv4 frame the host routes to a remote port (from
 *   the gateway MAC to a MAC of `gw_remote`) gets this host's own MAC (`gw_router`,
 *   names.ts hostGatewayMac) as source and crosses, so the host routes to guests on other
 *   hosts (Neutron DVR's scheme; the remote ports' addresses are permanent
 *   neighbours, remote-neighbours.ts). The other host's bridge never sees the gateway MAC.
 * - Routed traffic between guests on different hosts is asymmetric: the request is routed
 *   by the sender's host, the reply by the receiver's. Each host still sees both
 *   directions in its one conntrack table, one routed and the other bridged (br_netfilter
 *   passes bridged IPv4 through the inet hooks and conntrack), so `ct state
 *   established,related` lets the replies through and no rule differs for this case. The
 *   inet `output` chain drops ICMP redirects leaving through our bridges: a host routing
 *   between two subnets of one network would otherwise tell the guest to go straight to
 *   the other subnet's guest over L2, past its gateway.
 *
 * Every value written here comes from the validated state (canonical addresses,
 * lowercase MACs, names derived from UUIDs): no user string reaches nft.
 */

export const L2_TABLE = "quantix_l2";
export const SG_TABLE = "quantix";
export const NAT_TABLE = "quantix_nat";

/** The member set of a group. */
export const memberSet = (sgId: string): string => `sgm_${sgName(sgId)}`;

function elements(items: readonly string[]): string {
  return items.length === 0 ? "" : ` elements = { ${items.join(", ")} };`;
}

function ruleText(r: RuleDesired): string {
  const peer = r.direction === "ingress" ? "saddr" : "daddr";
  const parts: string[] = [];
  if (r.remotePrefix) parts.push(`ip ${peer} ${r.remotePrefix}`);
  if (r.remoteGroupId) parts.push(`ip ${peer} @${memberSet(r.remoteGroupId)}`);
  if (r.protocol === "tcp" || r.protocol === "udp") {
    if (r.portMin !== undefined) parts.push(`${r.protocol} dport ${r.portMin === r.portMax ? r.portMin : `${r.portMin}-${r.portMax!}`}`);
    else parts.push(`meta l4proto ${r.protocol}`);
  } else if (r.protocol === "icmp") {
    if (r.icmpType !== undefined) parts.push(`icmp type ${r.icmpType}`);
    if (r.icmpCode !== undefined) parts.push(`icmp code ${r.icmpCode}`);
    if (r.icmpType === undefined) parts.push("meta l4proto icmp");
  }
  return `${parts.join(" ")} accept`.trim();
}

/** The addresses a port may use: fixed IPs as /32 and its allowed pairs' prefixes. */
function portPrefixes(p: PortDesired): string[] {
  return [...new Set([...p.fixedIps.map((ip) => `${ip}/32`), ...p.pairs.map((x) => x.ipPrefix)])].map((s) => formatPrefix4(parsePrefix4(s, { strict: true })!));
}

function secured(n: NetworkDesired): PortDesired[] {
  return n.ports.filter((p) => p.portSecurity);
}

/** The bridge-family anti-spoofing table. */
function l2Table(nets: readonly NetworkDesired[]): string {
  const ports: string[] = [];
  const macs: string[] = [];
  const ips: string[] = [];
  for (const n of nets) {
    for (const p of secured(n)) {
      const t = `"${tapName(p.portId)}"`;
      ports.push(t);
      for (const m of new Set([p.mac, ...p.pairs.map((x) => x.mac)])) macs.push(`${t} . ${m}`);
      for (const pre of portPrefixes(p)) ips.push(`${t} . ${pre}`);
    }
  }
  const gwIps: string[] = [];
  const gwMacs: string[] = [];
  const gwRemote: string[] = [];
  const gwRouter: string[] = [];
  for (const n of nets) {
    if (!n.gateway) continue;
    const vx = `"${vxlanName(n.networkId)}"`;
    gwMacs.push(`${vx} . ${gatewayMac(n.networkId)}`);
    for (const s of n.subnets) if (s.gatewayIp) gwIps.push(`${vx} . ${s.gatewayIp}`);
    for (const mac of new Set(n.remotePorts.map((r) => r.mac))) gwRemote.push(`${vx} . ${mac}`);
    gwRouter.push(`${vx} : ${hostGatewayMac(n.networkId, n.localUnderlay)}`);
  }
  const gwRules = (dir: "iifname" | "oifname") => [
    `    ${dir} . ether saddr @gw_mac drop`,
    `    ${dir} . ether daddr @gw_mac drop`,
    `    ether type arp ${dir} . arp saddr ip @gw_ip drop`,
    `    ether type arp ${dir} . arp daddr ip @gw_ip drop`,
  ];
  return [
    `table bridge ${L2_TABLE} {`,
    `  set gw_mac { type ifname . ether_addr;${elements(gwMacs)} }`,
    `  set gw_ip { type ifname . ipv4_addr;${elements(gwIps)} }`,
    `  set gw_remote { type ifname . ether_addr;${elements(gwRemote)} }`,
    `  map gw_router { type ifname : ether_addr;${elements(gwRouter)} }`,
    `  chain gw_in {`,
    `    type filter hook prerouting priority -310; policy accept;`,
    ...gwRules("iifname"),
    `  }`,
    `  chain gw_out {`,
    `    type filter hook postrouting priority 0; policy accept;`,
    `    ether type ip oifname . ether saddr @gw_mac oifname . ether daddr @gw_remote ether saddr set oifname map @gw_router`,
    ...gwRules("oifname"),
    `  }`,
    `  set ports { type ifname;${elements(ports)} }`,
    `  set port_mac { type ifname . ether_addr;${elements(macs)} }`,
    `  set port_ip { type ifname . ipv4_addr; flags interval;${elements(ips)} }`,
    `  chain prerouting {`,
    `    type filter hook prerouting priority -300; policy accept;`,
    `    iifname != @ports accept`,
    `    iifname . ether saddr != @port_mac drop`,
    `    ether type ip6 drop`,
    `    ether type arp iifname . arp saddr ether != @port_mac drop`,
    `    ether type arp arp saddr ip 0.0.0.0 accept`,
    `    ether type arp iifname . arp saddr ip != @port_ip drop`,
    `    ether type ip udp sport 67 drop`,
    `    ether type ip ip saddr 0.0.0.0 udp sport 68 udp dport 67 accept`,
    `    ether type ip iifname . ip saddr != @port_ip drop`,
    `    ether type != { ip, arp } drop`,
    `  }`,
    `}`,
  ].join("\n");
}

/** The inet security-group table. */
function sgTable(state: HostNetworkState): string {
  const nets = Object.values(state.networks).map((x) => x.spec);
  const groups = Object.values(state.securityGroups).map((x) => x.spec);
  const known = new Map(groups.map((g) => [g.securityGroupId, g]));
  const referenced = new Set<string>(groups.map((g) => g.securityGroupId));
  for (const g of groups) for (const r of g.rules) if (r.remoteGroupId) referenced.add(r.remoteGroupId);
  const lines: string[] = [`table inet ${SG_TABLE} {`];
  const bridges = nets.map((n) => `"${bridgeName(n.networkId)}"`);
  lines.push(`  set bridges { type ifname;${elements(bridges)} }`);
  for (const id of [...referenced].sort()) {
    const members = known.get(id)?.members ?? [];
    lines.push(`  set ${memberSet(id)} { type ipv4_addr;${elements([...members])} }`);
  }
  for (const g of [...groups].sort((a, b) => a.securityGroupId.localeCompare(b.securityGroupId))) {
    for (const dir of ["ingress", "egress"] as const) {
      lines.push(`  chain sg_${sgName(g.securityGroupId)}_${dir === "ingress" ? "in" : "out"} {`);
      for (const r of g.rules.filter((x) => x.direction === dir)) lines.push(`    ${ruleText(r)}`);
      lines.push("  }");
    }
  }
  const ingress: string[] = [];
  const egress: string[] = [];
  for (const n of nets) {
    const br = `"${bridgeName(n.networkId)}"`;
    for (const p of secured(n)) {
      if (p.securityGroupIds.length === 0) continue;
      const groupsOf = p.securityGroupIds.filter((id) => known.has(id));
      const hasEgress = groupsOf.some((id) => known.get(id)!.rules.some((r) => r.direction === "egress"));
      const c = `port_${shortId(p.portId)}`;
      lines.push(`  chain ${c}_in {`, ...groupsOf.map((id) => `    jump sg_${sgName(id)}_in`), "    drop", "  }");
      lines.push(`  chain ${c}_out {`, ...(hasEgress ? [...groupsOf.map((id) => `    jump sg_${sgName(id)}_out`), "    drop"] : ["    accept"]), "  }");
      for (const pre of portPrefixes(p)) {
        ingress.push(`${br} . ${pre} : jump ${c}_in`);
        egress.push(`${br} . ${pre} : jump ${c}_out`);
      }
    }
  }
  lines.push(`  map ingress { type ifname . ipv4_addr : verdict; flags interval;${elements(ingress)} }`);
  lines.push(`  map egress { type ifname . ipv4_addr : verdict; flags interval;${elements(egress)} }`);
  lines.push(
    "  chain fwd_egress {",
    "    type filter hook forward priority -10; policy accept;",
    "    ct state established,related accept",
    "    ct state invalid drop",
    "    meta nfproto ipv4 iifname . ip saddr vmap @egress",
    "  }",
    "  chain fwd_ingress {",
    "    type filter hook forward priority 0; policy accept;",
    "    ct state established,related accept",
    "    ct state invalid drop",
    "    meta nfproto ipv4 oifname . ip daddr vmap @ingress",
    "  }",
    "  chain input {",
    "    type filter hook input priority 0; policy accept;",
    "    iifname != @bridges accept",
    "    ct state established,related accept",
    "    udp dport { 53, 67 } accept",
    "    tcp dport 53 accept",
    "    icmp type echo-request accept",
    "    drop",
    "  }",
    "  chain output {",
    "    type filter hook output priority 0; policy accept;",
    "    oifname @bridges icmp type redirect drop",
    "  }",
    "}",
  );
  return lines.join("\n");
}

/** The NAT table: masquerade per "nat" gateway; undefined when no network wants it. */
function natTable(nets: readonly NetworkDesired[]): string | undefined {
  const routed = nets.filter((n) => n.gateway).map((n) => `"${bridgeName(n.networkId)}"`);
  const rules = nets
    .filter((n) => n.gateway?.mode === "nat")
    .flatMap((n) => n.subnets.map((s) => `    ip saddr ${s.cidr} oifname != { ${routed.join(", ")} } masquerade`));
  if (rules.length === 0) return undefined;
  return [`table ip ${NAT_TABLE} {`, "  chain postrouting {", "    type nat hook postrouting priority srcnat; policy accept;", ...rules, "  }", "}"].join("\n");
}

/** Declares and deletes the host's tables (declaring first, so the deletes cannot fail). */
function dropTables(): string[] {
  return [
    `table bridge ${L2_TABLE} {}`,
    `delete table bridge ${L2_TABLE}`,
    `table inet ${SG_TABLE} {}`,
    `delete table inet ${SG_TABLE}`,
    `table ip ${NAT_TABLE} {}`,
    `delete table ip ${NAT_TABLE}`,
  ];
}

/**
 * The script that makes the host's filtering match `state`: our tables declared (so the
 * deletes cannot fail), deleted and re-created, all in one transaction.
 */
export function hostRuleset(state: HostNetworkState): string {
  const nets = Object.values(state.networks).map((x) => x.spec);
  const nat = natTable(nets);
  return [...dropTables(), l2Table(nets), sgTable(state), ...(nat ? [nat] : []), ""].join("\n");
}

/** The script that removes the tables (an agent with no networks and no groups). */
export function emptyRuleset(): string {
  return [...dropTables(), ""].join("\n");
}

/** A membership delta as elements added and deleted in place. */
export function memberDelta(sgId: string, add: readonly string[], remove: readonly string[]): string {
  const out: string[] = [];
  if (add.length > 0) out.push(`add element inet ${SG_TABLE} ${memberSet(sgId)} { ${add.join(", ")} }`);
  if (remove.length > 0) out.push(`delete element inet ${SG_TABLE} ${memberSet(sgId)} { ${remove.join(", ")} }`);
  return `${out.join("\n")}\n`;
}
