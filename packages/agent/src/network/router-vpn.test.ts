import assert from "node:assert/strict";
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import { Code, createClient, type Client, type ConnectError } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { toJsonString, type MessageInitShape } from "@bufbuild/protobuf";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { ListRoutersResponseSchema, NetworkService, RouterStatusSchema, RouterVpnPeerState, RouterVpnType, type NetworkSpecSchema, type RouterSpecSchema, type RouterStatus } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { silentLogger } from "@quantix/rpc";
import { ensureDebianPackages, rejection, until } from "@quantix/testing";
import { SimulatedBackend } from "../backends/simulated/simulated-backend.js";
import { startAgentServer, type AgentServer } from "../rpc/agent-server.js";
import { VmManager } from "../vm-manager.js";
import { probeNetworkCapabilities } from "./capabilities.js";
import { NetworkHost } from "./network-host.js";
import { tapName } from "./names.js";
import { RouterHost } from "./router-host.js";
import { routerNetns, vpnInterfaceName } from "./router-model.js";

// Two sites joined by a WireGuard VPN between their routers. Each site is a data plane
// namespace (a "host" with its own agent) with one network and one guest namespace on
// it: site A 10.51.0.0/24 (guest ga 10.51.0.11), site B 10.52.0.0/24 (gb 10.52.0.11).
// The routers' external sides (203.0.113.5 and .6) are on one "internet" segment: a
// bridge in an outside namespace that also holds their gateway 203.0.113.1, which has no
// route to either private subnet. So a guest reaches the other site's private address
// only through the tunnel, and the services (answering "<name> <peer address>") tell
// whether it arrived with its own private source address.

const run = promisify(execFile);
const hex = (process.pid & 0xffff).toString(16);
const P = `qvp${hex}`;
const INET = `${P}i`;
const pad = hex.padStart(4, "0");
const EXT_GW = "203.0.113.1";

interface Site {
  readonly name: "a" | "b";
  readonly host: string;
  readonly guest: string;
  readonly phys: string;
  readonly root: string;
  readonly net: string;
  readonly router: string;
  readonly conn: string;
  readonly port: string;
  readonly subnet: string;
  readonly gw: string;
  readonly ip: string;
  readonly mac: string;
  readonly ext: string;
  readonly listen: number;
  readonly key: { priv: string; pub: string };
  agent?: { host: NetworkHost; routers: RouterHost; server: AgentServer; backend: SimulatedBackend; c: Client<typeof NetworkService> } | undefined;
}

function wgKeys(): { priv: string; pub: string } {
  const { privateKey, publicKey } = generateKeyPairSync("x25519");
  return { priv: privateKey.export({ format: "der", type: "pkcs8" }).subarray(-32).toString("base64"), pub: publicKey.export({ format: "der", type: "spki" }).subarray(-32).toString("base64") };
}

function site(name: "a" | "b", n: number): Site {
  return {
    name,
    host: `${P}h${name}`,
    guest: `${P}g${name}`,
    phys: `${P}x${name}`,
    root: mkdtempSync(join(tmpdir(), `quantix-vpn-${name}-`)),
    net: `0d5${n}${pad}-0000-4000-8000-00000000000${n}`,
    router: `7a5${n}${pad}-0000-4000-8000-00000000000${n}`,
    conn: `c05${n}${pad}-0000-4000-8000-00000000000${n}`,
    port: `c75${n}${pad}-0000-4000-8000-00000000000${n}`,
    subnet: `10.5${n}.0.0/24`,
    gw: `10.5${n}.0.1`,
    ip: `10.5${n}.0.11`,
    mac: `52:54:00:00:05:${n}1`,
    ext: `203.0.113.${4 + n}`,
    listen: 51819 + n,
    key: wgKeys(),
  };
}

const A = site("a", 1);
const B = site("b", 2);
const PSK = randomBytes(32).toString("base64");
const children: ChildProcess[] = [];

