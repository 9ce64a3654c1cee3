import { INTERFACE_NAME, PHYSICAL_NETWORK } from "./router-model.js";

/**
 * Parses VMCP_NETWORK_PHYSICAL_NETWORKS, "name=interface" pairs separated by commas
 * (e.g. "ext=eth1,physnet2=bond0"), pure: names are [a-z][a-z0-9-]{0,31}, interfaces
 * Linux interface names (letters, digits, '_', '.', '-'; at most 15), each name and each
 * interface at most once (one bridge takes an interface). Returns the map, or what is wrong.
 */
export function parsePhysicalNetworks(text: string): { map: Map<string, string>; problems: string[] } {
  const map = new Map<string, string>();
  const problems: string[] = [];
  const used = new Map<string, string>();
  for (const item of text.split(",").map((x) => x.trim()).filter((x) => x !== "")) {
    const eq = item.indexOf("=");
    const name = eq < 0 ? item : item.slice(0, eq);
    const iface = eq < 0 ? "" : item.slice(eq + 1);
    if (!PHYSICAL_NETWORK.test(name)) problems.push(`'${name}' is not a physical network name (a lowercase letter, then up to 31 lowercase letters, digits or hyphens)`);
    else if (!INTERFACE_NAME.test(iface)) problems.push(`'${name}' needs '=<interface>' with an interface name (letters, digits, '_', '.', '-'; at most 15), got '${iface}'`);
    else if (map.has(name)) problems.push(`'${name}' is given twice`);
    else if (used.has(iface)) problems.push(`interface '${iface}' is given to both '${used.get(iface)!}' and '${name}'`);
    else {
      map.set(name, iface);
      used.set(iface, name);
    }
  }
  return { map, problems };
}
