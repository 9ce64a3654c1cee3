import type { HostExec } from "./host-exec.js";
import type { NetworkDesired } from "./model.js";
import { bridgeName, gatewayMac, OWNED_LINK, tapName, vxlanName } from "./names.js";
import { parsePrefix4 } from "./ipv4.js";

/**
 * The links of a network on this host (pure reads of `ip -json`, idempotent writes):
 * bridge `qb…` with br_netfilter on (nf_call_iptables, so the inet table sees bridged
 * IPv4) and the subnets' service addresses (and, with a gateway, the gateway addresses
 * and MAC); VXLAN `qv…` (nolearning, dstport 4789,
 * MTU accounted) on the bridge with static FDB entries; a TAP `qt…` per port, up on
 * the bridge. Each step only runs when what `ip` shows differs from the spec.
 */

/** A link as `ip -json -d link show` reports it (the fields used). */
export interface LinkView {
  readonly ifname: string;
  readonly address?: string;
  readonly master?: string;
  readonly mtu: number;
  readonly flags: readonly string[];
  readonly operstate: string;
  readonly linkinfo?: { readonly info_kind?: string; readonly info_data?: Record<string, unknown> };
}

/** Every link of the namespace, by name. */
export async function observeLinks(h: HostExec): Promise<Map<string, LinkView>> {
  const links = await h.ipJson<LinkView[]>(["-d", "link", "show"]);
  return new Map(links.map((l) => [l.ifname, l]));
}

/** The VXLAN port and overhead (IPv4 outer header + UDP + VXLAN + inner Ethernet). */
export const VXLAN_PORT = 4789;
export const VXLAN_OVERHEAD = 50;

async function setLink(h: HostExec, name: string, l: LinkView | undefined, mtu: number, master: string | undefined): Promise<void> {
  const args: string[] = [];
  if (l?.mtu !== mtu) args.push("mtu", String(mtu));
  if (master !== undefined && l?.master !== master) args.push("master", master);
  if (!l?.flags.includes("UP")) args.push("up");
  if (args.length > 0) await h.ip(["link", "set", "dev", name, ...args]);
}

/** The metric of the subnet routes of networks without a gateway (a gateway's get the kernel's 0). */
export const UNROUTED_METRIC = 1024;

/** The addresses the bridge carries, as "a.b.c.d/len": service addresses, and gateway IPs with a gateway. */
export function bridgeAddresses(n: NetworkDesired): Set<string> {
  const out = new Set<string>();
  for (const s of n.subnets) {
    const len = parsePrefix4(s.cidr, { strict: true })!.len;
    if (s.serviceAddress) out.add(`${s.serviceAddress}/${len}`);
    if (n.gateway && s.gatewayIp) out.add(`${s.gatewayIp}/${len}`);
  }
  return out;
}

/**
 * Makes the bridge exist, up, with br_netfilter on, exactly the wanted addresses, and
 * the gateway's MAC when the network has a gateway. A bridge still carrying the gateway
 * MAC when the network has none is recreated (Linux cannot hand a set MAC back to the
 * kernel's choice); the caller re-attaches its ports. Returns whether an existing bridge
 * was replaced (a missing one is just created).
 */
export async function ensureBridge(h: HostExec, n: NetworkDesired, links: Map<string, LinkView>): Promise<boolean> {
  const br = bridgeName(n.networkId);
  const gwMac = gatewayMac(n.networkId);
  let l = links.get(br);
  let replaced = false;
  if (l && (l.linkinfo?.info_kind !== "bridge" || (!n.gateway && l.address === gwMac))) {
    await h.ip(["link", "del", "dev", br]);
    l = undefined;
    replaced = true;
  }
  if (!l) await h.ip(["link", "add", "name", br, "type", "bridge", "nf_call_iptables", "1", "stp_state", "0"]);
  else if (l.linkinfo?.info_data?.["nf_call_iptables"] !== 1) await h.ip(["link", "set", "dev", br, "type", "bridge", "nf_call_iptables", "1"]);
  if (n.gateway && l?.address !== gwMac) await h.ip(["link", "set", "dev", br, "address", gwMac]);
  await setLink(h, br, l, n.mtu, undefined);
  const want = bridgeAddresses(n);
  const shown = await h.ipJson<{ addr_info?: { family: string; local: string; prefixlen: number }[] }[]>(["addr", "show", "dev", br]);
  const have = new Set((shown[0]?.addr_info ?? []).filter((a) => a.family === "inet").map((a) => `${a.local}/${a.prefixlen}`));
  for (const a of have) if (!want.has(a)) await h.ip(["addr", "del", a, "dev", br]);
  // Networks may share a subnet (isolated overlays). A network with a gateway routes its
  // guests through this host, so its subnet's route wins: the others' get a worse metric.
  const metric = n.gateway ? [] : ["metric", String(UNROUTED_METRIC)];
  for (const a of want) if (!have.has(a)) await h.ip(["addr", "add", a, "dev", br, ...metric]);
  return replaced;
}

