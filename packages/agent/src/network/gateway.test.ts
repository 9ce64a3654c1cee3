import assert from "node:assert/strict";
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import { Code, createClient, type Client, type ConnectError } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { GatewayMode, NetworkService, PortState, RuleDirection, RuleProtocol, type NetworkSpecSchema, type SecurityGroupRuleSchema } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { silentLogger } from "@quantix/rpc";
import { ensureDebianPackages, rejection, until } from "@quantix/testing";
import { SimulatedBackend } from "../backends/simulated/simulated-backend.js";
import { startAgentServer, type AgentServer } from "../rpc/agent-server.js";
import { VmManager } from "../vm-manager.js";
import { probeNetworkCapabilities } from "./capabilities.js";
import { NetworkHost } from "./network-host.js";
import { bridgeName, gatewayMac, tapName, vxlanName } from "./names.js";

// The distributed gateway, with real traffic. Two "hosts" (namespaces joined by a veth
// underlay), each with a NetworkHost behind a real agent server; one guest namespace on
// each (a veth named as its port's TAP); an "outside" namespace standing for the
// internet (203.0.113.7 on its loopback), linked to each host by its own veth: h1 reaches it
// as 198.51.100.1, h2 as 198.51.101.1. A TCP service there answers every connection with
// the peer address it sees, so the guest learns through which host (and with which
// source address) its traffic left.

const run = promisify(execFile);
const P = `qxg${(process.pid & 0xffff).toString(16)}`;
const H1 = `${P}h1`;
const H2 = `${P}h2`;
const OUT = `${P}o`;
const G = { g1: `${P}g1`, g2: `${P}g2` };
const root = mkdtempSync(join(tmpdir(), "quantix-gw-"));
const NET = "0b000000-0000-4000-8000-000000000001";
const SG = "5c000000-0000-4000-8000-000000000001";
const PORT = { g1: "c5000000-0000-4000-8000-000000000001", g2: "c6000000-0000-4000-8000-000000000002" };
const MAC = { g1: "52:54:00:00:01:11", g2: "52:54:00:00:01:12" };
const IP = { g1: "10.30.0.11", g2: "10.30.0.12" };
const GW = "10.30.0.1";
const INTERNET = "203.0.113.7";
const UPLINK = { h1: "198.51.100.1", h2: "198.51.101.1" };

interface Side {
  host: NetworkHost;
  server: AgentServer;
  backend: SimulatedBackend;
  c: Client<typeof NetworkService>;
}
const sides: Partial<Record<"h1" | "h2", Side>> = {};
const children: ChildProcess[] = [];

const sh = (args: string[]) => execFileSync(args[0]!, args.slice(1), { stdio: ["ignore", "pipe", "pipe"], timeout: 15_000 }).toString();
const inNs = (ns: string, args: string[]) => run("ip", ["netns", "exec", ns, ...args], { timeout: 20_000 });
const ok = (p: Promise<unknown>) => p.then(() => true, () => false);
const fields = (e: ConnectError) => e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));
const pings = (from: string, ip: string) => ok(inNs(from, ["ping", "-c", "1", "-W", "1", ip]));
const connects = (from: string, ip: string, port: number, source = "") =>
  ok(inNs(from, ["python3", "-c", `import socket; socket.create_connection(("${ip}", ${port}), timeout=2, source_address=${source ? `("${source}", 0)` : "None"}).close()`]));
/** The address the outside's service saw this guest's connection come from; undefined when it does not connect. */
const seenAs = (from: string) =>
  inNs(from, ["python3", "-c", `import socket; s=socket.create_connection(("${INTERNET}", 8080), timeout=2); print(s.recv(64).decode()); s.close()`]).then(
    (r) => r.stdout.trim(),
    () => undefined,
  );

async function startSide(name: "h1" | "h2", ns: string): Promise<Side> {
  const host = new NetworkHost({ stateDir: join(root, name), netns: ns, adoptVethPorts: true });
  await host.start();
  const backend = new SimulatedBackend({ bootMs: 20 });
  const manager = new VmManager({ backend, portTaps: (id) => host.portTap(id) });
  await manager.start();
  const server = await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: silentLogger, network: { host, features: () => probeNetworkCapabilities(ns) } });
  return { host, server, backend, c: createClient(NetworkService, createGrpcTransport({ baseUrl: server.url })) };
}

