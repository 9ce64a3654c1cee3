import assert from "node:assert/strict";
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import { Code, createClient, type Client, type ConnectError } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { NetworkService, RouterLoadBalancerAlgorithm, RouterLoadBalancerProtocol, type NetworkSpecSchema, type RouterLoadBalancerSchema, type RouterSpecSchema, type RouterStatus } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { silentLogger } from "@quantix/rpc";
import { ensureDebianPackages, rejection, until } from "@quantix/testing";
import { SimulatedBackend } from "../backends/simulated/simulated-backend.js";
import { startAgentServer, type AgentServer } from "../rpc/agent-server.js";
import { VmManager } from "../vm-manager.js";
import { probeNetworkCapabilities } from "./capabilities.js";
import { NetworkHost } from "./network-host.js";
import { tapName } from "./names.js";
import { RouterHost } from "./router-host.js";
import { routerInterfaceName, routerNetns } from "./router-model.js";

// Load balancers in a router, with real traffic. As router.test.ts: a data plane
// namespace (the "host") with one network, an "outside" namespace on the physical
// network's wire (the external gateway 203.0.113.1) and guests as namespaces: three
// members m1..m3 running a TCP service on 8080 that greets each connection with
// "<name> <peer address>" and echoes what it is sent, and a client c1 on the same
// network. The router has 203.0.113.5/24 outside and 10.50.0.1/24 inside; the load
// balancers listen on an external VIP (203.0.113.100) and an internal one (10.50.0.100),
// on ports that differ from the members' 8080.

const run = promisify(execFile);
const hex = (process.pid & 0xffff).toString(16);
const P = `qlb${hex}`;
const HOST = `${P}h`;
const OUT = `${P}o`;
const GUESTS = ["m1", "m2", "m3", "c1"] as const;
type Guest = (typeof GUESTS)[number];
const NSOF = Object.fromEntries(GUESTS.map((g) => [g, `${P}${g}`])) as Record<Guest, string>;
const PHYS = `${P}x`;
const root = mkdtempSync(join(tmpdir(), "quantix-router-lb-"));
const pad = hex.padStart(4, "0");
const NET = `0e00${pad}-0000-4000-8000-000000000001`;
const ROUTER = `7b00${pad}-0000-4000-8000-000000000001`;
const LB_EXT = `1b00${pad}-0000-4000-8000-000000000001`;
const LB_INT = `1b00${pad}-0000-4000-8000-000000000002`;
const idx: Record<Guest, number> = { m1: 1, m2: 2, m3: 3, c1: 4 };
const PORT_ID = (g: Guest) => `c9${pad}0${idx[g]}-0000-4000-8000-00000000000${idx[g]}`;
const MEMBER_ID = (g: Guest) => `2b00${pad}-0000-4000-8000-00000000000${idx[g]}`;
const MAC = (g: Guest) => `52:54:00:00:05:1${idx[g]}`;
const IP = (g: Guest) => (g === "c1" ? "10.50.0.21" : `10.50.0.1${idx[g]}`);
const ROUTER_IN = "10.50.0.1";
const ROUTER_EXT = "203.0.113.5";
const EXT_GW = "203.0.113.1";
const VIP = "203.0.113.100";
const VIP_IN = "10.50.0.100";
const FIP = "203.0.113.10";
const NS = routerNetns(ROUTER, HOST);
const MEMBERS = ["m1", "m2", "m3"] as const;

let host: NetworkHost;
let routers: RouterHost;
let server: AgentServer;
let backend: SimulatedBackend;
let c: Client<typeof NetworkService>;
const children: ChildProcess[] = [];
const services = new Map<Guest, ChildProcess>();
let generation = 0n;

const sh = (args: string[]) => execFileSync(args[0]!, args.slice(1), { stdio: ["ignore", "pipe", "pipe"], timeout: 15_000 }).toString();
const quiet = (args: string[]) => {
  try {
    sh(args);
  } catch {
    // already gone
  }
};
const fields = (e: ConnectError) => e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));
const notReady = (s: RouterStatus) => s.conditions.filter((x) => !x.status);

