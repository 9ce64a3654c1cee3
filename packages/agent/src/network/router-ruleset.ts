import { formatPrefix4, parsePrefix4 } from "./ipv4.js";
import { IPSEC_DEVICE } from "./router-ipsec.js";
import { lbCounters, lbCountRules, lbDnatRules, type MemberHealth } from "./router-lb-ruleset.js";
import { ROUTER_EXTERNAL_DEVICE, vpnInterfaceName, type RouterDesired } from "./router-model.js";

/**
 * A router's NAT and load balancers as one nft script (pure), applied in one `nft -f`
 * transaction in the router's namespace that replaces the table's contents atomically
 * (so associating, disassociating and moving floating IPs, or a member going out, is one
 * step; no packet sees half a change):
 *
 * - `fip_dnat` (floating → fixed) in prerouting and output: inbound to a floating IP.
 * - `fip_snat` (fixed → floating) in postrouting, `oifname "qre"` only: a guest with a
 *   floating IP leaves as it.
 * - With SNAT, the internal subnets leaving through `qre` only are translated to the
 *   router's external address (an explicit `snat to`, not masquerade, which could pick a
 *   floating /32 as the source).
 * - Hairpin: a connection DNATed to a fixed IP that leaves by an internal interface is
 *   masqueraded behind the router's address there, so the reply returns via the router.
 *
 * - Load balancers: see router-lb-ruleset.ts.
 *
 * Every value comes from the validated spec (canonical addresses); the interface name is
 * a constant.
 */

export const ROUTER_TABLE = "quantix_router";

function elements(items: readonly string[]): string {
  return items.length === 0 ? "" : ` elements = { ${items.join(", ")} };`;
}

/** The subnets of the router's internal interfaces, canonical. */
export function internalSubnets(r: RouterDesired): string[] {
  return [...new Set(r.interfaces.flatMap((i) => i.addresses.map((a) => formatPrefix4(parsePrefix4(a, { strict: false })!))))].sort();
}

/**
 * With VPN connections: only a connection's local subnets enter its tunnel and traffic out
 * of it only reaches them; TCP's MSS is clamped to the tunnel's MTU (SYN and SYN-ACK
 * entering it; each side clamps its own). Nothing here translates: the SNAT above only
 * matches `qre`, so tunnelled traffic keeps its private addresses. The tunnel's UDP port
 * needs no rule: no chain of this table drops input.
 */
function vpnRules(r: RouterDesired): string[] {
  const conns = (r.vpnConnections ?? []).filter((c) => c.type === "wireguard");
  const ipsec = (r.vpnConnections ?? []).some((c) => c.type === "ipsec");
  const rules = conns.flatMap((c) => {
    const dev = `"${vpnInterfaceName(c.connectionId)}"`;
    const local = `{ ${c.localSubnets.join(", ")} }`;
    return [`    oifname ${dev} ip saddr != ${local} drop`, `    iifname ${dev} ip daddr != ${local} drop`, `    oifname ${dev} tcp flags syn tcp option maxseg size set rt mtu`];
  });
  // IPsec's traffic selectors (in charon) already bound what enters and leaves its device.
  if (ipsec) rules.push(`    oifname "${IPSEC_DEVICE}" tcp flags syn tcp option maxseg size set rt mtu`);
  return rules;
}

/** What the router's table holds besides the spec: the members' health, the counters to drop. */
export interface RulesetContext {
  /** Whether a member is in its listener's map; default: every member. */
  readonly healthy?: MemberHealth;
  /** Load balancer counters in the table that no member of the spec has any more. */
  readonly staleCounters?: readonly string[];
}

const CHAINS = [
  ["prerouting", "type nat hook prerouting priority dstnat; policy accept;"],
  ["output", "type nat hook output priority -100; policy accept;"],
  ["postrouting", "type nat hook postrouting priority srcnat; policy accept;"],
  ["lb_forward", "type filter hook forward priority filter; policy accept;"],
  ["vpn_forward", "type filter hook forward priority filter; policy accept;"],
] as const;
const SETS = [
  ["map", "fip_dnat", "type ipv4_addr : ipv4_addr;"],
  ["map", "fip_snat", "type ipv4_addr : ipv4_addr;"],
  ["set", "internal", "type ipv4_addr; flags interval;"],
  ["set", "lb_vips", "type ipv4_addr;"],
] as const;

/**
 * The script that makes the router's table match `r`: it declares the table's objects
 * (a no-op for those present), flushes every chain, map and set, deletes stale counters,
 * and fills them again, all in one transaction. Not a delete and re-create of the table:
 * the load balancers' named counters must survive each render.
 */
export function routerRuleset(r: RouterDesired, ctx: RulesetContext = {}): string {
  const ext = `"${ROUTER_EXTERNAL_DEVICE}"`;
  const own = r.external.address.split("/")[0]!;
  const subnets = internalSubnets(r);
  const lbs = r.loadBalancers ?? [];
  const t = `ip ${ROUTER_TABLE}`;
  return [
    `table ${t} {`,
    ...SETS.map(([kind, name, type]) => `  ${kind} ${name} { ${type} }`),
    ...CHAINS.map(([name, hook]) => `  chain ${name} { ${hook} }`),
    ...lbCounters(lbs).map((c) => `  counter ${c} {}`),
    "}",
    ...CHAINS.map(([name]) => `flush chain ${t} ${name}`),
    ...SETS.map(([kind, name]) => `flush ${kind} ${t} ${name}`),
    ...(ctx.staleCounters ?? []).map((c) => `delete counter ${t} ${c}`),
    `table ${t} {`,
    `  map fip_dnat { type ipv4_addr : ipv4_addr;${elements(r.floatingIps.map((f) => `${f.floatingIp} : ${f.fixedIp}`))} }`,
    `  map fip_snat { type ipv4_addr : ipv4_addr;${elements(r.floatingIps.map((f) => `${f.fixedIp} : ${f.floatingIp}`))} }`,
    `  set internal { type ipv4_addr; flags interval;${elements(subnets)} }`,
    `  set lb_vips { type ipv4_addr;${elements(lbs.map((lb) => lb.vip))} }`,
    "  chain prerouting {",
    "    dnat to ip daddr map @fip_dnat",
    ...lbDnatRules(lbs, ctx.healthy ?? (() => true)),
    "  }",
    "  chain output {",
    "    dnat to ip daddr map @fip_dnat",
    "  }",
    "  chain postrouting {",
    `    oifname ${ext} snat to ip saddr map @fip_snat`,
    ...(r.snat ? [`    oifname ${ext} ip saddr @internal snat to ${own}`] : []),
    `    oifname != ${ext} ct status dnat ip saddr @internal masquerade`,
    "  }",
    "  chain lb_forward {",
    ...lbCountRules(lbs),
    "  }",
    "  chain vpn_forward {",
    ...vpnRules(r),
    "  }",
    "}",
    "",
  ].join("\n");
}
