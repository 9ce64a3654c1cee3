import ipaddr from "ipaddr.js";

/** An IPv4 address as a number (0 .. 2^32-1), or undefined when `s` is not a dotted quad of decimal numbers. */
export function ipv4ToInt(s: string): number | undefined {
  if (!ipaddr.IPv4.isValidFourPartDecimal(s)) return undefined;
  return ipaddr.IPv4.parse(s).toByteArray().reduce((n, b) => n * 256 + b, 0);
}

/** A number (0 .. 2^32-1) as a dotted-quad IPv4 address. */
export function intToIpv4(n: number): string {
  return [24, 16, 8, 0].map((s) => Math.floor(n / 2 ** s) % 256).join(".");
}

/** An IPv4 subnet: its network and broadcast addresses and its usable hosts, as numbers. */
export interface Ipv4Subnet {
  readonly cidr: string;
  readonly prefix: number;
  readonly network: number;
  readonly broadcast: number;
  readonly firstHost: number;
  readonly lastHost: number;
}

/** Parses "a.b.c.d/n" (the network address, host bits zero); a string says what is wrong. */
export function parseIpv4Cidr(s: string, prefixMin = 0, prefixMax = 32): Ipv4Subnet | string {
  const m = /^([0-9.]+)\/([0-9]{1,2})$/.exec(s);
  const addr = m ? ipv4ToInt(m[1]!) : undefined;
  if (!m || addr === undefined) return `must be an IPv4 subnet in CIDR notation, e.g. "10.0.0.0/24", got "${s}"`;
  const prefix = Number(m[2]);
  if (prefix < prefixMin || prefix > prefixMax) return `the prefix must be /${prefixMin} to /${prefixMax}, got /${prefix}`;
  const size = 2 ** (32 - prefix);
  const network = addr - (addr % size);
  if (network !== addr) return `has host bits set: the subnet is "${intToIpv4(network)}/${prefix}"`;
  const broadcast = network + size - 1;
  return { cidr: s, prefix, network, broadcast, firstHost: prefix >= 31 ? network : network + 1, lastHost: prefix >= 31 ? broadcast : broadcast - 1 };
}

/** Whether two IPv4 subnets share an address. */
export function ipv4Overlap(a: Ipv4Subnet, b: Ipv4Subnet): boolean {
  return a.network <= b.broadcast && b.network <= a.broadcast;
}
