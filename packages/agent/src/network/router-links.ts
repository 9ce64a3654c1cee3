import { HostCommandError, type HostExec } from "./host-exec.js";
import { observeLinks, type LinkView } from "./links.js";
import { bridgeName } from "./names.js";
import {
  externalBridgeName,
  externalLegName,
  internalLegName,
  OWNED_ROUTER_INSIDE_LINK,
  OWNED_ROUTER_LINK,
  ROUTER_EXTERNAL_DEVICE,
  routerInterfaceName,
  type RouterDesired,
} from "./router-model.js";

/**
 * A router's links (idempotent writes after reads of `ip -json`): its namespace with
 * forwarding on; the external side, a bridge per physical network in the data plane's
 * namespace with the host interface enslaved and the router's veth on it (a bridge
 * rather than a macvlan: the host interface has one rx handler, and a bridge lets several
 * routers, and later EXTERNAL networks' ports, share the interface and reach each
 * other); the internal sides, a veth per network onto its bridge. Each step only runs
 * when what `ip` shows differs from the spec.
 */

/** A step that cannot be taken until something outside the agent changes, with its reason. */
export class RouterProblem extends Error {
  override readonly name = "RouterProblem";
  constructor(
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }
}

type AddrShow = { ifname: string; addr_info?: { family: string; local: string; prefixlen: number }[] }[];

/** The IPv4 addresses of a device as "a.b.c.d/len". */
export async function addressesOf(h: HostExec, dev: string): Promise<Set<string>> {
  const shown = await h.ipJson<AddrShow>(["addr", "show", "dev", dev]);
  return new Set((shown[0]?.addr_info ?? []).filter((a) => a.family === "inet").map((a) => `${a.local}/${a.prefixlen}`));
}

/** The namespaces under /run/netns. */
export async function namespaces(root: HostExec): Promise<Set<string>> {
  const list = await root.ipJson<{ name: string }[]>(["netns", "list"]);
  return new Set(list.map((n) => n.name));
}

/** Makes the router's namespace exist, with lo up and IPv4 forwarding on. */
export async function ensureNamespace(root: HostExec, rt: HostExec, ns: string): Promise<void> {
  if (!(await namespaces(root)).has(ns)) await root.ip(["netns", "add", ns]);
  await rt.ip(["link", "set", "dev", "lo", "up"]);
  if ((await rt.inNs("sysctl", ["-n", "net.ipv4.ip_forward"])).trim() !== "1") await rt.inNs("sysctl", ["-w", "net.ipv4.ip_forward=1"]);
}

/** Whether forwarding is on in the router's namespace. */
export async function routerForwarding(rt: HostExec): Promise<boolean> {
  return (await rt.inNs("sysctl", ["-n", "net.ipv4.ip_forward"]).catch(() => "")).trim() === "1";
}

/** A veth pair: `leg` in the data plane, `inside` in the router's namespace; recreated unless both ends exist. */
async function ensureVeth(dp: HostExec, rt: HostExec, ns: string, leg: string, inside: string, dpLinks: Map<string, LinkView>, rtLinks: Map<string, LinkView>): Promise<boolean> {
  const l = dpLinks.get(leg);
  const r = rtLinks.get(inside);
  if (l?.linkinfo?.info_kind === "veth" && r?.linkinfo?.info_kind === "veth") return false;
  if (l) await dp.ip(["link", "del", "dev", leg]);
  if (r) await rt.ip(["link", "del", "dev", inside]).catch(() => undefined);
  await dp.ip(["link", "add", "name", leg, "type", "veth", "peer", "name", inside, "netns", ns]);
  return true;
}

/** Makes a device's IPv4 addresses exactly `want`. */
async function ensureAddresses(h: HostExec, dev: string, want: ReadonlySet<string>): Promise<void> {
  const have = await addressesOf(h, dev);
  for (const a of have) if (!want.has(a)) await h.ip(["addr", "del", a, "dev", dev]);
  for (const a of want) if (!have.has(a)) await h.ip(["addr", "add", a, "dev", dev]);
}

