import { formatIp4, mask4, parsePrefix4 } from "./ipv4.js";
import type { NetworkDesired } from "./model.js";
import { bridgeName } from "./names.js";

/**
 * A network's dnsmasq, as files and arguments (pure). Static mode: DHCP answers only the
 * MACs of this host's ports (the hostsfile), so the dnsmasq of every host on the network
 * can listen on the shared segment without answering for another host's ports. DNS
 * answers the names of all the network's ports (addn-hosts) and nothing else (no
 * upstream). Options live in the optsfile so a SIGHUP applies changes to ports, router,
 * DNS servers and MTU; a change of the arguments (subnets, addresses) restarts it.
 * Every value comes from the validated state.
 */

/** The files dnsmasq reads, relative to the network's directory. */
export const DNSMASQ_FILES = { hosts: "dhcp-hosts", opts: "dhcp-opts", addnHosts: "addn-hosts", leases: "leases", pid: "dnsmasq.pid", log: "dnsmasq.log" } as const;

/** Whether the network runs a dnsmasq here: some subnet serves DHCP or has a service address. */
export function wantsDnsmasq(n: NetworkDesired): boolean {
  return n.subnets.some((s) => s.serviceAddress !== undefined);
}

/** dnsmasq's arguments for the network, its files in `dir` (a path derived from ids). */
export function dnsmasqArgs(n: NetworkDesired, dir: string): string[] {
  const f = (k: keyof typeof DNSMASQ_FILES) => `${dir}/${DNSMASQ_FILES[k]}`;
  const args = [
    "--keep-in-foreground",
    "--conf-file=/dev/null",
    "--user=root",
    "--bind-interfaces",
    `--interface=${bridgeName(n.networkId)}`,
    "--except-interface=lo",
    ...n.subnets.filter((s) => s.serviceAddress).map((s) => `--listen-address=${s.serviceAddress!}`),
    `--pid-file=${f("pid")}`,
    `--dhcp-leasefile=${f("leases")}`,
    `--dhcp-hostsfile=${f("hosts")}`,
    `--dhcp-optsfile=${f("opts")}`,
    `--addn-hosts=${f("addnHosts")}`,
    "--no-resolv",
    "--no-hosts",
    "--no-poll",
    "--dhcp-no-override",
    "--log-facility=-",
    "--log-dhcp",
  ];
  n.subnets.forEach((s, i) => {
    if (!s.dhcp) return;
    const pre = parsePrefix4(s.cidr, { strict: true })!;
    args.push(`--dhcp-range=set:s${i},${formatIp4(pre.net)},static,${formatIp4(mask4(pre.len))},${s.leaseSeconds}s`);
  });
  if (n.dnsDomain) args.push(`--domain=${n.dnsDomain}`, `--local=/${n.dnsDomain}/`, "--expand-hosts");
  return args;
}

/** The DHCP hostsfile: one line per local port and fixed IP in a DHCP subnet. */
export function dhcpHosts(n: NetworkDesired): string {
  const lines: string[] = [];
  for (const p of n.ports) {
    const ip = p.fixedIps.find((a) => n.subnets.some((s) => s.dhcp && inCidr(s.cidr, a)));
    if (ip) lines.push([p.mac, ip, ...(p.hostname ? [p.hostname] : [])].join(","));
  }
  return lines.join("\n") + (lines.length ? "\n" : "");
}

/** The DHCP options per subnet tag: router, DNS servers, MTU (option 26). */
export function dhcpOpts(n: NetworkDesired): string {
  const lines: string[] = [];
  n.subnets.forEach((s, i) => {
    if (!s.dhcp) return;
    if (s.gatewayIp) lines.push(`tag:s${i},option:router,${s.gatewayIp}`);
    else lines.push(`tag:s${i},option:router`);
    const dns = s.dnsServers.length > 0 ? s.dnsServers : s.serviceAddress ? [s.serviceAddress] : [];
    if (dns.length > 0) lines.push(`tag:s${i},option:dns-server,${dns.join(",")}`);
    lines.push(`tag:s${i},option:mtu,${n.mtu}`);
  });
  return lines.join("\n") + (lines.length ? "\n" : "");
}

/** The names of every port of the network, local and remote ("ip name" lines). */
export function addnHosts(n: NetworkDesired): string {
  const lines: string[] = [];
  for (const p of n.ports) if (p.hostname) for (const ip of p.fixedIps) lines.push(`${ip} ${p.hostname}`);
  for (const r of n.remotePorts) if (r.hostname) for (const ip of r.ips) lines.push(`${ip} ${r.hostname}`);
  return lines.join("\n") + (lines.length ? "\n" : "");
}

function inCidr(cidr: string, ip: string): boolean {
  const pre = parsePrefix4(cidr, { strict: true })!;
  const a = parsePrefix4(ip, { strict: true, bareOk: true })!;
  return ((a.net & mask4(pre.len)) >>> 0) === pre.net;
}