const sh = (args: string[]) => execFileSync(args[0]!, args.slice(1), { stdio: ["ignore", "pipe", "pipe"], timeout: 15_000 }).toString();
const quiet = (args: string[]) => {
  try {
    sh(args);
  } catch {
    // already gone
  }
};
const inNs = (ns: string, args: string[]) => run("ip", ["netns", "exec", ns, ...args], { timeout: 20_000 });
const fields = (e: ConnectError) => e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));
/** What the service at ip:8080 answers a connection from `from`; undefined when it does not connect. */
const ask = (from: string, ip: string) =>
  inNs(from, ["python3", "-c", `import socket; s=socket.create_connection(("${ip}", 8080), timeout=2); print(s.recv(64).decode()); s.close()`]).then(
    (r) => r.stdout.trim(),
    () => undefined,
  );
const ping = (from: string, ip: string) => inNs(from, ["ping", "-c", "1", "-W", "2", ip]).then(() => true, () => false);
/** A TCP service in `ns` answering "<name> <peer address>". */
function serve(ns: string, name: string, ip: string): void {
  const code = `import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("${ip}", 8080)); s.listen(16)\nwhile True:\n c,a=s.accept(); c.sendall(("${name} "+a[0]).encode()); c.close()\n`;
  children.push(spawn("ip", ["netns", "exec", ns, "python3", "-c", code], { stdio: "ignore" }));
}
const notReady = (s: { conditions: RouterStatus["conditions"] }) => s.conditions.filter((x) => !x.status);
const dev = (s: Site) => vpnInterfaceName(s.conn);
const linkNames = (ns: string) => (JSON.parse(sh(["ip", "-n", ns, "-json", "link", "show"])) as { ifname: string }[]).map((l) => l.ifname);
/** The wireguard-go pid the site's agent recorded, when that process runs. */
function tunnelPid(s: Site): number | undefined {
  const file = join(s.root, "network", "vpn", dev(s), "pid");
  if (!existsSync(file)) return undefined;
  const pid = Number(readFileSync(file, "utf8"));
  return alive(pid) ? pid : undefined;
}
/** The router's charon, when it runs. */
function charonPid(s: Site): number | undefined {
  const file = join(s.root, "network", "ipsec", routerNetns(s.router, s.host), "run", "charon.pid");
  if (!existsSync(file)) return undefined;
  const pid = Number(readFileSync(file, "utf8"));
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8")) && readFileSync(`/proc/${pid}/cmdline`, "utf8").startsWith("/usr/lib/ipsec/charon") ? pid : undefined;
  } catch {
    return undefined;
  }
}
/** Whether a process runs (not a zombie). */
function runs(pid: number): boolean {
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !/\) Z /.test(stat) && readFileSync(`/proc/${pid}/cmdline`, "utf8").startsWith("wireguard-go");
  } catch {
    return false;
  }
}

type VpnInit = NonNullable<MessageInitShape<typeof RouterSpecSchema>["vpnConnections"]>[number];

function vpn(s: Site, other: Site, over: Partial<VpnInit> = {}): VpnInit {
  return {
    connectionId: s.conn,
    type: RouterVpnType.WIREGUARD,
    localSubnets: [s.subnet],
    listenPort: s.listen,
    privateKey: s.key.priv,
    peers: [{ peerId: `site-${other.name}`, endpoint: `${other.ext}:${other.listen}`, remoteSubnets: [other.subnet], publicKey: other.key.pub, presharedKey: PSK, persistentKeepaliveSeconds: 25 }],
    ...over,
  } as VpnInit;
}

function routerSpec(s: Site, over: Partial<MessageInitShape<typeof RouterSpecSchema>> = {}): MessageInitShape<typeof RouterSpecSchema> {
  return {
    routerId: s.router,
    external: { physicalNetwork: "ext", address: `${s.ext}/24`, gatewayIp: EXT_GW, macAddress: `02:bb:00:00:00:0${s.name === "a" ? 1 : 2}` },
    interfaces: [{ networkId: s.net, macAddress: `02:bb:00:00:01:0${s.name === "a" ? 1 : 2}`, addresses: [`${s.gw}/24`] }],
    snatEnabled: true,
    ...over,
  } as MessageInitShape<typeof RouterSpecSchema>;
}

