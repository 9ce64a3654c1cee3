import assert from "node:assert/strict";
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { GatewayMode, NetworkService, RuleDirection, type NetworkSpecSchema } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { silentLogger } from "@quantix/rpc";
import { ensureDebianPackages, until } from "@quantix/testing";
import { SimulatedBackend } from "../backends/simulated/simulated-backend.js";
import { startAgentServer, type AgentServer } from "../rpc/agent-server.js";
import { VmManager } from "../vm-manager.js";
import { probeNetworkCapabilities } from "./capabilities.js";
import { NetworkHost } from "./network-host.js";
import { bridgeName, gatewayMac, hostGatewayMac, tapName, vxlanName } from "./names.js";

// Routing to guests on other hosts through distributed gateways (as Neutron DVR), with
// real traffic; the setup is gateway.test.ts's: two "hosts" (namespaces joined by a veth
// underlay), each a NetworkHost behind a real agent server, guests as namespaces on a
// veth named as their port's TAP. Network N1 has two subnets: guest A (subnet 1) on host
// a, guest B (subnet 2) on host b. Network N2 (its own subnet, also with a gateway) has
// guest C on host b; both hosts have both networks. Every guest's default route is its
// own subnet's gateway, which is its own host.

const run = promisify(execFile);
const P = `qdv${(process.pid & 0xffff).toString(16)}`;
const HOST = { a: `${P}ha`, b: `${P}hb` };
const UNDERLAY = { a: "192.0.2.1", b: "192.0.2.2" };
const G = { A: `${P}gA`, B: `${P}gB`, C: `${P}gC` };
const root = mkdtempSync(join(tmpdir(), "quantix-dvr-"));
const N1 = "0d000000-0000-4000-8000-000000000001";
const N2 = "0e000000-0000-4000-8000-000000000002";
const SG = "5d000000-0000-4000-8000-000000000001";
const SG_CLOSED = "5e000000-0000-4000-8000-000000000002";
type Guest = keyof typeof G;
const GUEST: Record<Guest, { port: string; mac: string; ip: string; gw: string; net: string; host: "a" | "b" }> = {
  A: { port: "c7000000-0000-4000-8000-000000000001", mac: "52:54:00:00:02:11", ip: "10.60.1.11", gw: "10.60.1.1", net: N1, host: "a" },
  B: { port: "c8000000-0000-4000-8000-000000000002", mac: "52:54:00:00:02:12", ip: "10.60.2.12", gw: "10.60.2.1", net: N1, host: "b" },
  C: { port: "c9000000-0000-4000-8000-000000000003", mac: "52:54:00:00:02:13", ip: "10.61.0.13", gw: "10.61.0.1", net: N2, host: "b" },
};
/** C's groups: SG_CLOSED alone (no rules: ingress default deny) until a test adds SG. */
let cGroups = [SG_CLOSED];

interface Side {
  host: NetworkHost;
  server: AgentServer;
  backend: SimulatedBackend;
  c: Client<typeof NetworkService>;
}
const sides: Partial<Record<"a" | "b", Side>> = {};
const children: ChildProcess[] = [];

const sh = (args: string[]) => execFileSync(args[0]!, args.slice(1), { stdio: ["ignore", "pipe", "pipe"], timeout: 15_000 }).toString();
const inNs = (ns: string, args: string[]) => run("ip", ["netns", "exec", ns, ...args], { timeout: 20_000 });
const ok = (p: Promise<unknown>) => p.then(() => true, () => false);
const pings = (from: Guest, to: Guest) => ok(inNs(G[from], ["ping", "-c", "1", "-W", "1", GUEST[to].ip]));
const pingsSoon = async (from: Guest, to: Guest) => (await until(async () => ((await pings(from, to)) ? true : undefined), `${from} pings ${to}`, 15_000).catch(() => false)) === true;
/** The address guest `to`'s TCP service saw `from`'s connection come from; undefined when it does not connect. */
const seenBy = (from: Guest, to: Guest) =>
  inNs(G[from], ["python3", "-c", `import socket; s=socket.create_connection(("${GUEST[to].ip}", 8080), timeout=2); print(s.recv(64).decode()); s.close()`]).then(
    (r) => r.stdout.trim(),
    () => undefined,
  );
