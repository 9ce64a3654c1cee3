import assert from "node:assert/strict";
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { FloatingIpState } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_pb.js";
import { FloatingIpService } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_service_pb.js";
import { BackendProtocol, HealthMonitorType, ListenerProtocol, LoadBalancerState, MemberHealth } from "@quantix/api/gen/Quantixkvm/network/v1/load_balancer_pb.js";
import { LoadBalancerService } from "@quantix/api/gen/Quantixkvm/network/v1/load_balancer_service_pb.js";
import { NetworkType } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { VirtualNetworkService } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { bridgeName, SimulatedBackend } from "@quantix/agent";
import { ensureDebianPackages, rejection, startTestServer, TestAgent, until, type TestServer } from "@quantix/testing";

// A load balancer through the control plane's API, with real TCP: one host agent (its
// data plane in a namespace) maps physical network "ext" onto an "outside" namespace.
// A network with a central router to that external network gets a load balancer whose
// pool has three members: namespaces on the network's bridge, each a TCP service on port
// 8080 answering with its name. A floating IP on the VIP port lets the outside in on
// port 80. Connections spread over the three (GetLoadBalancerStats counts them); a
// member whose service is killed is reported UNHEALTHY and gets no more connections; a
// client on the network reaches the VIP too.

const P = `qlbe${(process.pid & 0xfff).toString(16)}`;
const HOST = `${P}h`;
const OUT = `${P}o`;
const CLIENT = `${P}c`;
const MEMBERS = ["10.48.0.11", "10.48.0.12", "10.48.0.13"];
const UPSTREAM = "198.51.100.1";
const sh = (args: string[]) => execFileSync(args[0]!, args.slice(1), { stdio: ["ignore", "pipe", "pipe"], timeout: 15_000 }).toString();
const memberNs = (i: number) => `${P}m${i}`;

let s: TestServer | undefined;
let dir: string;
let agent: TestAgent<SimulatedBackend> | undefined;
const servers = new Map<number, ChildProcess>();
const clients = new Set<ChildProcess>();

/** Starts member i's service: answers each connection with its name (a node process in its namespace; a client that hangs up at once, as a health check does, is no error). */
function serve(i: number): void {
  const child = spawn("ip", ["netns", "exec", memberNs(i), process.execPath, "-e", "require('net').createServer((c) => { c.on('error', () => {}); c.end(process.argv[1] + '\\n'); }).listen(8080)", `m${i}`], { stdio: "ignore" });
  servers.set(i, child);
}

/** One connection from namespace `ns` to ip:port: the answer's first line, or "" when refused or silent. */
function ask(ns: string, ip: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    // A node client in the namespace: the target is an argument, never code.
    const child = spawn("ip", ["netns", "exec", ns, process.execPath, "-e", "const s=require('net').connect(+process.argv[2],process.argv[1]);let b='';s.setTimeout(2000,()=>{s.destroy();process.exit(0)});s.on('data',(d)=>b+=d);s.on('end',()=>{process.stdout.write(b.trim());process.exit(0)});s.on('error',()=>process.exit(0));", ip, String(port)], { stdio: ["ignore", "pipe", "ignore"] });
    clients.add(child);
    let out = "";
    child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
    child.on("exit", () => {
      clients.delete(child);
      resolve(out.trim());
    });
  });
}

before(async () => {
  await ensureDebianPackages(["iproute2", "nftables", "iputils-ping", "conntrack"]);
  dir = await mkdtemp(join(tmpdir(), "quantix-lb-e2e-"));
  for (const ns of [HOST, OUT]) {
    sh(["ip", "netns", "add", ns]);
    sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
  }
  sh(["ip", "-n", HOST, "link", "add", `${P}x`, "type", "veth", "peer", "name", `${P}y`, "netns", OUT]);
  sh(["ip", "-n", OUT, "addr", "add", `${UPSTREAM}/24`, "dev", `${P}y`]);
  sh(["ip", "-n", OUT, "link", "set", `${P}y`, "up"]);
  s = await startTestServer({ demo: false });
  agent = new TestAgent(new SimulatedBackend({ bootMs: 20 }), join(dir, "agent"), `${P}-h`, { network: { netns: HOST, underlayAddress: "192.0.2.31", physicalNetworks: new Map([["ext", `${P}x`]]) } });
  // An underlay address for the host's VXLAN (a veth whose other end stays in the host).
  sh(["ip", "-n", HOST, "link", "add", `${P}u`, "type", "veth", "peer", "name", `${P}w`]);
  sh(["ip", "-n", HOST, "addr", "add", "192.0.2.31/24", "dev", `${P}u`]);
  sh(["ip", "-n", HOST, "link", "set", `${P}u`, "up"]);
  await agent.start(s.url);
  await until(async () => {
    const n = (await s!.nodes.listNodes({})).nodes.find((x) => x.hostname === `${P}-h` && x.status?.hypervisor?.capabilities.includes("network-uplink"));
    const answers = n ? await s!.cp.agents?.get(n.id)?.network.capabilities().then(() => true, () => false) : false;
    return answers ? n!.id : undefined;
  }, "the host's node with an uplink, its agent answering", 30_000, 100);
});