function networkSpec(s: Site): MessageInitShape<typeof NetworkSpecSchema> {
  return {
    networkId: s.net,
    vni: s.name === "a" ? 4551 : 4552,
    mtu: 1450,
    localUnderlayAddress: "192.0.2.1",
    subnets: [{ cidr: s.subnet, gatewayIp: s.gw }],
    ports: [{ portId: s.port, macAddress: s.mac, fixedIps: [s.ip] }],
  };
}

async function startAgent(s: Site): Promise<void> {
  const host = new NetworkHost({ stateDir: s.root, netns: s.host, adoptVethPorts: true });
  await host.start();
  const routers = new RouterHost({ stateDir: s.root, netns: s.host, physicalNetworks: new Map([["ext", s.phys]]) });
  await routers.start();
  const backend = new SimulatedBackend({ bootMs: 20 });
  const manager = new VmManager({ backend, portTaps: (id) => host.portTap(id) });
  await manager.start();
  const server = await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: silentLogger, network: { host, routers, features: () => probeNetworkCapabilities(s.host, undefined, new Map([["ext", s.phys]])) } });
  s.agent = { host, routers, server, backend, c: createClient(NetworkService, createGrpcTransport({ baseUrl: server.url })) };
}

async function stopAgent(s: Site): Promise<void> {
  const a = s.agent;
  if (!a) return;
  await a.server.close().catch(() => undefined);
  await a.backend.close().catch(() => undefined);
  await a.routers.close().catch(() => undefined);
  await a.host.close(true).catch(() => undefined);
  s.agent = undefined;
}

const c = (s: Site) => s.agent!.c;

before(async () => {
  await ensureDebianPackages(["nftables", "conntrack", "iputils-ping", "wireguard-go", "wireguard-tools", "strongswan-charon", "strongswan-swanctl", "libcharon-extra-plugins", "libstrongswan-standard-plugins"]);
  assert.ok(existsSync("/dev/net/tun"), "userspace WireGuard needs /dev/net/tun");
  sh(["ip", "netns", "add", INET]);
  sh(["ip", "-n", INET, "link", "set", "lo", "up"]);
  sh(["ip", "-n", INET, "link", "add", "br0", "type", "bridge"]);
  sh(["ip", "-n", INET, "addr", "add", `${EXT_GW}/24`, "dev", "br0"]);
  sh(["ip", "-n", INET, "link", "set", "br0", "up"]);
  serve(INET, "internet", EXT_GW);
  for (const s of [A, B]) {
    for (const ns of [s.host, s.guest]) {
      sh(["ip", "netns", "add", ns]);
      sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
    }
    sh(["ip", "-n", s.host, "link", "add", `${P}u`, "type", "veth", "peer", "name", `${P}v`]);
    sh(["ip", "-n", s.host, "addr", "add", "192.0.2.1/24", "dev", `${P}u`]);
    sh(["ip", "-n", s.host, "link", "set", `${P}u`, "up"]);
    sh(["ip", "-n", s.host, "link", "set", `${P}v`, "up"]);
    // The host's uplink, its other end a port of the internet's bridge.
    sh(["ip", "-n", s.host, "link", "add", s.phys, "type", "veth", "peer", "name", `port${s.name}`, "netns", INET]);
    sh(["ip", "-n", INET, "link", "set", `port${s.name}`, "master", "br0", "up"]);
    await startAgent(s);
    sh(["ip", "-n", s.host, "link", "add", tapName(s.port), "type", "veth", "peer", "name", "eth0", "netns", s.guest]);
    sh(["ip", "-n", s.guest, "link", "set", "eth0", "address", s.mac, "mtu", "1450", "up"]);
    sh(["ip", "-n", s.guest, "addr", "add", `${s.ip}/24`, "dev", "eth0"]);
    sh(["ip", "-n", s.guest, "route", "add", "default", "via", s.gw]);
    serve(s.guest, `g${s.name}`, "0.0.0.0");
    const n = await c(s).applyNetwork({ spec: networkSpec(s), generation: 1n });
    assert.deepEqual(notReady(n), [], JSON.stringify(n.conditions));
  }
});

