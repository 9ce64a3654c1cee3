import type { HostExec } from "./host-exec.js";
import { bridgeAddresses } from "./links.js";
import type { NetworkDesired } from "./model.js";
import { bridgeName, vxlanName } from "./names.js";

/**
 * What a distributed gateway needs to route to guests on other hosts (as Neutron DVR):
 *
 * - A permanent neighbour entry on the bridge for every address of every remote port
 *   (`ip neigh replace <ip> lladdr <mac> dev qb… nud permanent`), so the host never ARPs
 *   across the tunnel for them (its ARP, sent from a gateway address, is dropped there).
 * - A static entry in the bridge's FDB for every remote port's MAC on the VXLAN device
 *   (`bridge fdb replace <mac> dev qv… master static`): the bridge would never learn those
 *   MACs from routed traffic (the replies come back routed by the other host, from its
 *   own MAC), and would flood every routed frame to the local ports too.
 *
 * Both only for a network with a gateway; without one both sets are empty, so converge
 * removes what a removed gateway left. Reads and idempotent writes, like links.ts.
 */

/** The bridge's wanted permanent neighbours, address → MAC (the first remote port naming an address wins). */
export function desiredNeighbours(n: NetworkDesired): Map<string, string> {
  const out = new Map<string, string>();
  if (!n.gateway) return out;
  const own = new Set([...bridgeAddresses(n)].map((a) => a.split("/")[0]!));
  for (const r of n.remotePorts) for (const ip of r.ips) if (!own.has(ip) && !out.has(ip)) out.set(ip, r.mac);
  return out;
}

/** The bridge's permanent IPv4 neighbours, address → MAC. */
export async function observeNeighbours(h: HostExec, bridge: string): Promise<Map<string, string>> {
  const shown = await h.ipJson<{ dst: string; lladdr?: string }[]>(["-4", "neigh", "show", "dev", bridge, "nud", "permanent"]);
  return new Map(shown.map((e) => [e.dst, e.lladdr ?? ""]));
}

/** The wanted static bridge FDB entries on the VXLAN device: the remote ports' MACs. */
export function desiredBridgeFdb(n: NetworkDesired): Set<string> {
  return new Set(n.gateway ? n.remotePorts.map((r) => r.mac) : []);
}

/** The VXLAN device's static entries in the bridge's FDB (MACs). */
export async function observeBridgeFdb(h: HostExec, vx: string): Promise<Set<string>> {
  const out = await h.bridge(["-json", "fdb", "show", "dev", vx]);
  const entries = (out.trim() === "" ? [] : JSON.parse(out)) as { mac: string; master?: string; state?: string }[];
  return new Set(entries.filter((e) => e.master !== undefined && e.state === "static").map((e) => e.mac));
}

/** Makes the bridge's permanent neighbours and the VXLAN device's static bridge FDB entries match the remote ports. */
export async function ensureRemoteNeighbours(h: HostExec, n: NetworkDesired): Promise<void> {
  const br = bridgeName(n.networkId);
  const vx = vxlanName(n.networkId);
  const wantFdb = desiredBridgeFdb(n);
  const haveFdb = await observeBridgeFdb(h, vx);
  for (const mac of haveFdb) if (!wantFdb.has(mac)) await h.bridge(["fdb", "del", mac, "dev", vx, "master"]);
  for (const mac of wantFdb) if (!haveFdb.has(mac)) await h.bridge(["fdb", "replace", mac, "dev", vx, "master", "static"]);
  const want = desiredNeighbours(n);
  const have = await observeNeighbours(h, br);
  for (const ip of have.keys()) if (!want.has(ip)) await h.ip(["neigh", "del", ip, "dev", br]);
  for (const [ip, mac] of want) if (have.get(ip) !== mac) await h.ip(["neigh", "replace", ip, "lladdr", mac, "dev", br, "nud", "permanent"]);
}

/** What is missing or different, for the GatewayReady condition ("" when nothing). */
export async function remoteNeighboursProblem(h: HostExec, n: NetworkDesired): Promise<string> {
  const have = await observeNeighbours(h, bridgeName(n.networkId)).catch(() => new Map<string, string>());
  const wrong = [...desiredNeighbours(n)].filter(([ip, mac]) => have.get(ip) !== mac);
  if (wrong.length > 0) return `${wrong.length} remote ports' neighbour entries missing or different, e.g. ${wrong[0]![0]} → ${wrong[0]![1]}`;
  const fdb = await observeBridgeFdb(h, vxlanName(n.networkId)).catch(() => new Set<string>());
  const missing = [...desiredBridgeFdb(n)].filter((m) => !fdb.has(m));
  return missing.length > 0 ? `${missing.length} remote ports' bridge forwarding entries missing, e.g. ${missing[0]!}` : "";
}
