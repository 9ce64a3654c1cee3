import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { NetworkType } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { VirtualNetworkService } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { VpnPeerState, VpnServiceState, VpnType } from "@quantix/api/gen/Quantixkvm/network/v1/vpn_service_pb.js";
import { VpnServiceManager } from "@quantix/api/gen/Quantixkvm/network/v1/vpn_service_manager_pb.js";
import { bridgeName, SimulatedBackend } from "@quantix/agent";
import { ensureDebianPackages, pingsFrom, startTestServer, TestAgent, until, type TestServer } from "@quantix/testing";

// Two sites joined by a WireGuard VPN through the control plane's API: one host agent (its
// data plane in a namespace) maps physical network "ext" onto an "internet" namespace
// that routes to neither site's private subnet. Two networks (10.55.0.0/24 and
// 10.56.0.0/24) each get a central router on that external network and a "guest"
// namespace on their bridge. Without a VPN the guests do not reach each other; with a
// VPN service on each network naming the other as its peer, they do, with their own
// addresses; the services report their peers UP; deleting one ends it.

const P = `qvpe${(process.pid & 0xfff).toString(16)}`;
const HOST = `${P}h`;
const OUT = `${P}o`;
const SITE = { a: { ns: `${P}a`, cidr: "10.55.0.0/24", gw: "10.55.0.1", ip: "10.55.0.20" }, b: { ns: `${P}b`, cidr: "10.56.0.0/24", gw: "10.56.0.1", ip: "10.56.0.20" } } as const;
const sh = (args: string[]) => execFileSync(args[0]!, args.slice(1), { stdio: ["ignore", "pipe", "pipe"], timeout: 15_000 }).toString();

let s: TestServer | undefined;
let dir: string;
let agent: TestAgent<SimulatedBackend> | undefined;
const children = new Set<ChildProcess>();

/** One TCP connection from `ns` to ip:7000: the peer address the server saw ("" when it fails). */
function askPeer(ns: string, ip: string): Promise<string> {
  return new Promise((resolve) => {
    const child = spawn("ip", ["netns", "exec", ns, process.execPath, "-e", "const s=require('net').connect(7000,process.argv[1]);let b='';s.setTimeout(2000,()=>{s.destroy();process.exit(0)});s.on('data',(d)=>b+=d);s.on('end',()=>{process.stdout.write(b.trim());process.exit(0)});s.on('error',()=>process.exit(0));", ip], { stdio: ["ignore", "pipe", "ignore"] });
    children.add(child);
    let out = "";
    child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    child.on("exit", () => {
      children.delete(child);
      resolve(out.trim());
    });
  });
}

before(async () => {
  await ensureDebianPackages(["iproute2", "nftables", "iputils-ping", "conntrack", "wireguard-go", "wireguard-tools"]);
  dir = await mkdtemp(join(tmpdir(), "quantix-vpn-e2e-"));
  for (const ns of [HOST, OUT]) {
    sh(["ip", "netns", "add", ns]);
    sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
  }
  sh(["ip", "-n", HOST, "link", "add", `${P}x`, "type", "veth", "peer", "name", `${P}y`, "netns", OUT]);
  sh(["ip", "-n", OUT, "addr", "add", "198.51.100.1/24", "dev", `${P}y`]);
  sh(["ip", "-n", OUT, "link", "set", `${P}y`, "up"]);
  sh(["ip", "-n", HOST, "link", "add", `${P}u`, "type", "veth", "peer", "name", `${P}w`]);
  sh(["ip", "-n", HOST, "addr", "add", "192.0.2.41/24", "dev", `${P}u`]);
  sh(["ip", "-n", HOST, "link", "set", `${P}u`, "up"]);
  s = await startTestServer({ demo: false });
  agent = new TestAgent(new SimulatedBackend({ bootMs: 20 }), join(dir, "agent"), `${P}-h`, { network: { netns: HOST, underlayAddress: "192.0.2.41", physicalNetworks: new Map([["ext", `${P}x`]]) } });
  await agent.start(s.url);
  await until(async () => {
    const n = (await s!.nodes.listNodes({})).nodes.find((x) => x.hostname === `${P}-h` && x.status?.hypervisor?.capabilities.includes("network-uplink"));
    const answers = n ? await s!.cp.agents?.get(n.id)?.network.capabilities().then(() => true, () => false) : false;
    return answers ? n!.id : undefined;
  }, "the host's node with an uplink, its agent answering", 30_000, 100);
});