after(async () => {
  if (process.env["QVP_KEEP"]) return;
  for (const ch of children) ch.kill("SIGKILL");
  for (const s of [A, B]) {
    await s.agent?.routers.deleteRouter(s.router).catch(() => undefined);
    await stopAgent(s);
    const pid = tunnelPid(s);
    if (pid) process.kill(pid, "SIGKILL");
    rmSync(`/var/run/wireguard/${dev(s)}.sock`, { force: true });
    const charon = charonPid(s);
    if (charon) process.kill(charon, "SIGKILL");
  }
  for (const s of [A, B]) for (const ns of [s.guest, s.host, routerNetns(s.router, s.host)]) quiet(["ip", "netns", "del", ns]);
  quiet(["ip", "netns", "del", INET]);
  for (const s of [A, B]) rmSync(s.root, { recursive: true, force: true });
});

test("capabilities: vpn-wireguard and vpn-ipsec available", async () => {
  const by = new Map((await c(A).getNetworkCapabilities({})).features.map((f) => [f.name, f]));
  assert.equal(by.get("vpn-wireguard")?.available, true, by.get("vpn-wireguard")?.reason);
  assert.equal(by.get("vpn-ipsec")?.available, true, by.get("vpn-ipsec")?.reason);
});

test("(a) without a VPN, a guest reaches the internet but not the other site's private address", async () => {
  for (const [s, g] of [[A, 1n], [B, 1n]] as const) {
    const st = await c(s).applyRouter({ spec: routerSpec(s), generation: g });
    assert.deepEqual(notReady(st), [], JSON.stringify(st.conditions));
    assert.deepEqual(st.vpnConnections, []);
  }
  assert.equal(await until(() => ask(A.guest, EXT_GW), "ga reaches the internet", 15_000), `internet ${A.ext}`);
  assert.equal(await until(() => ask(B.guest, EXT_GW), "gb reaches the internet", 15_000), `internet ${B.ext}`);
  assert.equal(await ask(A.guest, B.ip), undefined);
  assert.equal(await ping(A.guest, B.ip), false);
});

test("(b) a WireGuard connection on both routers: each guest reaches the other's private address as itself (no SNAT); (c) peers UP with a handshake and bytes", async () => {
  const sa = await c(A).applyRouter({ spec: routerSpec(A, { vpnConnections: [vpn(A, B)] }), generation: 2n });
  const sb = await c(B).applyRouter({ spec: routerSpec(B, { vpnConnections: [vpn(B, A)] }), generation: 2n });
  for (const st of [sa, sb]) assert.deepEqual(notReady(st), [], JSON.stringify(st.conditions));
  assert.equal(sa.conditions.find((x) => x.type === "VpnReady")?.reason, "Applied");
  assert.equal(sa.vpnConnections[0]?.publicKey, A.key.pub, "the status tells the public key of the private key");
  assert.equal(sa.vpnConnections[0]?.interfaceName, dev(A));
  assert.equal(sa.vpnConnections[0]?.listenPort, A.listen);
  assert.ok(linkNames(routerNetns(A.router, A.host)).includes(dev(A)));
  assert.equal(await until(() => ask(A.guest, B.ip), "ga reaches gb through the tunnel", 20_000), `gb ${A.ip}`);
  assert.equal(await ask(B.guest, A.ip), `ga ${B.ip}`);
  assert.equal(await ping(A.guest, B.ip), true);
  assert.equal(await ping(B.guest, A.ip), true);
  // Still SNAT to the internet: the tunnel takes only the other site's subnet.
  assert.equal(await ask(A.guest, EXT_GW), `internet ${A.ext}`);
  // (c)
  for (const [s, other] of [[A, B], [B, A]] as const) {
    const st = await c(s).getRouter({ routerId: s.router });
    const v = st.vpnConnections[0]!;
    assert.equal(v.applied, true, v.message);
    const p = v.peers[0]!;
    assert.equal(p.peerId, `site-${other.name}`);
    assert.equal(p.state, RouterVpnPeerState.UP);
    assert.ok(Math.abs(Date.now() / 1000 - Number(p.lastHandshakeUnix)) < 180, `handshake at ${p.lastHandshakeUnix}`);
    assert.ok(p.rxBytes > 0n && p.txBytes > 0n, `rx ${p.rxBytes} tx ${p.txBytes}`);
    assert.equal(p.endpoint, `${other.ext}:${other.listen}`);
  }
});