/** The names of the members answering `n` connections, one after another, from `from` to ip:port ("-": no answer). */
async function askMany(from: string, ip: string, port: number, n: number): Promise<string[]> {
  const code = `import socket\nout=[]\nfor i in range(${n}):\n try:\n  s=socket.create_connection(("${ip}", ${port}), timeout=2); out.append(s.makefile().readline().split()[0]); s.close()\n except Exception:\n  out.append("-")\nprint(" ".join(out))\n`;
  const r = await run("ip", ["netns", "exec", from, "python3", "-c", code], { timeout: 30_000 + n * 2500 });
  return r.stdout.trim().split(" ");
}
/** The greeting of one connection ("<name> <peer>"), undefined when it does not connect. */
const ask = (from: string, ip: string, port: number) =>
  run("ip", ["netns", "exec", from, "python3", "-c", `import socket; s=socket.create_connection(("${ip}", ${port}), timeout=2); print(s.makefile().readline().strip()); s.close()`], { timeout: 20_000 }).then(
    (r) => r.stdout.trim() || undefined,
    () => undefined,
  );
const tally = (names: readonly string[]) => names.reduce((m, n) => m.set(n, (m.get(n) ?? 0) + 1), new Map<string, number>());

/** Member `g`'s UDP service on 8053: answers each datagram with "<g> <peer>". */
function serveUdp(g: Guest): void {
  const code = `import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 8053))\nwhile True:\n d,a=s.recvfrom(100); s.sendto(("${g} "+a[0]).encode(), a)\n`;
  children.push(spawn("ip", ["netns", "exec", NSOF[g], "python3", "-c", code], { stdio: "ignore" }));
}
/** The members answering `n` UDP datagrams, each from a new socket (a new flow), from `from` to ip:port. */
async function askUdp(from: string, ip: string, port: number, n: number): Promise<string[]> {
  const code = `import socket\nout=[]\nfor i in range(${n}):\n s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)\n try:\n  s.sendto(b"q", ("${ip}", ${port})); out.append(s.recvfrom(100)[0].decode().split()[0])\n except Exception:\n  out.append("-")\n s.close()\nprint(" ".join(out))\n`;
  const r = await run("ip", ["netns", "exec", from, "python3", "-c", code], { timeout: 30_000 + n * 2500 });
  return r.stdout.trim().split(" ");
}

/** Starts member `g`'s service: greets with "<g> <peer>", then echoes each message as "<g> echo <msg>". */
function serve(g: Guest): void {
  const code = `import socket, threading\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 8080)); s.listen(64)\ndef h(c, a):\n try:\n  c.sendall(("${g} "+a[0]+"\\n").encode())\n  while True:\n   d=c.recv(100)\n   if not d: break\n   c.sendall(("${g} echo "+d.decode().strip()+"\\n").encode())\n except Exception:\n  pass\n c.close()\nwhile True:\n c,a=s.accept(); threading.Thread(target=h, args=(c, a), daemon=True).start()\n`;
  const ch = spawn("ip", ["netns", "exec", NSOF[g], "python3", "-c", code], { stdio: "ignore" });
  children.push(ch);
  services.set(g, ch);
}
async function stopService(g: Guest): Promise<void> {
  const ch = services.get(g)!;
  const gone = new Promise((r) => ch.once("exit", r));
  ch.kill("SIGKILL");
  await gone;
  services.delete(g);
}

/** Connections held open from `from`: the greeting of each, then `send(i, msg)` answers the reply line (or "ERR ..."/"EOF"). */
async function hold(from: string, ip: string, port: number, n: number): Promise<{ greetings: string[]; send: (i: number, msg: string) => Promise<string>; close: () => void }> {
  const code = `import socket, sys\ncs=[]\nfor i in range(${n}):\n s=socket.create_connection(("${ip}", ${port}), timeout=3); cs.append(s)\n g=b""\n while not g.endswith(b"\\n"): g+=s.recv(1)\n print(g.decode().split()[0], flush=True)\nfor line in sys.stdin:\n i, msg = line.split()\n c=cs[int(i)]\n try:\n  c.sendall((msg+"\\n").encode()); d=c.recv(100).decode().strip(); print(d if d else "EOF", flush=True)\n except Exception as e:\n  print("ERR "+type(e).__name__, flush=True)\n`;
  const ch = spawn("ip", ["netns", "exec", from, "python3", "-c", code], { stdio: ["pipe", "pipe", "ignore"] });
  children.push(ch);
  const lines = createInterface({ input: ch.stdout! })[Symbol.asyncIterator]();
  const next = async () => {
    const r = await lines.next();
    assert.ok(!r.done, "the client ended");
    return r.value;
  };
  const greetings: string[] = [];
  for (let i = 0; i < n; i++) greetings.push(await next());
  return {
    greetings,
    send: async (i, msg) => {
      ch.stdin!.write(`${i} ${msg}\n`);
      return next();
    },
    close: () => ch.kill("SIGKILL"),
  };
}