function spec(host: "h1" | "h2", mode: GatewayMode | undefined): MessageInitShape<typeof NetworkSpecSchema> {
  const local = host === "h1" ? "192.0.2.1" : "192.0.2.2";
  const peer = host === "h1" ? "192.0.2.2" : "192.0.2.1";
  const all = [
    { portId: PORT.g1, macAddress: MAC.g1, fixedIps: [IP.g1], securityGroupIds: [SG], hostname: "g1", on: "h1" },
    { portId: PORT.g2, macAddress: MAC.g2, fixedIps: [IP.g2], securityGroupIds: [SG], hostname: "g2", on: "h2" },
  ];
  return {
    networkId: NET,
    vni: 4343,
    mtu: 1450,
    localUnderlayAddress: local,
    peerUnderlayAddresses: [peer],
    subnets: [{ cidr: "10.30.0.0/24", gatewayIp: GW, dhcpEnabled: true, serviceAddress: host === "h1" ? "10.30.0.2" : "10.30.0.3" }],
    ports: all.filter((p) => p.on === host).map(({ on: _on, ...p }) => p),
    remotePorts: all.filter((p) => p.on !== host).map((p) => ({ macAddress: p.macAddress, underlayAddress: peer, ipAddresses: p.fixedIps, hostname: p.hostname })),
    ...(mode === undefined ? {} : { gateway: { mode } }),
  };
}

/**
 * The guests' group, as a project's default group: ingress from its own members only
 * (default deny for everything else), plus `rules` (without egress rules, egress is
 * allowed).
 */
async function applyGroup(rules: MessageInitShape<typeof SecurityGroupRuleSchema>[]): Promise<void> {
  const all = [{ direction: RuleDirection.INGRESS, remoteGroupId: SG }, ...rules];
  for (const s of [sides.h1!, sides.h2!]) await s.c.applySecurityGroup({ spec: { securityGroupId: SG, rules: all, memberIps: [IP.g1, IP.g2] }, generation: 1n });
}

async function applyBoth(mode: GatewayMode | undefined, generation: bigint) {
  const s1 = await sides.h1!.c.applyNetwork({ spec: spec("h1", mode), generation });
  const s2 = await sides.h2!.c.applyNetwork({ spec: spec("h2", mode), generation });
  return [s1, s2] as const;
}

const addrs = (ns: string, dev: string) => (JSON.parse(sh(["ip", "-n", ns, "-json", "addr", "show", "dev", dev])) as { address: string; addr_info: { family: string; local: string; prefixlen: number }[] }[])[0]!;
const natTable = (ns: string) => sh(["ip", "netns", "exec", ns, "nft", "list", "tables"]).includes("table ip quantix_nat");