test("(f) keys are never returned, the state file is 0600, no key file is left, no key is in argv", async () => {
  const outputs = [toJsonString(RouterStatusSchema, await c(A).getRouter({ routerId: A.router })), toJsonString(ListRoutersResponseSchema, await c(A).listRouters({}))];
  for (const out of outputs) {
    assert.ok(!out.includes(A.key.priv), "the private key is not in the output");
    assert.ok(!out.includes(PSK), "the preshared key is not in the output");
    assert.ok(out.includes(B.key.pub), "the peer's public key is");
  }
  const spec = (await c(A).getRouter({ routerId: A.router })).spec!.vpnConnections[0]!;
  assert.equal(spec.privateKey, "");
  assert.equal(spec.peers[0]!.presharedKey, "");
  const state = join(A.root, "network", "routers.json");
  assert.equal(statSync(state).mode & 0o777, 0o600);
  assert.ok(readFileSync(state, "utf8").includes(A.key.priv), "the state file keeps the key (to converge after a restart)");
  assert.deepEqual(readdirSync(join(A.root, "network", "vpn", dev(A))).sort(), ["log", "pid"]);
  const pid = tunnelPid(A)!;
  assert.deepEqual(readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter((x) => x !== ""), ["wireguard-go", "-f", dev(A)]);
});

test("(e) bad input: INVALID_ARGUMENT (or FAILED_PRECONDITION for IPsec) with field paths, nothing changed", async () => {
  const badKey = "not-a-key-but-secret-looking-text";
  const peer = vpn(A, B).peers![0]!;
  const f = "spec.vpn_connections[0]";
  const cases: [VpnInit, Code, string[]][] = [
    [vpn(A, B, { peers: [peer, { ...peer, peerId: "site-c", publicKey: wgKeys().pub, remoteSubnets: ["10.52.0.128/25"] }] }), Code.InvalidArgument, [`${f}.peers[1].remote_subnets[0]`]],
    [vpn(A, B, { peers: [{ ...peer, remoteSubnets: ["10.51.0.0/16"] }] }), Code.InvalidArgument, [`${f}.peers[0].remote_subnets[0]`]],
    [vpn(A, B, { localSubnets: ["10.60.0.0/24"] }), Code.InvalidArgument, [`${f}.local_subnets[0]`]],
    [vpn(A, B, { privateKey: badKey, peers: [{ ...peer, publicKey: "AAAA", presharedKey: badKey }] }), Code.InvalidArgument, [`${f}.peers[0].preshared_key`, `${f}.peers[0].public_key`, `${f}.private_key`]],
    [vpn(A, B, { peers: [{ ...peer, endpoint: "site-b.example:51822" }] }), Code.InvalidArgument, [`${f}.peers[0].endpoint`]],
    [vpn(A, B, { peers: [{ ...peer, endpoint: B.ext }] }), Code.InvalidArgument, [`${f}.peers[0].endpoint`]],
    [vpn(A, B, { connectionId: "Not-A-UUID", listenPort: 0 }), Code.InvalidArgument, [`${f}.connection_id`, `${f}.listen_port`]],
    [vpn(A, B, { type: RouterVpnType.IPSEC, privateKey: "", peers: [{ peerId: "site-b", remoteSubnets: [B.subnet], presharedKey: "short" }] }), Code.InvalidArgument, [`${f}.listen_port`, `${f}.peers[0].endpoint`, `${f}.peers[0].preshared_key`]],
  ];
  for (const [conn, code, want] of cases) {
    const e = await rejection(c(A).applyRouter({ spec: routerSpec(A, { vpnConnections: [conn] }), generation: 99n }));
    assert.equal(e.code, code, e.message);
    assert.deepEqual(fields(e).sort(), want, e.message);
    assert.ok(!e.message.includes(badKey), "no secret is echoed");
  }
  const s = await c(A).getRouter({ routerId: A.router });
  assert.equal(s.observedGeneration, 2n, "nothing changed");
  assert.equal(s.vpnConnections[0]?.applied, true);
  assert.equal(await ask(A.guest, B.ip), `gb ${A.ip}`);
});