/** Sets what differs of a link: MAC, MTU, master, up. */
async function setLink(h: HostExec, dev: string, l: LinkView | undefined, want: { mac?: string; mtu?: number; master?: string }): Promise<void> {
  if (want.mac !== undefined && l?.address !== want.mac) await h.ip(["link", "set", "dev", dev, "address", want.mac]);
  const args: string[] = [];
  if (want.mtu !== undefined && l?.mtu !== want.mtu) args.push("mtu", String(want.mtu));
  if (want.master !== undefined && l?.master !== want.master) args.push("master", want.master);
  if (!l?.flags.includes("UP")) args.push("up");
  if (args.length > 0) await h.ip(["link", "set", "dev", dev, ...args]);
}

/** The addresses the external interface carries: the router's, each floating IP's and each external VIP's /32. */
export function externalAddresses(r: RouterDesired): Set<string> {
  return new Set([r.external.address, ...r.floatingIps.map((f) => `${f.floatingIp}/32`), ...r.loadBalancers.filter((lb) => lb.networkId === undefined).map((lb) => `${lb.vip}/32`)]);
}

/** The addresses an internal interface carries: its own, and each VIP on its network as a /32. */
export function interfaceAddresses(r: RouterDesired, networkId: string): Set<string> {
  const itf = r.interfaces.find((i) => i.networkId === networkId);
  return new Set([...(itf?.addresses ?? []), ...r.loadBalancers.filter((lb) => lb.networkId === networkId).map((lb) => `${lb.vip}/32`)]);
}

/**
 * Only the addresses of a router whose links are in place: `qre`'s (its own, floating
 * IPs', external VIPs') and each internal interface's (its own, its VIPs'). ApplyRouter's
 * quick path when only mappings and load balancers changed.
 */
export async function ensureRouterAddresses(rt: HostExec, r: RouterDesired): Promise<void> {
  await ensureAddresses(rt, ROUTER_EXTERNAL_DEVICE, externalAddresses(r));
  for (const itf of r.interfaces) await ensureAddresses(rt, routerInterfaceName(itf.networkId), interfaceAddresses(r, itf.networkId));
}

/**
 * The external side: the physical network's bridge with `iface` on it, the router's
 * veth on the bridge, `qre` with its MAC and addresses, the default route.
 */
export async function ensureExternal(dp: HostExec, rt: HostExec, ns: string, r: RouterDesired, iface: string | undefined): Promise<void> {
  if (iface === undefined) throw new RouterProblem("PhysicalNetworkUnknown", `physical network '${r.external.physicalNetwork}' is not in this agent's VMCP_NETWORK_PHYSICAL_NETWORKS`);
  let links = await observeLinks(dp);
  const phys = links.get(iface);
  if (!phys) throw new RouterProblem("PhysicalInterfaceMissing", `interface ${iface} of physical network '${r.external.physicalNetwork}' does not exist`);
  const br = externalBridgeName(r.external.physicalNetwork);
  if (!links.has(br)) await dp.ip(["link", "add", "name", br, "type", "bridge", "stp_state", "0"]);
  await setLink(dp, br, links.get(br), {});
  if (phys.master !== br) {
    if (phys.master !== undefined) throw new RouterProblem("PhysicalInterfaceInUse", `interface ${iface} is already on ${phys.master}`);
    const addrs = await addressesOf(dp, iface);
    if (addrs.size > 0) throw new RouterProblem("PhysicalInterfaceHasAddresses", `interface ${iface} carries ${[...addrs].join(", ")}: putting it on ${br} would take them out of service`);
  }
  await setLink(dp, iface, phys, { master: br });
  const leg = externalLegName(r.routerId);
  let rtLinks = await observeLinks(rt);
  if (await ensureVeth(dp, rt, ns, leg, ROUTER_EXTERNAL_DEVICE, links, rtLinks)) {
    links = await observeLinks(dp);
    rtLinks = await observeLinks(rt);
  }
  await setLink(dp, leg, links.get(leg), { master: br });
  await setLink(rt, ROUTER_EXTERNAL_DEVICE, rtLinks.get(ROUTER_EXTERNAL_DEVICE), { mac: r.external.mac });
  await ensureAddresses(rt, ROUTER_EXTERNAL_DEVICE, externalAddresses(r));
  await rt.ip(["route", "replace", "default", "via", r.external.gatewayIp, "dev", ROUTER_EXTERNAL_DEVICE]);
}