/** The namespace's count of ICMP redirects received (/proc/net/snmp, per namespace). */
const icmpInRedirects = async (ns: string) => {
  const [names, values] = (await inNs(ns, ["cat", "/proc/net/snmp"])).stdout.split("\n").filter((l) => l.startsWith("Icmp:")).map((l) => l.split(/\s+/));
  return Number(values![names!.indexOf("InRedirects")]);
};
const neighbours = (h: "a" | "b", net: string) =>
  (JSON.parse(sh(["ip", "-n", HOST[h], "-4", "-json", "neigh", "show", "dev", bridgeName(net), "nud", "permanent"])) as { dst: string; lladdr: string }[]).map((e) => `${e.dst} ${e.lladdr}`).sort();
const bridgeFdb = (h: "a" | "b", net: string) =>
  (JSON.parse(sh(["bridge", "-n", HOST[h], "-json", "fdb", "show", "dev", vxlanName(net)])) as { mac: string; master?: string; state?: string }[]).filter((e) => e.master && e.state === "static").map((e) => e.mac).sort();

async function startSide(name: "a" | "b"): Promise<Side> {
  const host = new NetworkHost({ stateDir: join(root, name), netns: HOST[name], adoptVethPorts: true });
  await host.start();
  const backend = new SimulatedBackend({ bootMs: 20 });
  const manager = new VmManager({ backend, portTaps: (id) => host.portTap(id) });
  await manager.start();
  const server = await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: silentLogger, network: { host, features: () => probeNetworkCapabilities(HOST[name]) } });
  return { host, server, backend, c: createClient(NetworkService, createGrpcTransport({ baseUrl: server.url })) };
}

async function stopSide(s: Side | undefined, stopDnsmasq: boolean): Promise<void> {
  await s?.server.close().catch(() => undefined);
  await s?.backend.close().catch(() => undefined);
  await s?.host.close(stopDnsmasq).catch(() => undefined);
}

type RemotePortInit = { macAddress: string; underlayAddress: string; ipAddresses: string[] };

/** Network `net`'s spec on host `h`: its guests there are ports, the others remote ports (plus `extra`). */
function spec(net: string, h: "a" | "b", mode: GatewayMode, extra: RemotePortInit[] = []): MessageInitShape<typeof NetworkSpecSchema> {
  const peer = h === "a" ? UNDERLAY.b : UNDERLAY.a;
  const guests = (Object.keys(GUEST) as Guest[]).filter((g) => GUEST[g].net === net);
  const subnets = net === N1 ? [{ cidr: "10.60.1.0/24", gatewayIp: "10.60.1.1" }, { cidr: "10.60.2.0/24", gatewayIp: "10.60.2.1" }] : [{ cidr: "10.61.0.0/24", gatewayIp: "10.61.0.1" }];
  return {
    networkId: net,
    vni: net === N1 ? 4401 : 4402,
    mtu: 1450,
    localUnderlayAddress: UNDERLAY[h],
    peerUnderlayAddresses: [peer],
    subnets,
    ports: guests.filter((g) => GUEST[g].host === h).map((g) => ({ portId: GUEST[g].port, macAddress: GUEST[g].mac, fixedIps: [GUEST[g].ip], securityGroupIds: g === "C" ? cGroups : [SG] })),
    remotePorts: [...guests.filter((g) => GUEST[g].host !== h).map((g) => ({ macAddress: GUEST[g].mac, underlayAddress: peer, ipAddresses: [GUEST[g].ip] })), ...extra],
    gateway: { mode },
  };
}

async function applyAll(mode: GatewayMode, generation: bigint) {
  const out = [];
  for (const h of ["a", "b"] as const) for (const net of [N1, N2]) out.push(await sides[h]!.c.applyNetwork({ spec: spec(net, h, mode), generation }));
  return out;
}

