/**
 * Host object names, derived from ids only (Linux interface names are at most 15
 * characters): `qb`, `qv` and `qt` plus the first 12 hex digits of a canonical UUID.
 * No user string ever becomes part of a name.
 */

/**
 * A network namespace name (under /run/netns) the agent accepts from its configuration:
 * VMCP_NETWORK_NETNS, the data plane's namespace, and the QEMU backend's `netns`.
 */
export const NETNS_NAME = /^[a-zA-Z0-9_.-]{1,64}$/;

/** A lowercase canonical UUID (8-4-4-4-12 hex digits). */
export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** The 12 hex digits of an id that host names carry. */
export function shortId(id: string): string {
  if (!UUID.test(id)) throw new Error(`not a canonical UUID: ${JSON.stringify(id)}`);
  return id.replaceAll("-", "").slice(0, 12);
}

/** The network's bridge. */
export const bridgeName = (networkId: string): string => `qb${shortId(networkId)}`;
/** The network's VXLAN device. */
export const vxlanName = (networkId: string): string => `qv${shortId(networkId)}`;
/** A port's TAP device. */
export const tapName = (portId: string): string => `qt${shortId(portId)}`;
/**
 * The MAC of a network's gateway, the same on every host: 02 (locally administered,
 * unicast) and the id's first 10 hex digits.
 */
export const gatewayMac = (networkId: string): string => `02${shortId(networkId).slice(0, 10)}`.replace(/(..)(?!$)/g, "$1:");
/**
 * The MAC this host's routed frames carry across the tunnel (a distributed gateway's
 * per-host MAC, as Neutron DVR's host MAC): 06 (locally administered, unicast; never the
 * gateway MAC's 02), the network id's first byte, then the four bytes of the host's
 * underlay IPv4 address, so it differs between the hosts of a network.
 */
export function hostGatewayMac(networkId: string, underlay: string): string {
  const octets = underlay.split(".").map((o) => Number(o));
  if (octets.length !== 4 || octets.some((o) => !Number.isInteger(o) || o < 0 || o > 255)) throw new Error(`not an IPv4 address: ${JSON.stringify(underlay)}`);
  return ["06", shortId(networkId).slice(0, 2), ...octets.map((o) => o.toString(16).padStart(2, "0"))].join(":");
}
/** A security group's nftables name stem (chains `sg_<hex>_in`/`_out`, member set `sgm_<hex>`). */
export const sgName = (sgId: string): string => shortId(sgId);

/** Interface names the agent owns: the ones it may delete when no network wants them. */
export const OWNED_LINK = /^q[bvt][0-9a-f]{12}$/;