type LbInit = MessageInitShape<typeof RouterLoadBalancerSchema>;
const member = (g: Guest, over: Record<string, unknown> = {}) => ({ memberId: MEMBER_ID(g), address: IP(g), port: 8080, ...over });
const TCP = RouterLoadBalancerProtocol.TCP;
const CHECK = { intervalSeconds: 1, timeoutSeconds: 1, rise: 1, fall: 2 };

/** The external load balancer: 80 round robin over m1..m3 with a health check, 81 weighted 1:3 (m1:m2), 82 source-IP affinity. */
function extLb(members: readonly Guest[] = MEMBERS): LbInit {
  return {
    loadBalancerId: LB_EXT,
    vip: VIP,
    listeners: [
      { protocol: TCP, port: 80, algorithm: RouterLoadBalancerAlgorithm.ROUND_ROBIN, members: members.map((g) => member(g)), healthCheck: CHECK },
      { protocol: TCP, port: 81, members: [member("m1", { weight: 1 }), member("m2", { weight: 3 })] },
      { protocol: TCP, port: 82, algorithm: RouterLoadBalancerAlgorithm.SOURCE_IP, members: MEMBERS.map((g) => member(g)) },
    ],
  };
}
/** The internal load balancer: TCP 80 round robin over m1..m3's 8080, UDP 53 round robin over their 8053 (checked on TCP 8080). */
const intLb = (): LbInit => ({
  loadBalancerId: LB_INT,
  vip: VIP_IN,
  listeners: [
    { protocol: TCP, port: 80, members: MEMBERS.map((g) => member(g)) },
    { protocol: RouterLoadBalancerProtocol.UDP, port: 53, members: MEMBERS.map((g) => member(g, { port: 8053 })), healthCheck: { ...CHECK, port: 8080 } },
  ],
});

function routerSpec(loadBalancers: LbInit[], over: Partial<MessageInitShape<typeof RouterSpecSchema>> = {}): MessageInitShape<typeof RouterSpecSchema> {
  return {
    routerId: ROUTER,
    external: { physicalNetwork: "ext", address: `${ROUTER_EXT}/24`, gatewayIp: EXT_GW, macAddress: "02:ab:00:00:00:05" },
    interfaces: [{ networkId: NET, macAddress: "02:ab:00:00:01:01", addresses: [`${ROUTER_IN}/24`] }],
    snatEnabled: true,
    loadBalancers,
    ...over,
  } as MessageInitShape<typeof RouterSpecSchema>;
}
const apply = (loadBalancers: LbInit[], over: Partial<MessageInitShape<typeof RouterSpecSchema>> = {}) => c.applyRouter({ spec: routerSpec(loadBalancers, over), generation: ++generation });

function networkSpec(): MessageInitShape<typeof NetworkSpecSchema> {
  return {
    networkId: NET,
    vni: 4646,
    mtu: 1450,
    localUnderlayAddress: "192.0.2.1",
    subnets: [{ cidr: "10.50.0.0/24", gatewayIp: ROUTER_IN }],
    ports: GUESTS.map((g) => ({ portId: PORT_ID(g), macAddress: MAC(g), fixedIps: [IP(g)] })),
  };
}

/** A member's status on a listener. */
async function memberStatus(lbId: string, port: number, g: Guest) {
  const s = await c.getRouter({ routerId: ROUTER });
  const l = s.loadBalancers.find((x) => x.loadBalancerId === lbId)?.listeners.find((x) => x.port === port);
  return { listener: l, member: l?.members.find((m) => m.memberId === MEMBER_ID(g)), status: s };
}

async function startAgent(): Promise<void> {
  host = new NetworkHost({ stateDir: root, netns: HOST, adoptVethPorts: true });
  await host.start();
  routers = new RouterHost({ stateDir: root, netns: HOST, physicalNetworks: new Map([["ext", PHYS]]) });
  await routers.start();
  backend = new SimulatedBackend({ bootMs: 20 });
  const manager = new VmManager({ backend, portTaps: (id) => host.portTap(id) });
  await manager.start();
  server = await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: silentLogger, network: { host, routers, features: () => probeNetworkCapabilities(HOST, undefined, new Map([["ext", PHYS]])) } });
  c = createClient(NetworkService, createGrpcTransport({ baseUrl: server.url }));
}