/** SG: ingress from its members (all three guests); SG_CLOSED: no rules (default deny). */
async function applyGroups(): Promise<void> {
  for (const h of ["a", "b"] as const) {
    await sides[h]!.c.applySecurityGroup({ spec: { securityGroupId: SG, rules: [{ direction: RuleDirection.INGRESS, remoteGroupId: SG }], memberIps: [GUEST.A.ip, GUEST.B.ip, GUEST.C.ip] }, generation: 1n });
    await sides[h]!.c.applySecurityGroup({ spec: { securityGroupId: SG_CLOSED, rules: [], memberIps: [GUEST.C.ip] }, generation: 1n });
  }
}

/** An nft counter of the test's own in host `h`, before every bridge hook of the agent's, on what arrives over `net`'s VXLAN from `mac`. */
function countFrom(h: "a" | "b", net: string, macs: Record<string, string>): () => Record<string, number> {
  const rules = Object.entries(macs).map(([k, m]) => `  iifname "${vxlanName(net)}" ether saddr ${m} counter comment "${k}"`);
  const script = `table bridge qdv_count {\n chain c {\n  type filter hook prerouting priority -400; policy accept;\n${rules.join("\n")}\n }\n}\n`;
  execFileSync("ip", ["netns", "exec", HOST[h], "nft", "-f", "-"], { input: script, timeout: 15_000 });
  return () => {
    const listing = sh(["ip", "netns", "exec", HOST[h], "nft", "list", "table", "bridge", "qdv_count"]);
    return Object.fromEntries(Object.keys(macs).map((k) => [k, Number(new RegExp(`counter packets (\\d+) bytes \\d+ comment "${k}"`).exec(listing)?.[1] ?? NaN)]));
  };
}

before(async () => {
  await ensureDebianPackages(["nftables", "iputils-ping"]);
  for (const ns of [...Object.values(HOST), ...Object.values(G)]) {
    sh(["ip", "netns", "add", ns]);
    sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
  }
  sh(["ip", "-n", HOST.a, "link", "add", `${P}u1`, "type", "veth", "peer", "name", `${P}u2`, "netns", HOST.b]);
  sh(["ip", "-n", HOST.a, "addr", "add", `${UNDERLAY.a}/24`, "dev", `${P}u1`]);
  sh(["ip", "-n", HOST.b, "addr", "add", `${UNDERLAY.b}/24`, "dev", `${P}u2`]);
  sh(["ip", "-n", HOST.a, "link", "set", `${P}u1`, "up"]);
  sh(["ip", "-n", HOST.b, "link", "set", `${P}u2`, "up"]);
  sides.a = await startSide("a");
  sides.b = await startSide("b");
  await applyGroups();
  await applyAll(GatewayMode.ROUTED, 1n);
  // Each port's TAP replaced by a veth into the guest's namespace, which the next converge
  // adopts as the port's device (done after every network is on both hosts: until then a
  // converge deletes the ports' links no network wants yet).
  for (const g of Object.keys(G) as Guest[]) {
    sh(["ip", "-n", HOST[GUEST[g].host], "link", "del", tapName(GUEST[g].port)]);
    sh(["ip", "-n", HOST[GUEST[g].host], "link", "add", tapName(GUEST[g].port), "type", "veth", "peer", "name", "eth0", "netns", G[g]]);
    sh(["ip", "-n", G[g], "link", "set", "eth0", "address", GUEST[g].mac, "mtu", "1450", "up"]);
    sh(["ip", "-n", G[g], "addr", "add", `${GUEST[g].ip}/24`, "dev", "eth0"]);
    sh(["ip", "-n", G[g], "route", "add", "default", "via", GUEST[g].gw]);
    // A TCP service answering every connection with the peer address it sees.
    children.push(spawn("ip", ["netns", "exec", G[g], "python3", "-c",
      `import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 8080)); s.listen(16)\nwhile True:\n c,a=s.accept(); c.sendall(a[0].encode()); c.close()\n`], { stdio: "ignore" }));
  }
  for (const h of ["a", "b"] as const) await sides[h]!.host.resync();
});