after(async () => {
  for (const c of [...servers.values(), ...clients]) c.kill("SIGKILL");
  await s?.close();
  // The routers' namespaces are the machine's: dropped before the agent stops (a router outlives its agent by design).
  await agent?.routerHost?.dropAll().catch(() => undefined);
  await agent?.stop().catch(() => undefined);
  for (const ns of [HOST, OUT, CLIENT, ...MEMBERS.map((_, i) => memberNs(i))]) {
    try {
      sh(["ip", "netns", "del", ns]);
    } catch {
      // not made, or gone
    }
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

test("a load balancer through the API spreads real TCP connections over three members, takes out a member whose service died, and counts them", { timeout: 180_000 }, async () => {
  const nets = createClient(VirtualNetworkService, s!.transport);
  const lbs = createClient(LoadBalancerService, s!.transport);
  const fips = createClient(FloatingIpService, s!.transport);
  const ext = await nets.createVirtualNetwork({ name: "lb-internet", spec: { type: NetworkType.EXTERNAL, cidr: "198.51.100.0/24", physicalNetwork: "ext", dhcp: { rangeStart: "198.51.100.50", rangeEnd: "198.51.100.59" } } });
  const net = await nets.createVirtualNetwork({ name: "lb-backends", spec: { type: NetworkType.VXLAN, cidr: "10.48.0.0/24", router: { externalNetworkId: ext.id, snatEnabled: true } } });
  await until(async () => ((await nets.getVirtualNetwork({ id: net.id })).status?.router?.ready ? true : undefined), "the router ready", 60_000, 200);

  // The members and a client: namespaces on the network's bridge on the router's host (the network is there for its router).
  const bridge = bridgeName(net.id);
  const attach = (ns: string, i: string, ip: string) => {
    sh(["ip", "netns", "add", ns]);
    sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
    sh(["ip", "-n", HOST, "link", "add", `${P}v${i}`, "type", "veth", "peer", "name", "eth0", "netns", ns]);
    sh(["ip", "-n", HOST, "link", "set", `${P}v${i}`, "master", bridge, "up"]);
    sh(["ip", "-n", ns, "addr", "add", `${ip}/24`, "dev", "eth0"]);
    sh(["ip", "-n", ns, "link", "set", "eth0", "up"]);
    sh(["ip", "-n", ns, "route", "add", "default", "via", "10.48.0.1"]);
  };
  MEMBERS.forEach((ip, i) => attach(memberNs(i), String(i), ip));
  attach(CLIENT, "c", "10.48.0.20");
  for (const i of MEMBERS.keys()) serve(i);
  for (const [i, ip] of MEMBERS.entries()) await until(async () => ((await ask(CLIENT, ip, 8080)) === `m${i}` ? true : undefined), `member m${i} serving`, 30_000, 100);

  // Bad input: a member on another network, a listener port twice.
  const bad = await rejection(
    lbs.createLoadBalancer({
      name: "bad",
      spec: { vipNetworkId: net.id, listeners: [{ name: "a", protocol: ListenerProtocol.TCP, port: 80, defaultPool: "web" }, { name: "b", protocol: ListenerProtocol.TCP, port: 80, defaultPool: "web" }], pools: [{ name: "web", protocol: BackendProtocol.TCP, members: [{ address: "10.99.0.5", port: 8080 }] }] },
    }),
  );
  assert.match(bad.message, /spec\.pools\[0\]\.members\[0\]\.address/);
  assert.match(bad.message, /spec\.listeners\[1\]\.port/);

  const lb = await lbs.createLoadBalancer({
    name: "web",
    spec: {
      vipNetworkId: net.id,
      listeners: [{ name: "http", protocol: ListenerProtocol.TCP, port: 80, defaultPool: "web" }],
      pools: [{ name: "web", protocol: BackendProtocol.TCP, members: MEMBERS.map((address, i) => ({ name: `m${i}`, address, port: 8080 })), healthMonitor: { type: HealthMonitorType.TCP, delaySeconds: 1, timeoutSeconds: 1, healthyThreshold: 1, unhealthyThreshold: 2 } }],
    },
  });
  const vip = lb.spec!.vipAddress;
  const active = await until(async () => {
    const x = await lbs.getLoadBalancer({ id: lb.id });
    return x.status?.state === LoadBalancerState.ACTIVE ? x : undefined;
  }, "the load balancer ACTIVE", 60_000, 200).catch(async (err: unknown) => {
    throw new Error(`${String(err)}; ${JSON.stringify((await lbs.getLoadBalancer({ id: lb.id })).status, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))}`);
  });
  assert.deepEqual(active.status!.nodeIds.length, 1);
  assert.deepEqual(active.status!.members.map((m) => m.health), [MemberHealth.ONLINE, MemberHealth.ONLINE, MemberHealth.ONLINE]);

  // From outside, through a floating IP on the VIP port: the listener's port 80 to the members' 8080.
  const fip = await fips.createFloatingIp({ externalNetworkId: ext.id, portId: active.status!.vipPortId });
  await until(async () => ((await fips.getFloatingIp({ id: fip.id })).state === FloatingIpState.ACTIVE ? true : undefined), "the VIP's floating IP ACTIVE", 30_000, 200);
  await until(async () => ((await ask(OUT, fip.address, 80)) !== "" ? true : undefined), "the outside reaches the VIP by its floating IP", 30_000, 200).catch(async (e: unknown) => {
    // What the router holds, to say why.
    const r = (await agent!.routerHost!.listRouters())[0];
    throw new Error(`${String(e)}; router conditions: ${JSON.stringify(r?.conditions)}; load balancers: ${JSON.stringify(r?.loadBalancers, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v))}`);
  });
  const seen = new Map<string, number>();
  for (let k = 0; k < 30; k++) {
    const who = await ask(OUT, fip.address, 80);
    seen.set(who, (seen.get(who) ?? 0) + 1);
  }
  assert.deepEqual([...seen.keys()].sort(), ["m0", "m1", "m2"], `every member served: ${JSON.stringify([...seen])}`);
  // A client on the network reaches the VIP itself (its first connection may wait for the
  // hairpin path's neighbour entries: asked until it answers, as the floating IP above).
  const inside = await until(async () => {
    const who = await ask(CLIENT, vip, 80);
    return who !== "" ? who : undefined;
  }, "a client on the network reaches the VIP", 30_000, 200);
  assert.match(inside, /^m[012]$/);
  const stats = await lbs.getLoadBalancerStats({ id: lb.id });
  const http = stats.listeners.find((l) => l.listenerName === "http")!;
  assert.ok(http.totalConnections >= 32n, `counted ${http.totalConnections}`);
  for (const m of http.members) assert.ok(m.totalConnections >= 1n, `${m.memberName} counted ${m.totalConnections}`);
  assert.equal(http.members.reduce((a, m) => a + m.totalConnections, 0n), http.totalConnections);

  // A member's service dies: reported UNHEALTHY, and no connection goes there any more.
  servers.get(1)!.kill("SIGKILL");
  const degraded = await until(async () => {
    const x = await lbs.getLoadBalancer({ id: lb.id });
    return x.status?.members.find((m) => m.memberName === "m1")?.health === MemberHealth.UNHEALTHY ? x : undefined;
  }, "m1 reported UNHEALTHY", 30_000, 200);
  assert.equal(degraded.status!.state, LoadBalancerState.ACTIVE, "the other members still serve the listener");
  const after = new Set<string>();
  for (let k = 0; k < 20; k++) after.add(await ask(OUT, fip.address, 80));
  assert.deepEqual([...after].sort(), ["m0", "m2"]);

  // Gone with the load balancer: its VIP port, and the floating IP's mapping.
  await lbs.deleteLoadBalancer({ id: lb.id });
  await until(async () => ((await ask(OUT, fip.address, 80)) === "" ? true : undefined), "the VIP no longer answers", 30_000, 200);
  assert.equal((await fips.getFloatingIp({ id: fip.id })).portId, "");
  await fips.deleteFloatingIp({ id: fip.id });
  await nets.updateVirtualNetwork({ id: net.id, spec: {}, updateMask: { paths: ["spec.router"] } });
  await nets.deleteVirtualNetwork({ id: net.id });
  await nets.deleteVirtualNetwork({ id: ext.id });
});