async function stopAgent(): Promise<void> {
  await server?.close().catch(() => undefined);
  await backend?.close().catch(() => undefined);
  await routers?.close().catch(() => undefined);
  await host?.close(true).catch(() => undefined);
}

before(async () => {
  await ensureDebianPackages(["nftables", "conntrack", "busybox-static"]);
  for (const ns of [HOST, OUT, ...Object.values(NSOF)]) {
    sh(["ip", "netns", "add", ns]);
    sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
  }
  sh(["ip", "-n", HOST, "link", "add", `${P}u`, "type", "veth", "peer", "name", `${P}v`]);
  sh(["ip", "-n", HOST, "addr", "add", "192.0.2.1/24", "dev", `${P}u`]);
  sh(["ip", "-n", HOST, "link", "set", `${P}u`, "up"]);
  sh(["ip", "-n", HOST, "link", "set", `${P}v`, "up"]);
  sh(["ip", "-n", HOST, "link", "add", PHYS, "type", "veth", "peer", "name", "eth0", "netns", OUT]);
  sh(["ip", "-n", OUT, "addr", "add", `${EXT_GW}/24`, "dev", "eth0"]);
  sh(["ip", "-n", OUT, "link", "set", "eth0", "up"]);
  // The outside learns addresses from gratuitous ARP (to see the router announce a VIP).
  sh(["ip", "netns", "exec", OUT, "sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1"]);
  await startAgent();
  for (const g of GUESTS) {
    sh(["ip", "-n", HOST, "link", "add", tapName(PORT_ID(g)), "type", "veth", "peer", "name", "eth0", "netns", NSOF[g]]);
    sh(["ip", "-n", NSOF[g], "link", "set", "eth0", "address", MAC(g), "mtu", "1450", "up"]);
    sh(["ip", "-n", NSOF[g], "addr", "add", `${IP(g)}/24`, "dev", "eth0"]);
    sh(["ip", "-n", NSOF[g], "route", "add", "default", "via", ROUTER_IN]);
    if (g !== "c1") {
      serve(g);
      serveUdp(g);
    }
  }
  const s = await c.applyNetwork({ spec: networkSpec(), generation: 1n });
  assert.deepEqual(s.conditions.filter((x) => !x.status), [], JSON.stringify(s.conditions));
});

after(async () => {
  if (process.env["QLB_KEEP"]) return;
  for (const ch of children) ch.kill("SIGKILL");
  await routers?.deleteRouter(ROUTER).catch(() => undefined);
  await stopAgent();
  for (const ns of [...Object.values(NSOF), OUT, HOST, NS]) quiet(["ip", "netns", "del", ns]);
  rmSync(root, { recursive: true, force: true });
});