before(async () => {
  await ensureDebianPackages(["nftables", "dnsmasq-base", "busybox-static", "iputils-ping"]);
  for (const ns of [H1, H2, OUT, G.g1, G.g2]) {
    sh(["ip", "netns", "add", ns]);
    sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
  }
  const link = (a: string, an: string, aAddr: string, b: string, bn: string, bAddr: string) => {
    sh(["ip", "-n", a, "link", "add", an, "type", "veth", "peer", "name", bn, "netns", b]);
    sh(["ip", "-n", a, "addr", "add", aAddr, "dev", an]);
    sh(["ip", "-n", b, "addr", "add", bAddr, "dev", bn]);
    sh(["ip", "-n", a, "link", "set", an, "up"]);
    sh(["ip", "-n", b, "link", "set", bn, "up"]);
  };
  link(H1, `${P}u1`, "192.0.2.1/24", H2, `${P}u2`, "192.0.2.2/24");
  link(H1, `${P}x1`, `${UPLINK.h1}/24`, OUT, `${P}o1`, "198.51.100.10/24");
  link(H2, `${P}x2`, `${UPLINK.h2}/24`, OUT, `${P}o2`, "198.51.101.10/24");
  sh(["ip", "-n", OUT, "addr", "add", `${INTERNET}/32`, "dev", "lo"]);
  sh(["ip", "-n", H1, "route", "add", "203.0.113.0/24", "via", "198.51.100.10"]);
  sh(["ip", "-n", H2, "route", "add", "203.0.113.0/24", "via", "198.51.101.10"]);
  // The outside routes each guest back to its own host (for ROUTED: the guests' own addresses).
  sh(["ip", "-n", OUT, "route", "add", `${IP.g1}/32`, "via", UPLINK.h1]);
  sh(["ip", "-n", OUT, "route", "add", `${IP.g2}/32`, "via", UPLINK.h2]);
  const service = spawn("ip", ["netns", "exec", OUT, "python3", "-c",
    `import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("${INTERNET}", 8080)); s.listen(16)\nwhile True:\n c,a=s.accept(); c.sendall(a[0].encode()); c.close()\n`], { stdio: "ignore" });
  children.push(service);
  sides.h1 = await startSide("h1", H1);
  sides.h2 = await startSide("h2", H2);
  await applyGroup([]);
  // After the groups' converge (which deletes links named like the agent's that no network
  // wants), before the network's: its converge adopts them as the ports' devices.
  for (const [g, h] of [["g1", H1], ["g2", H2]] as const) {
    sh(["ip", "-n", h, "link", "add", tapName(PORT[g]), "type", "veth", "peer", "name", "eth0", "netns", G[g]]);
    sh(["ip", "-n", G[g], "link", "set", "eth0", "address", MAC[g], "mtu", "1450", "up"]);
  }
  await applyBoth(undefined, 1n);
  for (const g of ["g1", "g2"] as const) {
    sh(["ip", "-n", G[g], "addr", "add", `${IP[g]}/24`, "dev", "eth0"]);
    sh(["ip", "-n", G[g], "route", "add", "default", "via", GW]);
  }
});

after(async () => {
  if (process.env["QXG_KEEP"]) return;
  for (const c of children) c.kill("SIGKILL");
  for (const s of [sides.h1, sides.h2]) {
    await s?.server.close().catch(() => undefined);
    await s?.backend.close().catch(() => undefined);
    await s?.host.close(true).catch(() => undefined);
  }
  for (const ns of [G.g1, G.g2, OUT, H1, H2]) {
    try {
      sh(["ip", "netns", "del", ns]);
    } catch {
      // already gone
    }
  }
  rmSync(root, { recursive: true, force: true });
});

test("without a gateway nothing answers on the gateway address", async () => {
  const [s1] = await applyBoth(undefined, 2n);
  assert.ok(s1.conditions.some((c) => c.type === "GatewayReady" && c.status && c.reason === "NoGateway"), JSON.stringify(s1.conditions));
  assert.ok(await until(async () => ((await pings(G.g2, IP.g1)) ? true : undefined), "g2 pings g1 over VXLAN", 15_000));
  assert.equal(await pings(G.g1, GW), false);
  assert.equal(await seenAs(G.g1), undefined, "no way out");
});

test("a gateway without a subnet gateway_ip, or without a mode, is INVALID_ARGUMENT naming the fields", async () => {
  const bad = spec("h1", GatewayMode.UNSPECIFIED) as { subnets: { gatewayIp: string }[] };
  bad.subnets[0]!.gatewayIp = "";
  const e = await rejection(sides.h1!.c.applyNetwork({ spec: bad as never, generation: 9n }));
  assert.equal(e.code, Code.InvalidArgument);
  assert.deepEqual(fields(e).sort(), ["spec.gateway.mode", "spec.subnets[0].gateway_ip"]);
  assert.equal((await sides.h1!.c.getNetwork({ networkId: NET })).observedGeneration, 2n, "nothing changed");
});

