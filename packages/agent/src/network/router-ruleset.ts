import { formatPrefix4, parsePrefix4 } from "./ipv4.js";
import { IPSEC_DEVICE } from "./router-ipsec.js";
import { ROUTER_EXTERNAL_DEVICE, vpnInterfaceName, type RouterDesired } from "./router-model.js";

/**
 * A router's NAT as one nft script (pure), applied in one `nft -f` transaction in the
 * router's namespace that replaces the table atomically (so associating, disassociating
 * and moving floating IPs is one step; no packet sees half a change):
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
function vpnChain(r: RouterDesired): string[] {
  const conns = (r.vpnConnections ?? []).filter((c) => c.type === "wireguard");
  const ipsec = (r.vpnConnections ?? []).some((c) => c.type === "ipsec");
  if (conns.length === 0 && !ipsec) return [];
  const rules = conns.flatMap((c) => {
    const dev = `"${vpnInterfaceName(c.connectionId)}"`;
    const local = `{ ${c.localSubnets.join(", ")} }`;
    return [`    oifname ${dev} ip saddr != ${local} drop`, `    iifname ${dev} ip daddr != ${local} drop`, `    oifname ${dev} tcp flags syn tcp option maxseg size set rt mtu`];
  });
  // IPsec's traffic selectors (in charon) already bound what enters and leaves its device.
  if (ipsec) rules.push(`    oifname "${IPSEC_DEVICE}" tcp flags syn tcp option maxseg size set rt mtu`);
  return ["  chain vpn_forward {", "    type filter hook forward priority filter; policy accept;", ...rules, "  }"];
}

/** The script that makes the router's table match `r`. */
export function routerRuleset(r: RouterDesired): string {
  const ext = `"${ROUTER_EXTERNAL_DEVICE}"`;
  const own = r.external.address.split("/")[0]!;
  const subnets = internalSubnets(r);
  return [
    `table ip ${ROUTER_TABLE} {}`,
    `delete table ip ${ROUTER_TABLE}`,
    `table ip ${ROUTER_TABLE} {`,
    `  map fip_dnat { type ipv4_addr : ipv4_addr;${elements(r.floatingIps.map((f) => `${f.floatingIp} : ${f.fixedIp}`))} }`,
    `  map fip_snat { type ipv4_addr : ipv4_addr;${elements(r.floatingIps.map((f) => `${f.fixedIp} : ${f.floatingIp}`))} }`,
    `  set internal { type ipv4_addr; flags interval;${elements(subnets)} }`,
    "  chain prerouting {",
    "    type nat hook prerouting priority dstnat; policy accept;",
    "    dnat to ip daddr map @fip_dnat",
    "  }",
    "  chain output {",
    "    type nat hook output priority -100; policy accept;",
    "    dnat to ip daddr map @fip_dnat",
    "  }",
    "  chain postrouting {",
    "    type nat hook postrouting priority srcnat; policy accept;",
    `    oifname ${ext} snat to ip saddr map @fip_snat`,
    ...(r.snat ? [`    oifname ${ext} ip saddr @internal snat to ${own}`] : []),
    `    oifname != ${ext} ct status dnat ip saddr @internal masquerade`,
    "  }",
    ...vpnChain(r),
    "}",
    "",
  ].join("\n");
}