test("a tunnel process that dies is restarted by the agent", async () => {
  const before = tunnelPid(A)!;
  process.kill(before, "SIGKILL");
  const next = await until(() => {
    const p = tunnelPid(A);
    return p !== undefined && p !== before ? p : undefined;
  }, "a new wireguard-go for site A", 15_000);
  assert.notEqual(next, before);
  assert.equal(await until(() => ask(A.guest, B.ip), "ga reaches gb again", 20_000), `gb ${A.ip}`);
});

test("(g) an agent restart converges the tunnel (restarting wireguard-go killed meanwhile)", async () => {
  await stopAgent(A);
  // The tunnel does not need the agent.
  assert.equal(await ask(A.guest, B.ip), `gb ${A.ip}`);
  const pid = tunnelPid(A)!;
  process.kill(pid, "SIGKILL");
  await until(() => (alive(pid) ? undefined : true), "wireguard-go gone");
  assert.equal(await until(async () => ((await ask(A.guest, B.ip)) === undefined ? true : undefined), "no tunnel without wireguard-go", 10_000), true);
  await startAgent(A);
  const s = await c(A).getRouter({ routerId: A.router });
  assert.deepEqual(notReady(s), [], JSON.stringify(s.conditions));
  assert.equal(s.observedGeneration, 2n);
  assert.notEqual(tunnelPid(A), undefined);
  assert.equal(await until(() => ask(A.guest, B.ip), "ga reaches gb after the restart", 20_000), `gb ${A.ip}`);
  const up = await until(async () => {
    const p = (await c(A).getRouter({ routerId: A.router })).vpnConnections[0]?.peers[0];
    return p?.state === RouterVpnPeerState.UP ? p : undefined;
  }, "peer UP after the restart");
  assert.ok(up.rxBytes > 0n);
});

test("(d) the connection removed from the spec: no tunnel, no process, no device, no route; DeleteRouter ends the other site's tunnel", async () => {
  const pid = tunnelPid(A)!;
  const s = await c(A).applyRouter({ spec: routerSpec(A), generation: 3n });
  assert.deepEqual(notReady(s), [], JSON.stringify(s.conditions));
  assert.deepEqual(s.vpnConnections, []);
  assert.equal(alive(pid), false, "wireguard-go ended");
  assert.ok(!linkNames(routerNetns(A.router, A.host)).includes(dev(A)), "no wg device");
  assert.ok(!sh(["ip", "-n", routerNetns(A.router, A.host), "route", "show"]).includes("10.52.0.0/24"), "no route to the other site");
  assert.equal(existsSync(join(A.root, "network", "vpn", dev(A))), false);
  assert.equal(await ask(A.guest, B.ip), undefined);
  assert.equal(await ping(A.guest, B.ip), false);
  assert.equal(await ask(A.guest, EXT_GW), `internet ${A.ext}`);
  // B's side: its peer goes quiet; the router deleted with its connection ends its process.
  const pb = tunnelPid(B)!;
  await c(B).deleteRouter({ routerId: B.router });
  assert.equal(alive(pb), false, "site B's wireguard-go ended with its router");
  assert.ok(!(JSON.parse(sh(["ip", "-json", "netns", "list"]) || "[]") as { name: string }[]).some((n) => n.name === routerNetns(B.router, B.host)));
  assert.equal(existsSync(`/var/run/wireguard/${dev(B)}.sock`), false);
});