test("NAT: each guest reaches the outside through its own host, behind that host's address", async () => {
  const [s1, s2] = await applyBoth(GatewayMode.NAT, 3n);
  for (const s of [s1, s2]) {
    assert.deepEqual(s.conditions.filter((c) => !c.status), [], JSON.stringify(s.conditions));
    assert.ok(s.conditions.some((c) => c.type === "GatewayReady" && c.reason === "Nat"));
    assert.ok(s.ports.every((p) => p.state === PortState.ACTIVE));
  }
  const mac = gatewayMac(NET);
  for (const h of [H1, H2]) {
    const br = addrs(h, bridgeName(NET));
    assert.equal(br.address, mac, "the bridge carries the network's gateway MAC");
    assert.ok(br.addr_info.some((a) => a.family === "inet" && a.local === GW && a.prefixlen === 24), JSON.stringify(br.addr_info));
    assert.equal((await inNs(h, ["sysctl", "-n", "net.ipv4.ip_forward"])).stdout.trim(), "1");
    assert.ok(natTable(h));
  }
  // Ping and TCP out (egress default-allow, replies come back); the outside sees the host.
  assert.ok(await until(async () => ((await pings(G.g1, INTERNET)) ? true : undefined), "g1 pings the outside", 15_000));
  assert.ok(await until(async () => ((await pings(G.g2, INTERNET)) ? true : undefined), "g2 pings the outside", 15_000));
  assert.equal(await seenAs(G.g1), UPLINK.h1, "g1's connection leaves through h1, masqueraded");
  assert.equal(await seenAs(G.g2), UPLINK.h2, "g2's connection leaves through h2, masqueraded");
  // Each guest's ARP for the gateway was answered with the gateway MAC, and never across
  // hosts: neither bridge learned the gateway MAC on its VXLAN device.
  for (const g of ["g1", "g2"] as const) {
    const neigh = JSON.parse(sh(["ip", "-n", G[g], "-json", "neigh", "show", GW])) as { lladdr?: string }[];
    assert.equal(neigh[0]?.lladdr, mac, `${g}: ${JSON.stringify(neigh)}`);
  }
  for (const h of [H1, H2]) {
    const fdb = JSON.parse(sh(["bridge", "-n", h, "-json", "fdb", "show", "dev", vxlanName(NET)])) as { mac: string }[];
    assert.ok(!fdb.some((e) => e.mac === mac), `${h}: ${JSON.stringify(fdb)}`);
  }
  // g1's ARP requests for the gateway are answered by h1 and never reach h2: a counter of
  // the test's own (in h2, before every other bridge hook) counts what arrives over VXLAN.
  const script = `table bridge qxg_count {\n chain c {\n  type filter hook prerouting priority -400; policy accept;\n  iifname "${vxlanName(NET)}" ether type arp arp daddr ip ${GW} counter\n }\n}\n`;
  await new Promise<void>((resolve, reject) => {
    const nft = spawn("ip", ["netns", "exec", H2, "nft", "-f", "-"], { stdio: ["pipe", "ignore", "inherit"] });
    nft.on("exit", (code) => (code === 0 ? resolve() : reject(new Error(`nft exited ${code}`))));
    nft.stdin.end(script);
  });
  const counted = () => Number(/counter packets (\d+)/.exec(sh(["ip", "netns", "exec", H2, "nft", "list", "table", "bridge", "qxg_count"]))?.[1]);
  const arping = await inNs(G.g1, ["busybox", "arping", "-c", "3", "-I", "eth0", GW]);
  assert.match(arping.stdout, new RegExp(`reply from ${GW.replaceAll(".", "\\.")} \\[${mac}\\]`, "i"), arping.stdout);
  assert.equal(counted(), 0, "no ARP for the gateway crossed to h2");
  sh(["ip", "netns", "exec", H2, "nft", "delete", "table", "bridge", "qxg_count"]);
  // Another network with a gateway on a subnet overlapping this one's is refused on h1 (one routing table).
  const clash = await rejection(sides.h1!.c.applyNetwork({ spec: { networkId: "0e000000-0000-4000-8000-000000000001", vni: 4344, localUnderlayAddress: "192.0.2.1", subnets: [{ cidr: "10.30.0.0/25", gatewayIp: "10.30.0.126" }], gateway: { mode: GatewayMode.ROUTED } }, generation: 1n }));
  assert.equal(clash.code, Code.FailedPrecondition, clash.message);
  assert.match(clash.message, /overlaps a subnet of network '0b000000/);
  // The guests still reach each other across hosts.
  assert.equal(await pings(G.g2, IP.g1), true);
});

test("NAT: an egress rule applies to routed traffic", async () => {
  await applyGroup([{ direction: RuleDirection.EGRESS, protocol: RuleProtocol.TCP, portRangeMin: 8080 }]);
  assert.equal(await seenAs(G.g1), UPLINK.h1, "TCP 8080 is allowed");
  assert.equal(await pings(G.g1, INTERNET), false, "ICMP is not allowed by the egress rules");
  await applyGroup([]);
  assert.equal(await pings(G.g1, INTERNET), true);
});

test("ROUTED: guests' own addresses outside, the host reaches its guest, unsolicited ingress follows the guest's rules", async () => {
  const [s1, s2] = await applyBoth(GatewayMode.ROUTED, 4n);
  for (const s of [s1, s2]) assert.deepEqual(s.conditions.filter((c) => !c.status), [], JSON.stringify(s.conditions));
  assert.ok(!natTable(H1) && !natTable(H2), "no NAT table when no gateway masquerades");
  assert.equal(await seenAs(G.g1), IP.g1, "the outside sees g1's own address");
  assert.equal(await seenAs(G.g2), IP.g2, "and g2's");
  assert.equal(await pings(H1, IP.g1), true, "h1 reaches its guest through the bridge");
  const listener = spawn("ip", ["netns", "exec", G.g1, "python3", "-c",
    "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 22)); s.listen(16)\nwhile True:\n s.accept()[0].close()\n"], { stdio: "ignore" });
  children.push(listener);
  assert.ok(await until(async () => ((await connects(G.g1, "127.0.0.1", 22)) ? true : undefined), "the listener in g1"));
  assert.equal(await connects(OUT, IP.g1, 22, INTERNET), false, "default-deny ingress drops the outside's connection");
  await applyGroup([{ direction: RuleDirection.INGRESS, protocol: RuleProtocol.TCP, portRangeMin: 22, remoteIpPrefix: "203.0.113.0/24" }]);
  assert.equal(await connects(OUT, IP.g1, 22, INTERNET), true, "an ingress rule for the outside lets it in");
  assert.equal(await pings(OUT, IP.g1), false, "ICMP stays denied");
  await applyGroup([]);
  listener.kill("SIGKILL");
});

test("removing the gateway removes its address, MAC and NAT rules; the network keeps working", async () => {
  await applyBoth(GatewayMode.NAT, 5n);
  assert.ok(natTable(H1));
  const pidBefore = (await sides.h1!.c.getNetwork({ networkId: NET })).dnsmasqPid;
  const [s1, s2] = await applyBoth(undefined, 6n);
  for (const s of [s1, s2]) assert.deepEqual(s.conditions.filter((c) => !c.status), [], JSON.stringify(s.conditions));
  for (const h of [H1, H2]) {
    const br = addrs(h, bridgeName(NET));
    assert.notEqual(br.address, gatewayMac(NET), "the bridge no longer has the gateway MAC");
    assert.ok(!br.addr_info.some((a) => a.local === GW), JSON.stringify(br.addr_info));
    assert.ok(!natTable(h), "the NAT table is gone");
    assert.equal((await inNs(h, ["sysctl", "-n", "net.ipv4.ip_forward"])).stdout.trim(), "1", "forwarding is left on");
  }
  assert.equal(await seenAs(G.g1), undefined, "no way out any more");
  // The recreated bridge took the ports back, and dnsmasq was restarted on it.
  assert.ok(s1.ports.every((p) => p.state === PortState.ACTIVE) && s2.ports.every((p) => p.state === PortState.ACTIVE));
  assert.ok(await until(async () => ((await pings(G.g2, IP.g1)) ? true : undefined), "g2 pings g1 again", 15_000));
  assert.ok(s1.dnsmasqPid > 0 && s1.dnsmasqPid !== pidBefore);
  const dhcp = await inNs(G.g1, ["busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1", "-s", "/bin/true"]);
  assert.match(dhcp.stdout + dhcp.stderr, /lease of 10\.30\.0\.11 obtained/);
  // A deleted network with a NAT gateway leaves no NAT table either.
  await sides.h1!.c.applyNetwork({ spec: spec("h1", GatewayMode.NAT), generation: 7n });
  assert.ok(natTable(H1));
  await sides.h1!.c.deleteNetwork({ networkId: NET });
  assert.ok(!natTable(H1));
  assert.ok(!sh(["ip", "-n", H1, "link", "show"]).includes(bridgeName(NET)));
});