after(async () => {
  if (process.env["QDV_KEEP"]) return;
  for (const c of children) c.kill("SIGKILL");
  for (const s of [sides.a, sides.b]) await stopSide(s, true);
  for (const ns of [...Object.values(G), ...Object.values(HOST)]) {
    try {
      sh(["ip", "netns", "del", ns]);
    } catch {
      // already gone
    }
  }
  rmSync(root, { recursive: true, force: true });
});

test("ROUTED, one network's two subnets on two hosts: each guest reaches the other through its own host's gateway", async () => {
  const all = await applyAll(GatewayMode.ROUTED, 2n);
  for (const s of all) assert.deepEqual(s.conditions.filter((c) => !c.status), [], JSON.stringify(s.conditions));
  // Each host knows the other host's guests as permanent neighbours, and their MACs as static bridge FDB entries.
  assert.deepEqual(neighbours("a", N1), [`${GUEST.B.ip} ${GUEST.B.mac}`]);
  assert.deepEqual(neighbours("b", N1), [`${GUEST.A.ip} ${GUEST.A.mac}`]);
  assert.deepEqual(neighbours("a", N2), [`${GUEST.C.ip} ${GUEST.C.mac}`]);
  assert.deepEqual(neighbours("b", N2), []);
  assert.deepEqual(bridgeFdb("b", N1), [GUEST.A.mac]);
  // What host a receives over N1's VXLAN comes from host b's own MAC, never from the gateway MAC.
  const counted = countFrom("a", N1, { hostB: hostGatewayMac(N1, UNDERLAY.b), gateway: gatewayMac(N1) });
  assert.ok(await pingsSoon("B", "A"), "B pings A");
  assert.ok(await pingsSoon("A", "B"), "A pings B");
  assert.equal(await seenBy("B", "A"), GUEST.B.ip, "B connects to A, which sees B's own address");
  assert.equal(await seenBy("A", "B"), GUEST.A.ip, "A connects to B");
  const n = counted();
  assert.ok(n["hostB"]! >= 2 && n["gateway"] === 0, JSON.stringify(n));
  sh(["ip", "netns", "exec", HOST.a, "nft", "delete", "table", "bridge", "qdv_count"]);
  // Routing between the subnets stays with the host: B is sent no ICMP redirect to go
  // straight to A (the host's output chain drops them), its route to A is via its gateway.
  for (let i = 0; i < 3; i++) assert.ok(await pings("B", "A"));
  assert.equal(await icmpInRedirects(G.B), 0, "B received no ICMP redirect");
  const route = (await inNs(G.B, ["ip", "route", "get", GUEST.A.ip])).stdout;
  assert.match(route, new RegExp(`via ${GUEST.B.gw.replaceAll(".", "\\.")} `), route);
  // The guests' gateway is their own host's, and no bridge learned the gateway MAC from the tunnel.
  for (const g of ["A", "B"] as const) {
    const neigh = JSON.parse(sh(["ip", "-n", G[g], "-json", "neigh", "show", GUEST[g].gw])) as { lladdr?: string }[];
    assert.equal(neigh[0]?.lladdr, gatewayMac(N1), `${g}: ${JSON.stringify(neigh)}`);
  }
  for (const h of ["a", "b"] as const) {
    const fdb = JSON.parse(sh(["bridge", "-n", HOST[h], "-json", "fdb", "show", "dev", vxlanName(N1)])) as { mac: string }[];
    assert.ok(!fdb.some((e) => e.mac === gatewayMac(N1)), `${h}: ${JSON.stringify(fdb)}`);
  }
});

test("ROUTED, two networks on two hosts: A (N1, host a) and C (N2, host b) reach each other as their groups allow, replies pass both hosts", async () => {
  // C's group has no rule: nothing may start a connection to C, while C's own connections get their replies.
  assert.ok(await pingsSoon("C", "A"), "C pings A (A's group admits its members)");
  assert.equal(await seenBy("C", "A"), GUEST.C.ip, "C connects to A, which sees C's own address");
  assert.equal(await pings("A", "C"), false, "C's default-deny ingress holds for routed traffic from another host");
  assert.equal(await seenBy("A", "C"), undefined);
  cGroups = [SG];
  await applyAll(GatewayMode.ROUTED, 3n);
  assert.ok(await pingsSoon("A", "C"), "with C in A's group, A pings C");
  assert.equal(await seenBy("A", "C"), GUEST.A.ip);
  assert.ok(await pings("B", "C"), "and B reaches C on its own host through the gateway");
});