test("(a) round robin through an external VIP spreads 30 connections exactly 10/10/10; (b) listener port 80 reaches members' 8080; (h) counters", async () => {
  const s = await apply([extLb()]);
  assert.deepEqual(notReady(s), [], JSON.stringify(s.conditions));
  const lbc = s.conditions.find((x) => x.type === "LoadBalancersReady");
  assert.equal(lbc?.status, true, JSON.stringify(lbc));
  assert.deepEqual(s.loadBalancers.map((l) => [l.loadBalancerId, l.vip, l.applied]), [[LB_EXT, VIP, true]]);
  // Defaults read back: member ports, weights, the algorithm.
  assert.deepEqual(s.spec?.loadBalancers[0]?.listeners[1]?.algorithm, RouterLoadBalancerAlgorithm.ROUND_ROBIN);
  assert.deepEqual(s.spec?.loadBalancers[0]?.listeners[2]?.members.map((m) => m.weight), [1, 1, 1]);
  // The VIP is on qre, and the outside learned it from the gratuitous ARP.
  assert.match(sh(["ip", "-n", NS, "-4", "addr", "show", "dev", "qre"]), new RegExp(`${VIP}/32`));
  assert.equal(await until(async () => (JSON.parse(sh(["ip", "-n", OUT, "-json", "neigh", "show", VIP])) as { lladdr?: string }[])[0]?.lladdr, "the VIP's announcement seen outside", 10_000, 50), "02:ab:00:00:00:05");
  // The members answer once their health checks passed (they start in anyway).
  await until(async () => ((await memberStatus(LB_EXT, 80, "m3")).member?.healthReason === "connected" ? true : undefined), "m3 checked healthy", 15_000);
  assert.match((await until(() => ask(OUT, VIP, 80), "the VIP answers", 15_000)) ?? "", new RegExp(`^m[123] ${EXT_GW}$`), "members see the outside client's address");
  const before = (await c.getRouter({ routerId: ROUTER })).loadBalancers[0]!.listeners[0]!;
  const names = await askMany(OUT, VIP, 80, 30);
  assert.deepEqual([...tally(names)].sort(), [["m1", 10], ["m2", 10], ["m3", 10]], names.join(" "));
  // (h) each member counted 10 new connections, packets and bytes both ways; the listener the sums.
  const after = (await c.getRouter({ routerId: ROUTER })).loadBalancers[0]!.listeners[0]!;
  for (const m of after.members) {
    const b = before.members.find((x) => x.memberId === m.memberId)!;
    assert.equal(m.connections - b.connections, 10n, `${m.address} connections`);
    assert.ok(m.packets - b.packets >= 50n, `${m.address} packets ${m.packets - b.packets}`);
    assert.ok(m.bytes - b.bytes > 10n * 200n, `${m.address} bytes ${m.bytes - b.bytes}`);
    assert.equal(m.healthy, true);
  }
  assert.equal(after.connections, after.members.reduce((a, m) => a + m.connections, 0n));
  assert.equal(after.bytes, after.members.reduce((a, m) => a + m.bytes, 0n));
  assert.equal(after.healthyMembers, 3);
  // Counters survive a re-apply (the table is refilled, not recreated).
  const again = await apply([extLb()]);
  assert.ok(again.loadBalancers[0]!.listeners[0]!.connections >= after.connections);
});

test("(f) weights 1:3 over 40 round robin connections give exactly 10:30", async () => {
  const names = await askMany(OUT, VIP, 81, 40);
  assert.deepEqual([...tally(names)].sort(), [["m1", 10], ["m2", 30]], names.join(" "));
});

test("(e) source-IP affinity: one client's connections land on one member", async () => {
  const names = await askMany(OUT, VIP, 82, 12);
  assert.equal(new Set(names).size, 1, names.join(" "));
  assert.match(names[0]!, /^m[123]$/);
});

test("(d) a client on the members' network reaches the internal VIP behind the router's address (hairpin)", async () => {
  const s = await apply([extLb(), intLb()]);
  assert.deepEqual(notReady(s), [], JSON.stringify(s.conditions));
  assert.match(sh(["ip", "-n", NS, "-4", "addr", "show", "dev", routerInterfaceName(NET)]), new RegExp(`${VIP_IN}/32`));
  assert.match((await until(() => ask(NSOF.c1, VIP_IN, 80), "c1 reaches the internal VIP", 15_000)) ?? "", new RegExp(`^m[123] ${ROUTER_IN}$`));
  const names = await askMany(NSOF.c1, VIP_IN, 80, 9);
  assert.deepEqual([...tally(names)].sort(), [["m1", 3], ["m2", 3], ["m3", 3]], names.join(" "));
  // A guest reaches the external VIP too (hairpin through the router).
  assert.match((await ask(NSOF.c1, VIP, 80)) ?? "", new RegExp(`^m[123] ${ROUTER_IN}$`));
  // A member reaches the VIP too, even when it picks itself.
  assert.deepEqual((await askMany(NSOF.m1, VIP_IN, 80, 3)).sort(), ["m1", "m2", "m3"]);
  // UDP: each new flow (a new source port) goes round robin, listener 53 to members' 8053.
  const udp = await askUdp(NSOF.c1, VIP_IN, 53, 6);
  assert.deepEqual([...tally(udp)].sort(), [["m1", 2], ["m2", 2], ["m3", 2]], udp.join(" "));
  const u = (await c.getRouter({ routerId: ROUTER })).loadBalancers.find((l) => l.loadBalancerId === LB_INT)!.listeners.find((l) => l.protocol === RouterLoadBalancerProtocol.UDP)!;
  assert.equal(u.connections, 6n, "UDP flows counted");
});