after(async () => {
  for (const c of children) c.kill("SIGKILL");
  await s?.close();
  // The routers' namespaces are the machine's: dropped before the agent stops (a router outlives its agent by design).
  await agent?.routerHost?.dropAll().catch(() => undefined);
  await agent?.stop().catch(() => undefined);
  for (const ns of [HOST, OUT, SITE.a.ns, SITE.b.ns]) {
    try {
      sh(["ip", "netns", "del", ns]);
    } catch {
      // not made, or gone
    }
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

test("two networks reach each other through WireGuard VPN services on their routers, with their own addresses, and not without them", { timeout: 180_000 }, async () => {
  const nets = createClient(VirtualNetworkService, s!.transport);
  const vpns = createClient(VpnServiceManager, s!.transport);
  const ext = await nets.createVirtualNetwork({ name: "vpn-internet", spec: { type: NetworkType.EXTERNAL, cidr: "198.51.100.0/24", physicalNetwork: "ext", dhcp: { rangeStart: "198.51.100.60", rangeEnd: "198.51.100.69" } } });
  const made: Record<"a" | "b", { id: string; externalIp: string }> = { a: { id: "", externalIp: "" }, b: { id: "", externalIp: "" } };
  for (const k of ["a", "b"] as const) {
    const net = await nets.createVirtualNetwork({ name: `vpn-site-${k}`, spec: { type: NetworkType.VXLAN, cidr: SITE[k].cidr, router: { externalNetworkId: ext.id, snatEnabled: true } } });
    const ready = await until(async () => {
      const n = await nets.getVirtualNetwork({ id: net.id });
      return n.status?.router?.ready ? n : undefined;
    }, `site ${k}'s router ready`, 60_000, 200);
    made[k] = { id: net.id, externalIp: ready.status!.router!.externalIp };
    // The site's guest: a namespace on the network's bridge, serving its peers' addresses on TCP 7000.
    const ns = SITE[k].ns;
    sh(["ip", "netns", "add", ns]);
    sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
    sh(["ip", "-n", HOST, "link", "add", `${P}v${k}`, "type", "veth", "peer", "name", "eth0", "netns", ns]);
    sh(["ip", "-n", HOST, "link", "set", `${P}v${k}`, "master", bridgeName(net.id), "up"]);
    sh(["ip", "-n", ns, "addr", "add", `${SITE[k].ip}/24`, "dev", "eth0"]);
    sh(["ip", "-n", ns, "link", "set", "eth0", "up"]);
    sh(["ip", "-n", ns, "route", "add", "default", "via", SITE[k].gw]);
    const server = spawn("ip", ["netns", "exec", ns, process.execPath, "-e", "require('net').createServer((c) => { c.on('error', () => {}); c.end(c.remoteAddress + '\\n'); }).listen(7000, '0.0.0.0')"], { stdio: "ignore" });
    children.add(server);
  }
  await until(async () => ((await pingsFrom(SITE.a.ns, "198.51.100.1")) ? true : undefined), "site a's guest reaches the internet through its router", 30_000, 200);
  assert.equal(await pingsFrom(SITE.a.ns, SITE.b.ip), false, "without a VPN the sites do not reach each other");

  // A service on each side; each names the other as its peer once both public keys are known.
  const va = await vpns.createVpnService({ name: "to-b", spec: { type: VpnType.WIREGUARD, networkId: made.a.id } });
  const vb = await vpns.createVpnService({ name: "to-a", spec: { type: VpnType.WIREGUARD, networkId: made.b.id } });
  const idle = await until(async () => {
    const v = await vpns.getVpnService({ id: va.id });
    return v.status?.state === VpnServiceState.DOWN ? v : undefined;
  }, "no peer yet: DOWN, saying so", 30_000, 200);
  assert.equal(idle.status!.conditions.find((c) => c.type === "Ready")?.reason, "NoPeers");
  await vpns.addVpnPeer({ id: va.id, peer: { name: "site-b", endpoint: made.b.externalIp, remoteSubnets: [SITE.b.cidr], publicKey: vb.status!.wireguardPublicKey, persistentKeepaliveSeconds: 5 } });
  await vpns.addVpnPeer({ id: vb.id, peer: { name: "site-a", endpoint: `${made.a.externalIp}:51820`, remoteSubnets: [SITE.a.cidr], publicKey: va.status!.wireguardPublicKey, persistentKeepaliveSeconds: 5 } });
  await until(async () => ((await pingsFrom(SITE.a.ns, SITE.b.ip)) ? true : undefined), "site a's guest pings site b's through the tunnel", 60_000, 200);
  assert.equal(await askPeer(SITE.a.ns, SITE.b.ip), SITE.a.ip, "b sees a's own address (no SNAT into the tunnel)");
  assert.equal(await askPeer(SITE.b.ns, SITE.a.ip), SITE.b.ip);
  const up = await until(async () => {
    const v = await vpns.getVpnService({ id: va.id });
    return v.status?.state === VpnServiceState.ACTIVE ? v : undefined;
  }, "service a ACTIVE with its peer UP", 30_000, 200).catch(async (err: unknown) => {
    throw new Error(`${String(err)}; ${JSON.stringify((await vpns.getVpnService({ id: va.id })).status, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))}`);
  });
  const peer = up.status!.peers[0]!;
  assert.equal(peer.state, VpnPeerState.UP);
  assert.ok(peer.lastHandshakeAt, "a handshake time");
  assert.ok(peer.rxBytes > 0n && peer.txBytes > 0n, "bytes both ways");
  assert.equal(up.status!.externalAddress, made.a.externalIp);
  assert.equal(up.spec!.protocolConfig.case === "wireguard" ? up.spec!.protocolConfig.value.privateKey : "x", "", "the private key is never read back");

  // One side deleted: the tunnel is gone and the sites are apart again.
  await vpns.deleteVpnService({ id: va.id });
  await until(async () => (!(await pingsFrom(SITE.a.ns, SITE.b.ip)) ? true : undefined), "the sites apart again", 30_000, 200);
  await vpns.deleteVpnService({ id: vb.id });
  for (const k of ["a", "b"] as const) await nets.updateVirtualNetwork({ id: made[k].id, spec: {}, updateMask: { paths: ["spec.router"] } });
  await until(async () => ((await agent!.routerHost!.listRouters()).length === 0 ? true : undefined), "the routers removed", 30_000, 200);
});