/**
 * The internal sides: per interface a veth onto the network's bridge (with its MTU), the
 * router's end with its MAC and addresses; the router's ends no interface wants are
 * deleted. Returns the problems by network id (a missing bridge does not stop the others).
 */
export async function ensureInterfaces(dp: HostExec, rt: HostExec, ns: string, r: RouterDesired): Promise<Map<string, string>> {
  const problems = new Map<string, string>();
  let links = await observeLinks(dp);
  let rtLinks = await observeLinks(rt);
  const wanted = new Set(r.interfaces.map((i) => routerInterfaceName(i.networkId)));
  for (const name of rtLinks.keys()) if (OWNED_ROUTER_INSIDE_LINK.test(name) && !wanted.has(name)) await rt.ip(["link", "del", "dev", name]).catch(() => undefined);
  for (const itf of r.interfaces) {
    const br = bridgeName(itf.networkId);
    const leg = internalLegName(r.routerId, itf.networkId);
    const inside = routerInterfaceName(itf.networkId);
    try {
      const bl = links.get(br);
      if (!bl) throw new RouterProblem("BridgeMissing", `network ${itf.networkId} has no bridge ${br} on this host (ApplyNetwork first)`);
      if (await ensureVeth(dp, rt, ns, leg, inside, links, rtLinks)) {
        links = await observeLinks(dp);
        rtLinks = await observeLinks(rt);
      }
      await setLink(dp, leg, links.get(leg), { mtu: bl.mtu, master: br });
      await setLink(rt, inside, rtLinks.get(inside), { mac: itf.mac, mtu: bl.mtu });
      await ensureAddresses(rt, inside, interfaceAddresses(r, itf.networkId));
    } catch (err) {
      problems.set(itf.networkId, err instanceof Error ? err.message : String(err));
    }
  }
  return problems;
}

/**
 * Deletes, in the data plane's namespace, the router links (`qe…`, `qg…`, `qi…`) no
 * router wants: a deleted router's legs, a physical network's bridge no router uses
 * (which releases its interface).
 */
export async function removeStaleRouterLinks(dp: HostExec, wanted: ReadonlySet<string>): Promise<void> {
  const links = await observeLinks(dp);
  const names = [...links.keys()].filter((n) => OWNED_ROUTER_LINK.test(n) && !wanted.has(n)).sort((a, b) => (a.startsWith("qe") ? 1 : 0) - (b.startsWith("qe") ? 1 : 0));
  for (const n of names) await dp.ip(["link", "del", "dev", n]).catch(() => undefined);
}

/** The data plane links a router wants. */
export function wantedRouterLinks(r: RouterDesired): string[] {
  return [externalBridgeName(r.external.physicalNetwork), externalLegName(r.routerId), ...r.interfaces.map((i) => internalLegName(r.routerId, i.networkId))];
}

/** Runs `fn`, turning a failed command into its message (for a condition). */
export async function problemOf(fn: () => Promise<unknown>): Promise<RouterProblem | undefined> {
  try {
    await fn();
    return undefined;
  } catch (err) {
    if (err instanceof RouterProblem) return err;
    return new RouterProblem("SetupFailed", err instanceof HostCommandError ? err.message : String(err));
  }
}