test("(c) a member whose service dies leaves within the fall time and comes back when it answers again", async () => {
  await stopService("m3");
  await until(async () => ((await memberStatus(LB_EXT, 80, "m3")).member?.healthy === false ? true : undefined), "m3 marked unhealthy", 15_000);
  const down = await memberStatus(LB_EXT, 80, "m3");
  assert.match(down.member!.healthReason, /ECONNREFUSED/);
  assert.equal(down.listener!.healthyMembers, 2);
  assert.equal(down.status.conditions.find((x) => x.type === "Ready")?.status, true, "member health is not the router's readiness");
  const names = await askMany(OUT, VIP, 80, 20);
  assert.deepEqual([...tally(names)].sort(), [["m1", 10], ["m2", 10]], names.join(" "));
  serve("m3");
  await until(async () => ((await memberStatus(LB_EXT, 80, "m3")).member?.healthy === true ? true : undefined), "m3 healthy again", 15_000);
  assert.deepEqual([...tally(await askMany(OUT, VIP, 80, 9))].sort(), [["m1", 3], ["m2", 3], ["m3", 3]]);
});

test("no healthy member: the listener refuses connections, LoadBalancersReady says which", async () => {
  const dead: LbInit = { loadBalancerId: LB_EXT, vip: VIP, listeners: [{ protocol: TCP, port: 80, members: [{ memberId: MEMBER_ID("m1"), address: "10.50.0.99", port: 8080 }], healthCheck: CHECK }] };
  await apply([dead]);
  const s = await until(async () => {
    const x = await c.getRouter({ routerId: ROUTER });
    return x.conditions.find((k) => k.type === "LoadBalancersReady")?.reason === "NoHealthyMembers" ? x : undefined;
  }, "NoHealthyMembers", 15_000);
  assert.match(s.conditions.find((k) => k.type === "LoadBalancersReady")!.message, new RegExp(`${LB_EXT} TCP ${VIP}:80`));
  const t0 = Date.now();
  assert.equal(await ask(OUT, VIP, 80), undefined);
  assert.ok(Date.now() - t0 < 1900, "refused at once, not timed out");
  assert.deepEqual(notReady(await apply([extLb(), intLb()])).map((x) => x.type).filter((x) => x !== "LoadBalancersReady"), []);
});

test("(g) removing a member keeps the others' established connections and cuts the removed one's", async () => {
  await until(async () => ((await c.getRouter({ routerId: ROUTER })).conditions.find((k) => k.type === "LoadBalancersReady")?.status === true ? true : undefined), "all listeners healthy", 15_000);
  // Three connections in a row land on the three members (round robin).
  const h = await hold(OUT, VIP, 80, 3);
  try {
    assert.deepEqual([...h.greetings].sort(), ["m1", "m2", "m3"]);
    const gone = h.greetings.indexOf("m2");
    const s = await apply([extLb(["m1", "m3"]), intLb()]);
    assert.deepEqual(s.loadBalancers[0]!.listeners[0]!.members.map((m) => m.address), [IP("m1"), IP("m3")]);
    for (const [i, g] of h.greetings.entries()) {
      const reply = await h.send(i, "ping");
      if (i === gone) assert.doesNotMatch(reply, /echo/, `the removed member's connection is cut: ${reply}`);
      else assert.equal(reply, `${g} echo ping`);
    }
    const names = await askMany(OUT, VIP, 80, 10);
    assert.deepEqual([...tally(names)].sort(), [["m1", 5], ["m3", 5]]);
  } finally {
    h.close();
  }
});