test("IPsec (PSK, IKEv2, ESP in user space): each guest reaches the other as itself, peers UP; removed: no more, charon gone", async () => {
  const ipsec = (s: Site, other: Site): VpnInit => ({
    connectionId: s.conn,
    type: RouterVpnType.IPSEC,
    localSubnets: [s.subnet],
    ikeProposals: ["aes256-sha256-modp2048"],
    espProposals: ["aes128-sha256"],
    ikeLifetimeSeconds: 3600,
    ipsecLifetimeSeconds: 1200,
    dpdIntervalSeconds: 15,
    peers: [{ peerId: `site-${other.name}`, endpoint: `${other.ext}:500`, remoteSubnets: [other.subnet], presharedKey: "an IPsec shared secret 1234" }],
  });
  const sb = await c(B).applyRouter({ spec: routerSpec(B, { vpnConnections: [ipsec(B, A)] }), generation: 10n });
  const sa = await c(A).applyRouter({ spec: routerSpec(A, { vpnConnections: [ipsec(A, B)] }), generation: 10n });
  for (const st of [sa, sb]) assert.deepEqual(notReady(st), [], JSON.stringify(st.conditions));
  assert.equal(sa.vpnConnections[0]?.interfaceName, "ipsec0");
  assert.equal(await until(() => ask(A.guest, B.ip), "ga reaches gb through IPsec", 30_000), `gb ${A.ip}`);
  assert.equal(await ask(B.guest, A.ip), `ga ${B.ip}`);
  assert.equal(await ping(A.guest, B.ip), true);
  assert.equal(await ask(A.guest, EXT_GW), `internet ${A.ext}`);
  for (const [s, other] of [[A, B], [B, A]] as const) {
    // Both sides initiate: the duplicate IKE SA is settled within seconds.
    const st = await until(async () => {
      const x = await c(s).getRouter({ routerId: s.router });
      return x.vpnConnections[0]?.peers[0]?.state === RouterVpnPeerState.UP ? x : undefined;
    }, `site ${s.name}'s IPsec peer UP`);
    const v = st.vpnConnections[0]!;
    assert.equal(v.applied, true, v.message);
    const p = v.peers[0]!;
    assert.ok(Math.abs(Date.now() / 1000 - Number(p.lastHandshakeUnix)) < 180, `handshake at ${p.lastHandshakeUnix}`);
    assert.ok(p.rxBytes > 0n && p.txBytes > 0n, `rx ${p.rxBytes} tx ${p.txBytes}`);
    assert.match(p.endpoint, new RegExp(`^${other.ext.replace(/\./g, "\\.")}:(500|4500)$`));
    assert.ok(!toJsonString(RouterStatusSchema, st).includes("an IPsec shared secret"), "the PSK is not returned");
  }
  // The proposals given are the ones negotiated.
  const sas = sh(["swanctl", "--list-sas", "--uri", `unix://${join(A.root, "network", "ipsec", routerNetns(A.router, A.host), "run", "charon.vici")}`]);
  assert.match(sas, /AES_CBC-256\/HMAC_SHA2_256_128\/PRF_HMAC_SHA2_256\/MODP_2048/);
  assert.match(sas, /ESP:AES_CBC-128\/HMAC_SHA2_256_128/);
  // A charon that dies is restarted by the agent, and the tunnel comes back.
  const first = charonPid(A)!;
  assert.ok(first);
  process.kill(first, "SIGKILL");
  const pa = await until(() => {
    const p = charonPid(A);
    return p !== undefined && p !== first ? p : undefined;
  }, "a new charon for site A", 20_000);
  assert.equal(await until(() => ask(A.guest, B.ip), "ga reaches gb again through IPsec", 40_000), `gb ${A.ip}`);
  const off = await c(A).applyRouter({ spec: routerSpec(A), generation: 11n });
  assert.deepEqual(notReady(off), [], JSON.stringify(off.conditions));
  assert.equal(runs(pa), false, "A's charon ended");
  assert.equal(existsSync(join(A.root, "network", "ipsec", routerNetns(A.router, A.host))), false);
  assert.equal(await ask(A.guest, B.ip), undefined);
  const pb = charonPid(B)!;
  await c(B).deleteRouter({ routerId: B.router });
  assert.equal(charonPid(B), undefined);
  assert.equal(runs(pb), false, "B's charon ended with its router");
});
