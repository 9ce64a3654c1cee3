/** IPv4 addresses and prefixes, parsed strictly and written back canonically (pure). */

/** An address as a 32-bit unsigned number. */
export type Ip4 = number;

/** A prefix: its network address (host bits clear) and length. */
export interface Prefix4 {
  readonly net: Ip4;
  readonly len: number;
}

const OCTET = /^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9][0-9]|[0-9])$/;

/** Parses dotted-quad IPv4 (no leading zeros, nothing else); undefined when malformed. */
export function parseIp4(s: string): Ip4 | undefined {
  const parts = s.split(".");
  if (parts.length !== 4 || !parts.every((p) => OCTET.test(p))) return undefined;
  return parts.reduce((acc, p) => acc * 256 + Number(p), 0);
}

/** Formats a 32-bit address. */
export function formatIp4(ip: Ip4): string {
  return [ip >>> 24, (ip >>> 16) & 255, (ip >>> 8) & 255, ip & 255].join(".");
}

/** The netmask of a prefix length, as a number. */
export function mask4(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
}

/**
 * Parses "a.b.c.d/len"; `strict` refuses host bits (a subnet), otherwise they are
 * cleared (an allowed-address prefix). A bare address is a /32 when `bareOk`.
 */
export function parsePrefix4(s: string, opts: { strict: boolean; bareOk?: boolean }): Prefix4 | undefined {
  const slash = s.indexOf("/");
  if (slash < 0) {
    const ip = opts.bareOk ? parseIp4(s) : undefined;
    return ip === undefined ? undefined : { net: ip, len: 32 };
  }
  const ip = parseIp4(s.slice(0, slash));
  const lenText = s.slice(slash + 1);
  if (ip === undefined || !/^(3[0-2]|[12]?[0-9])$/.test(lenText)) return undefined;
  const len = Number(lenText);
  const net = (ip & mask4(len)) >>> 0;
  if (opts.strict && net !== ip) return undefined;
  return { net, len };
}

/** Formats a prefix as "a.b.c.d/len". */
export function formatPrefix4(p: Prefix4): string {
  return `${formatIp4(p.net)}/${p.len}`;
}

/** Whether an address lies in a prefix. */
export function contains4(p: Prefix4, ip: Ip4): boolean {
  return ((ip & mask4(p.len)) >>> 0) === p.net;
}

/** Whether two prefixes overlap. */
export function overlaps4(a: Prefix4, b: Prefix4): boolean {
  return a.len <= b.len ? contains4(a, b.net) : contains4(b, a.net);
}