test("(i) bad input: INVALID_ARGUMENT with the field paths, nothing changed", async () => {
  const was = await c.getRouter({ routerId: ROUTER });
  const lb = (over: Record<string, unknown>): LbInit => ({ ...intLb(), ...over }) as LbInit;
  const cases: [MessageInitShape<typeof RouterSpecSchema>, string[]][] = [
    [routerSpec([lb({ vip: "198.51.100.7" })]), ["spec.load_balancers[0].vip"]],
    [routerSpec([lb({ listeners: [{ protocol: TCP, port: 80, members: [member("m1", { address: "10.51.0.5" })] }] })]), ["spec.load_balancers[0].listeners[0].members[0].address"]],
    [routerSpec([lb({ listeners: [{ protocol: TCP, port: 80 }, { protocol: TCP, port: 80 }, { protocol: RouterLoadBalancerProtocol.UDP, port: 80 }] })]), ["spec.load_balancers[0].listeners[1].port"]],
    [routerSpec([lb({ vip: FIP })], { floatingIps: [{ floatingIp: FIP, fixedIp: IP("c1") }] }), ["spec.load_balancers[0].vip"]],
    [routerSpec([lb({ vip: ROUTER_EXT })]), ["spec.load_balancers[0].vip"]],
    [routerSpec([lb({ vip: ROUTER_IN })]), ["spec.load_balancers[0].vip"]],
    [routerSpec([extLb(), lb({ vip: VIP })]), ["spec.load_balancers[1].vip"]],
    [
      routerSpec([lb({ listeners: [{ protocol: 0, port: 0, algorithm: 9 as RouterLoadBalancerAlgorithm, members: [member("m1", { memberId: "x;y", port: 70000, weight: 300 })], healthCheck: { intervalSeconds: 2, timeoutSeconds: 5, rise: 11 } }] })]),
      [
        "spec.load_balancers[0].listeners[0].algorithm",
        "spec.load_balancers[0].listeners[0].health_check.rise",
        "spec.load_balancers[0].listeners[0].health_check.timeout_seconds",
        "spec.load_balancers[0].listeners[0].members[0].member_id",
        "spec.load_balancers[0].listeners[0].members[0].port",
        "spec.load_balancers[0].listeners[0].members[0].weight",
        "spec.load_balancers[0].listeners[0].port",
        "spec.load_balancers[0].listeners[0].protocol",
      ],
    ],
  ];
  for (const [spec, want] of cases) {
    const e = await rejection(c.applyRouter({ spec, generation: 999n }));
    assert.equal(e.code, Code.InvalidArgument, e.message);
    assert.deepEqual(fields(e).sort(), want, e.message);
  }
  const s = await c.getRouter({ routerId: ROUTER });
  assert.equal(s.observedGeneration, was.observedGeneration, "nothing changed");
  assert.deepEqual(s.spec?.loadBalancers.map((l) => l.loadBalancerId), [LB_EXT, LB_INT]);
  assert.deepEqual(s.spec?.floatingIps, []);
});

test("(j) an agent restart converges the load balancers from the state file", async () => {
  await stopAgent();
  sh(["ip", "netns", "exec", NS, "nft", "delete", "table", "ip", "quantix_router"]);
  sh(["ip", "-n", NS, "addr", "del", `${VIP}/32`, "dev", "qre"]);
  sh(["ip", "-n", NS, "addr", "del", `${VIP_IN}/32`, "dev", routerInterfaceName(NET)]);
  assert.equal(await ask(OUT, VIP, 80), undefined);
  await startAgent();
  const s = await c.getRouter({ routerId: ROUTER });
  assert.deepEqual(notReady(s).map((x) => x.type).filter((x) => x !== "LoadBalancersReady"), [], JSON.stringify(s.conditions));
  assert.deepEqual(s.loadBalancers.map((l) => [l.loadBalancerId, l.applied]), [[LB_EXT, true], [LB_INT, true]]);
  await until(async () => ((await c.getRouter({ routerId: ROUTER })).conditions.find((k) => k.type === "LoadBalancersReady")?.status === true ? true : undefined), "healthy after the restart", 15_000);
  assert.deepEqual([...tally(await askMany(OUT, VIP, 80, 10))].sort(), [["m1", 5], ["m3", 5]]);
  assert.deepEqual([...tally(await askMany(NSOF.c1, VIP_IN, 80, 9))].sort(), [["m1", 3], ["m2", 3], ["m3", 3]]);
});

test("removing the load balancers takes their VIPs, rules and counters away; DeleteRouter leaves nothing", async () => {
  const s = await apply([]);
  assert.deepEqual(notReady(s), [], JSON.stringify(s.conditions));
  assert.deepEqual(s.loadBalancers, []);
  assert.equal(s.conditions.find((x) => x.type === "LoadBalancersReady"), undefined);
  assert.doesNotMatch(sh(["ip", "-n", NS, "-4", "addr", "show"]), new RegExp(`${VIP}/32|${VIP_IN}/32`));
  assert.doesNotMatch(sh(["ip", "netns", "exec", NS, "nft", "list", "table", "ip", "quantix_router"]), /counter lb|dnat ip to/);
  assert.equal(await ask(OUT, VIP, 80), undefined);
  await c.deleteRouter({ routerId: ROUTER });
  assert.ok(!(JSON.parse(sh(["ip", "-json", "netns", "list"]) || "[]") as { name: string }[]).some((n) => n.name === NS));
});