/** Turns IPv4 forwarding on in the namespace (never off: other things may route here too). */
export async function ensureForwarding(h: HostExec): Promise<void> {
  if ((await h.inNs("sysctl", ["-n", "net.ipv4.ip_forward"])).trim() !== "1") await h.inNs("sysctl", ["-w", "net.ipv4.ip_forward=1"]);
}

/** Whether IPv4 forwarding is on in the namespace. */
export async function forwardingOn(h: HostExec): Promise<boolean> {
  return (await h.inNs("sysctl", ["-n", "net.ipv4.ip_forward"]).catch(() => "")).trim() === "1";
}

/** Makes the VXLAN device match (recreated when its VNI, local address or port differ). */
export async function ensureVxlan(h: HostExec, n: NetworkDesired, links: Map<string, LinkView>): Promise<void> {
  const vx = vxlanName(n.networkId);
  let l = links.get(vx);
  const d = l?.linkinfo?.info_data;
  if (l && (l.linkinfo?.info_kind !== "vxlan" || d?.["id"] !== n.vni || d?.["local"] !== n.localUnderlay || d?.["port"] !== VXLAN_PORT || d?.["learning"] !== false)) {
    await h.ip(["link", "del", "dev", vx]);
    l = undefined;
  }
  if (!l) await h.ip(["link", "add", "name", vx, "type", "vxlan", "id", String(n.vni), "local", n.localUnderlay, "dstport", String(VXLAN_PORT), "nolearning"]);
  await setLink(h, vx, l, n.mtu, bridgeName(n.networkId));
  await ensureFdb(h, n);
}

/** The VXLAN device's static entries: one flood entry per peer, one entry per remote MAC. */
export function desiredFdb(n: NetworkDesired): Set<string> {
  const out = new Set<string>();
  for (const p of n.peers) out.add(`00:00:00:00:00:00 ${p}`);
  for (const r of n.remotePorts) out.add(`${r.mac} ${r.underlay}`);
  return out;
}

/** The VXLAN device's entries with a remote destination, as "mac dst". */
export async function observeFdb(h: HostExec, vx: string): Promise<Set<string>> {
  const out = await h.bridge(["-json", "fdb", "show", "dev", vx]);
  const entries = (out.trim() === "" ? [] : JSON.parse(out)) as { mac: string; dst?: string }[];
  return new Set(entries.filter((e) => e.dst !== undefined).map((e) => `${e.mac} ${e.dst!}`));
}

async function ensureFdb(h: HostExec, n: NetworkDesired): Promise<void> {
  const vx = vxlanName(n.networkId);
  const want = desiredFdb(n);
  const have = await observeFdb(h, vx);
  for (const e of have) {
    if (want.has(e)) continue;
    const [mac, dst] = e.split(" ") as [string, string];
    await h.bridge(["fdb", "del", mac, "dev", vx, "dst", dst]);
  }
  for (const e of want) {
    if (have.has(e)) continue;
    const [mac, dst] = e.split(" ") as [string, string];
    // The all-zero MAC takes one entry per peer (append); a port's MAC has one home (replace).
    await h.bridge(["fdb", mac === "00:00:00:00:00:00" ? "append" : "replace", mac, "dev", vx, "dst", dst, "self", "permanent"]);
  }
}

/** Makes one port's TAP exist (persistent, so QEMU opens it with script=no), up on the bridge. */
export async function ensureTap(h: HostExec, n: NetworkDesired, portId: string, links: Map<string, LinkView>, adoptVeth = false): Promise<void> {
  const t = tapName(portId);
  let l = links.get(t);
  const isTap = l?.linkinfo?.info_kind === "tun" && l.linkinfo.info_data?.["type"] === "tap";
  if (l && !isTap && !(adoptVeth && l.linkinfo?.info_kind === "veth")) {
    await h.ip(["link", "del", "dev", t]);
    l = undefined;
  }
  if (!l) await h.ip(["tuntap", "add", "dev", t, "mode", "tap"]);
  await setLink(h, t, l, n.mtu, bridgeName(n.networkId));
}

/** Deletes the agent's links (by their id-derived names) that no network wants. */
export async function removeStaleLinks(h: HostExec, links: Map<string, LinkView>, wanted: ReadonlySet<string>): Promise<string[]> {
  const gone: string[] = [];
  // TAPs and VXLAN devices first, so a bridge is empty when it goes.
  const names = [...links.keys()].filter((n) => OWNED_LINK.test(n) && !wanted.has(n)).sort((a, b) => (a.startsWith("qb") ? 1 : 0) - (b.startsWith("qb") ? 1 : 0));
  for (const name of names) {
    await h.ip(["link", "del", "dev", name]).catch(() => undefined);
    gone.push(name);
  }
  return gone;
}

/** The names of the links a network wants on this host. */
export function wantedLinks(n: NetworkDesired): string[] {
  return [bridgeName(n.networkId), vxlanName(n.networkId), ...n.ports.map((p) => tapName(p.portId))];
}
