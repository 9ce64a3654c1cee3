import type { RouterSpec } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { Violations } from "@quantix/core";
import { contains4, formatIp4, formatPrefix4, mask4, overlaps4, parseIp4, parsePrefix4, type Prefix4 } from "./ipv4.js";
import { PHYSICAL_NETWORK, type FloatingIpDesired, type RouterDesired, type RouterInterfaceDesired } from "./router-model.js";
import { ip, mac, uuid, type Checked } from "./validation.js";
import { shortId } from "./names.js";
import { checkVpnConnections } from "./router-vpn-validation.js";
import { checkLoadBalancers } from "./router-lb-validation.js";

/**
 * Validation of ApplyRouter's spec into the canonical desired state (pure): every
 * violation at once, with its field path. What depends on the host (the physical network
 * configured, the networks' bridges present) is the RouterHost's, as FAILED_PRECONDITION.
 */

/** An interface address: a host address with its subnet's length (8 to 30). */
interface IfAddr {
  readonly ip: number;
  readonly subnet: Prefix4;
}

function ifAddress(v: Violations, field: string, value: string): IfAddr | undefined {
  const slash = value.indexOf("/");
  const addr = slash < 0 ? undefined : parseIp4(value.slice(0, slash));
  const pre = parsePrefix4(value, { strict: false });
  if (addr === undefined || !pre || pre.len < 8 || pre.len > 30) {
    v.add(field, "INVALID_FORMAT", "must be an IPv4 address with its subnet's prefix length, e.g. 10.0.0.1/24 (length 8 to 30)");
    return undefined;
  }
  const bcast = (pre.net | (~mask4(pre.len) >>> 0)) >>> 0;
  if (addr === pre.net || addr === bcast) {
    v.add(field, "INVALID_VALUE", `must be a host address of ${formatPrefix4(pre)}, not its network or broadcast address`);
    return undefined;
  }
  return { ip: addr, subnet: pre };
}

const text = (a: IfAddr): string => `${formatIp4(a.ip)}/${a.subnet.len}`;

/** Whether `ip` is a host address (not network, not broadcast) of `p`. */
function hostOf(p: Prefix4, x: number): boolean {
  const bcast = (p.net | (~mask4(p.len) >>> 0)) >>> 0;
  return contains4(p, x) && x !== p.net && x !== bcast;
}

