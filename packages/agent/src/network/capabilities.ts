import { access, constants } from "node:fs/promises";
import { HostExec } from "./host-exec.js";
import { ipsecProblem } from "./router-ipsec.js";

/** One probed network feature (a node capability name) and why. */
export interface NetworkFeatureSupport {
  readonly name: string;
  readonly available: boolean;
  readonly reason: string;
}

async function tryCmd(fn: () => Promise<unknown>): Promise<string | undefined> {
  try {
    await fn();
    return undefined;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

/** The probe under way in each namespace ("" for the host's): the next one waits for it. */
const probing = new Map<string, Promise<unknown>>();

/**
 * Probes the primitives the data plane needs in the agent's namespace: a VXLAN device
 * can be created (a throwaway `qxp…` link, deleted at once), nft answers and
 * br_netfilter exists (security groups), dnsmasq is installed (DHCP/DNS). VLAN is
 * probed the same way and reported, not used: this data plane has no VLAN networks yet.
 * One probe at a time per namespace: probes may be asked for at once
 * (a registration's and a GetNetworkCapabilities'), and their test devices would collide
 * (the same name; VXLAN devices with the same VNI and port), one of them then reporting
 * VXLAN unavailable.
 */
export function probeNetworkFeatures(netns?: string): Promise<NetworkFeatureSupport[]> {
  const key = netns ?? "";
  const next = (probing.get(key) ?? Promise.resolve()).then(() => probeFeaturesNow(netns));
  const settled = next.catch(() => undefined);
  probing.set(key, settled);
  void settled.then(() => {
    if (probing.get(key) === settled) probing.delete(key);
  });
  return next;
}

async function probeFeaturesNow(netns?: string): Promise<NetworkFeatureSupport[]> {
  const h = new HostExec(netns);
  const probe = `qxp${process.pid.toString(16).slice(-6)}`;
  const vx = await tryCmd(async () => {
    await h.ip(["link", "add", "name", probe, "type", "vxlan", "id", "1", "dstport", "4789", "nolearning"]);
    await h.ip(["link", "del", "dev", probe]);
  });
  const br = await tryCmd(async () => {
    await h.ip(["link", "add", "name", probe, "type", "bridge"]);
    await h.ip(["link", "del", "dev", probe]);
  });
  const nft = await tryCmd(() => h.inNs("nft", ["list", "tables"]));
  const brnf = await tryCmd(() => access("/proc/sys/net/bridge/bridge-nf-call-iptables", constants.R_OK));
  const dnsmasq = await tryCmd(() => h.inNs("dnsmasq", ["--version"]));
  const vlan = await tryCmd(async () => {
    await h.ip(["link", "add", "name", probe, "type", "dummy"]);
    try {
      await h.ip(["link", "add", "link", probe, "name", `${probe}v`, "type", "vlan", "id", "2"]);
    } finally {
      await h.ip(["link", "del", "dev", probe]).catch(() => undefined);
    }
  });
  const wg = await probeWireguard(h);
  const ipsec = await ipsecProblem();
  const l2 = br ?? vx;
  return [
    { name: "network-vxlan", available: l2 === undefined, reason: l2 === undefined ? "bridge and VXLAN (nolearning, dstport 4789) devices can be created" : `cannot create the devices: ${l2}` },
    {
      name: "network-security-groups",
      available: nft === undefined && brnf === undefined,
      reason: nft !== undefined ? `nft does not answer (Debian: nftables): ${nft}` : brnf !== undefined ? "br_netfilter is missing (no /proc/sys/net/bridge): bridged traffic would bypass the inet table" : "nft answers and br_netfilter is on",
    },
    { name: "network-dhcp", available: dnsmasq === undefined, reason: dnsmasq === undefined ? "dnsmasq is installed" : `dnsmasq is missing (Debian: dnsmasq-base): ${dnsmasq}` },
    { name: "network-vlan", available: false, reason: vlan === undefined ? "the kernel can create VLAN devices, but this data plane has no VLAN networks yet" : `the kernel cannot create VLAN devices: ${vlan}` },
    { name: "network-uplink", available: false, reason: UNLINKED },
    { name: "vpn-wireguard", available: wg === undefined, reason: wg ?? "routers' WireGuard connections run in user space: /dev/net/tun, wireguard-go and wg are present" },
    { name: "vpn-ipsec", available: ipsec === undefined, reason: ipsec ?? "routers' IPsec connections run in strongSwan's charon per router namespace, ESP in user space (kernel-libipsec, UDP-encapsulated): charon, its kernel-libipsec plugin, swanctl and /dev/net/tun are present" },
  ];
}

/** Why WireGuard tunnels cannot run here (user space: the TUN device and the two tools), or undefined. */
async function probeWireguard(h: HostExec): Promise<string | undefined> {
  const missing: string[] = [];
  if (await tryCmd(() => access("/dev/net/tun", constants.R_OK | constants.W_OK))) missing.push("/dev/net/tun");
  if (await tryCmd(() => h.inNs("wireguard-go", ["--version"]))) missing.push("wireguard-go (Debian: wireguard-go)");
  if (await tryCmd(() => h.inNs("wg", ["--version"]))) missing.push("wg (Debian: wireguard-tools)");
  return missing.length === 0 ? undefined : `missing: ${missing.join(", ")}`;
}

/** "network-uplink" without a configured physical network. */
const UNLINKED = "this data plane maps no physical network to a host interface yet (VMCP_NETWORK_PHYSICAL_NETWORKS is empty; routers' external sides, BRIDGE and EXTERNAL networks need one): it builds overlay networks only";

/**
 * "network-uplink" from the configured physical networks (name → interface): available
 * when at least one interface exists in the namespace; `present` lists their names.
 */
export async function probeUplink(netns: string | undefined, physical: ReadonlyMap<string, string>): Promise<{ feature: NetworkFeatureSupport; present: string[] }> {
  const name = "network-uplink";
  if (physical.size === 0) return { feature: { name, available: false, reason: UNLINKED }, present: [] };
  const links = await new HostExec(netns).ipJson<{ ifname: string }[]>(["link", "show"]).catch(() => [] as { ifname: string }[]);
  const have = new Set(links.map((l) => l.ifname));
  const all = [...physical].sort(([a], [b]) => a.localeCompare(b));
  const present = all.filter(([, i]) => have.has(i));
  const absent = all.filter(([, i]) => !have.has(i));
  const list = (xs: [string, string][]) => xs.map(([n, i]) => `${n} (${i})`).join(", ");
  const reason =
    present.length === 0
      ? `no configured physical network's interface exists: ${list(absent)}`
      : `physical networks ${list(present)} are reachable${absent.length > 0 ? `; missing: ${list(absent)}` : ""}`;
  return { feature: { name, available: present.length > 0, reason }, present: present.map(([n]) => n) };
}

/** What GetNetworkCapabilities answers: the probed features and this host's underlay address. */
export interface NetworkCapabilityProbe {
  readonly features: NetworkFeatureSupport[];
  /** The configured physical networks whose interface exists, sorted. */
  readonly physicalNetworks: string[];
  /** This host's VXLAN source address; empty when it has none ("network-vxlan" is then unavailable). */
  readonly underlayAddress: string;
}

/** The global-scope IPv4 addresses of the namespace, in `ip`'s order. */
export async function globalIpv4Addresses(netns?: string): Promise<string[]> {
  const links = await new HostExec(netns).ipJson<{ addr_info?: { family?: string; local?: string }[] }[]>(["-4", "addr", "show", "scope", "global"]);
  return links.flatMap((l) => (l.addr_info ?? []).filter((a) => a.family === "inet" && a.local).map((a) => a.local!));
}

/**
 * The features ({@link probeNetworkFeatures}) and the underlay address: `configured`
 * (VMCP_NETWORK_UNDERLAY_ADDRESS) when given, else the namespace's first global-scope
 * IPv4 address. Without one, or with a configured one the namespace does not have, VXLAN
 * cannot work here: "network-vxlan" is reported unavailable saying why. `physical`
 * (VMCP_NETWORK_PHYSICAL_NETWORKS) decides "network-uplink" ({@link probeUplink}).
 */
export async function probeNetworkCapabilities(netns?: string, configured?: string, physical: ReadonlyMap<string, string> = new Map()): Promise<NetworkCapabilityProbe> {
  const [features, addresses, uplink] = await Promise.all([probeNetworkFeatures(netns), globalIpv4Addresses(netns).catch(() => [] as string[]), probeUplink(netns, physical)]);
  const underlayAddress = configured ?? addresses[0] ?? "";
  const problem =
    underlayAddress === ""
      ? "no underlay address: this host has no global-scope IPv4 address; set VMCP_NETWORK_UNDERLAY_ADDRESS"
      : !addresses.includes(underlayAddress)
        ? `the underlay address ${underlayAddress} (VMCP_NETWORK_UNDERLAY_ADDRESS) is not on any interface of this host`
        : undefined;
  return {
    underlayAddress,
    physicalNetworks: uplink.present,
    features: features.map((f) => (f.name === "network-vxlan" && f.available && problem ? { ...f, available: false, reason: problem } : f.name === "network-uplink" ? uplink.feature : f)),
  };
}