test("NAT: guests reach each other across hosts and networks with their own addresses (no translation between gateways' networks)", async () => {
  const all = await applyAll(GatewayMode.NAT, 4n);
  for (const s of all) assert.deepEqual(s.conditions.filter((c) => !c.status), [], JSON.stringify(s.conditions));
  assert.ok(await pingsSoon("B", "A"));
  assert.equal(await seenBy("B", "A"), GUEST.B.ip);
  assert.equal(await seenBy("A", "C"), GUEST.A.ip, "A's traffic to N2 is not masqueraded");
  assert.equal(await seenBy("C", "A"), GUEST.C.ip);
});

test("the neighbour entries follow the remote ports (added, changed, removed) and come back when the agent restarts", async () => {
  const extra = { macAddress: "52:54:00:00:02:99", underlayAddress: UNDERLAY.b, ipAddresses: ["10.60.2.99"] };
  await sides.a!.c.applyNetwork({ spec: spec(N1, "a", GatewayMode.ROUTED, [extra]), generation: 5n });
  assert.deepEqual(neighbours("a", N1), [`${GUEST.B.ip} ${GUEST.B.mac}`, `10.60.2.99 ${extra.macAddress}`]);
  assert.deepEqual(bridgeFdb("a", N1), [GUEST.B.mac, extra.macAddress].sort());
  const moved = { ...extra, macAddress: "52:54:00:00:02:98" };
  await sides.a!.c.applyNetwork({ spec: spec(N1, "a", GatewayMode.ROUTED, [moved]), generation: 6n });
  assert.deepEqual(neighbours("a", N1), [`${GUEST.B.ip} ${GUEST.B.mac}`, `10.60.2.99 ${moved.macAddress}`]);
  assert.deepEqual(bridgeFdb("a", N1), [GUEST.B.mac, moved.macAddress].sort());
  const back = await sides.a!.c.applyNetwork({ spec: spec(N1, "a", GatewayMode.ROUTED), generation: 7n });
  assert.deepEqual(back.conditions.filter((c) => !c.status), [], JSON.stringify(back.conditions));
  assert.deepEqual(neighbours("a", N1), [`${GUEST.B.ip} ${GUEST.B.mac}`]);
  assert.deepEqual(bridgeFdb("a", N1), [GUEST.B.mac]);
  // Lost behind the agent's back (and a stray entry added): GatewayReady says so; a restarted agent converges.
  sh(["ip", "-n", HOST.a, "neigh", "del", GUEST.B.ip, "dev", bridgeName(N1)]);
  sh(["ip", "-n", HOST.a, "neigh", "replace", "10.60.2.77", "lladdr", "52:54:00:00:02:77", "dev", bridgeName(N1), "nud", "permanent"]);
  sh(["bridge", "-n", HOST.a, "fdb", "del", GUEST.B.mac, "dev", vxlanName(N1), "master"]);
  const broken = await sides.a!.c.getNetwork({ networkId: N1 });
  assert.ok(broken.conditions.some((c) => c.type === "GatewayReady" && !c.status && c.reason === "NeighboursIncomplete"), JSON.stringify(broken.conditions));
  await stopSide(sides.a, false);
  sides.a = await startSide("a");
  assert.deepEqual(neighbours("a", N1), [`${GUEST.B.ip} ${GUEST.B.mac}`]);
  assert.deepEqual(bridgeFdb("a", N1), [GUEST.B.mac]);
  assert.ok(await pingsSoon("A", "B"));
  // Without the gateway, no permanent neighbours or static entries are left.
  const { gateway: _gw, ...plain } = spec(N1, "a", GatewayMode.ROUTED);
  await sides.a!.c.applyNetwork({ spec: plain, generation: 8n });
  assert.deepEqual(neighbours("a", N1), []);
  assert.deepEqual(bridgeFdb("a", N1), []);
});