/** Validates ApplyRouter's spec (under `spec`). */
export function checkRouterSpec(spec: RouterSpec | undefined, p = "spec"): Checked<RouterDesired> {
  const v = new Violations();
  if (!v.required(p, spec !== undefined) || !spec) return { ok: false, violations: v.list };
  uuid(v, `${p}.router_id`, spec.routerId);
  const subnets: { pre: Prefix4; field: string }[] = [];
  const claim = (pre: Prefix4, field: string) => {
    const clash = subnets.find((s) => overlaps4(s.pre, pre));
    if (clash) v.add(field, "OVERLAP", `its subnet ${formatPrefix4(pre)} overlaps ${clash.field}'s`);
    subnets.push({ pre, field });
  };
  const e = spec.external;
  const f = `${p}.external`;
  let ext: IfAddr | undefined;
  let gw: string | undefined;
  let emac: string | undefined;
  if (v.required(f, e !== undefined) && e) {
    if (v.required(`${f}.physical_network`, e.physicalNetwork !== "")) v.pattern(`${f}.physical_network`, e.physicalNetwork, PHYSICAL_NETWORK, "must be a physical network name: a lowercase letter, then up to 31 lowercase letters, digits or hyphens");
    if (v.required(`${f}.address`, e.address !== "")) ext = ifAddress(v, `${f}.address`, e.address);
    if (ext) claim(ext.subnet, `${f}.address`);
    if (v.required(`${f}.gateway_ip`, e.gatewayIp !== "")) {
      gw = ip(v, `${f}.gateway_ip`, e.gatewayIp);
      const g = gw === undefined ? undefined : parseIp4(gw)!;
      if (g !== undefined && ext && (!hostOf(ext.subnet, g) || g === ext.ip)) {
        v.add(`${f}.gateway_ip`, "OUT_OF_RANGE", `must be a host address of ${formatPrefix4(ext.subnet)} other than the router's own`);
        gw = undefined;
      }
    }
    emac = mac(v, `${f}.mac_address`, e.macAddress);
  }
  if (spec.interfaces.length > 16) v.add(`${p}.interfaces`, "TOO_MANY", `at most 16, got ${spec.interfaces.length}`);
  const nets = new Set<string>();
  const macs = new Map<string, string>(emac ? [[emac, `${f}.mac_address`]] : []);
  const internal: (IfAddr & { networkId: string })[] = [];
  const interfaces: RouterInterfaceDesired[] = [];
  spec.interfaces.forEach((itf, i) => {
    const fi = `${p}.interfaces[${i}]`;
    if (uuid(v, `${fi}.network_id`, itf.networkId)) {
      if ([...nets].some((n) => shortId(n) === shortId(itf.networkId))) v.add(`${fi}.network_id`, "DUPLICATE", "has an interface already (or shares its first 12 hex digits with one that has)");
      nets.add(itf.networkId);
    }
    const m = mac(v, `${fi}.mac_address`, itf.macAddress);
    if (m && macs.has(m)) v.add(`${fi}.mac_address`, "DUPLICATE", `is ${macs.get(m)!} too`);
    if (m) macs.set(m, `${fi}.mac_address`);
    if (itf.addresses.length === 0) v.add(`${fi}.addresses`, "REQUIRED", "the router needs an address on the network (the subnet's gateway_ip)");
    if (itf.addresses.length > 8) v.add(`${fi}.addresses`, "TOO_MANY", `at most 8, got ${itf.addresses.length}`);
    const addrs: string[] = [];
    itf.addresses.forEach((a, j) => {
      const x = ifAddress(v, `${fi}.addresses[${j}]`, a);
      if (!x) return;
      claim(x.subnet, `${fi}.addresses[${j}]`);
      internal.push({ ...x, networkId: itf.networkId });
      addrs.push(text(x));
    });
    if (m) interfaces.push({ networkId: itf.networkId, mac: m, addresses: addrs });
  });
  if (spec.floatingIps.length > 1024) v.add(`${p}.floating_ips`, "TOO_MANY", `at most 1024, got ${spec.floatingIps.length}`);
  const floating = new Map<string, string>();
  const fixed = new Map<string, string>();
  const fips: FloatingIpDesired[] = [];
  spec.floatingIps.forEach((m, i) => {
    const fm = `${p}.floating_ips[${i}]`;
    let fl: string | undefined;
    if (v.required(`${fm}.floating_ip`, m.floatingIp !== "")) fl = ip(v, `${fm}.floating_ip`, m.floatingIp);
    if (fl !== undefined && ext) {
      const n = parseIp4(fl)!;
      if (!hostOf(ext.subnet, n)) v.add(`${fm}.floating_ip`, "OUT_OF_RANGE", `must be a host address of the external subnet ${formatPrefix4(ext.subnet)}`);
      else if (n === ext.ip || fl === gw) v.add(`${fm}.floating_ip`, "INVALID_VALUE", "is the router's external address or its gateway");
    }
    if (fl !== undefined && floating.has(fl)) v.add(`${fm}.floating_ip`, "DUPLICATE", `is mapped by ${floating.get(fl)!} already`);
    if (fl !== undefined) floating.set(fl, fm);
    let fx: string | undefined;
    if (v.required(`${fm}.fixed_ip`, m.fixedIp !== "")) fx = ip(v, `${fm}.fixed_ip`, m.fixedIp);
    if (fx !== undefined) {
      const n = parseIp4(fx)!;
      if (!internal.some((a) => hostOf(a.subnet, n))) v.add(`${fm}.fixed_ip`, "OUT_OF_RANGE", "must be a host address inside one of the interfaces' subnets");
      else if (internal.some((a) => a.ip === n)) v.add(`${fm}.fixed_ip`, "INVALID_VALUE", "is the router's own interface address");
      if (fixed.has(fx)) v.add(`${fm}.fixed_ip`, "DUPLICATE", `has a floating IP already (${fixed.get(fx)!})`);
      fixed.set(fx, fm);
    }
    if (fl !== undefined && fx !== undefined) fips.push({ floatingIp: fl, fixedIp: fx });
  });
  const vpn = checkVpnConnections(v, `${p}.vpn_connections`, spec.vpnConnections, internal.map((a) => a.subnet), subnets);
  const loadBalancers = checkLoadBalancers(v, `${p}.load_balancers`, spec.loadBalancers, { ...(ext ? { external: ext } : {}), ...(gw !== undefined ? { gatewayIp: gw } : {}), internal, floating, fixed });
  if (v.list.length > 0) return { ok: false, violations: v.list };
  return {
    ok: true,
    value: {
      routerId: spec.routerId,
      external: { physicalNetwork: e!.physicalNetwork, address: text(ext!), gatewayIp: gw!, mac: emac! },
      interfaces: interfaces.sort((a, b) => a.networkId.localeCompare(b.networkId)),
      snat: spec.snatEnabled,
      floatingIps: fips.sort((a, b) => parseIp4(a.floatingIp)! - parseIp4(b.floatingIp)!),
      vpnConnections: vpn,
      loadBalancers,
    },
  };
}
