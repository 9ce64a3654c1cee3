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
import { NetworkService, type NetworkSpecSchema, type RouterSpecSchema, type RouterStatus } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { silentLogger } from "@quantix/rpc";
import { ensureDebianPackages, rejection, until } from "@quantix/testing";
import { SimulatedBackend } from "../backends/simulated/simulated-backend.js";
import { startAgentServer, type AgentServer } from "../rpc/agent-server.js";
import { VmManager } from "../vm-manager.js";
import { probeNetworkCapabilities } from "./capabilities.js";
import { NetworkHost } from "./network-host.js";
import { bridgeName, tapName } from "./names.js";
import { RouterHost } from "./router-host.js";
import { externalBridgeName, externalLegName, internalLegName, routerNetns } from "./router-model.js";

// A router with real traffic. A data plane namespace (the "host") with one network (a
// bridge, guests g1 and g2 as namespaces on veths named as their ports' TAPs) and a
// physical network "ext": a veth whose host end is mapped as "ext" and whose other end
// is in an "outside" namespace holding the external gateway 203.0.113.1. The router gets
// 203.0.113.5/24 outside and 10.40.0.1/24 on the network. Services answer every
// connection with who they are and the peer address they see, so each side learns
// where it arrived and as whom.

const run = promisify(execFile);
const hex = (process.pid & 0xffff).toString(16);
const P = `qrt${hex}`;
const HOST = `${P}h`;
const OUT = `${P}o`;
const G = { g1: `${P}g1`, g2: `${P}g2` };
const PHYS = `${P}x`;
const root = mkdtempSync(join(tmpdir(), "quantix-router-"));
const pad = hex.padStart(4, "0");
const NET = `0d00${pad}-0000-4000-8000-000000000001`;
const OTHER_NET = `0d01${pad}-0000-4000-8000-000000000002`;
const ROUTER = `7a00${pad}-0000-4000-8000-000000000001`;
const PORT = { g1: `c7${pad}00-0000-4000-8000-000000000001`, g2: `c8${pad}00-0000-4000-8000-000000000002` };
const MAC = { g1: "52:54:00:00:02:11", g2: "52:54:00:00:02:12" };
const IP = { g1: "10.40.0.11", g2: "10.40.0.12" };
const ROUTER_IN = "10.40.0.1";
const ROUTER_EXT = "203.0.113.5";
const ROUTER_EXT_MAC = "02:aa:00:00:00:05";
const EXT_GW = "203.0.113.1";
const FIP = "203.0.113.10";
const FIP2 = "203.0.113.11";
const NS = routerNetns(ROUTER, HOST);

let host: NetworkHost;
let routers: RouterHost;
let server: AgentServer;
let backend: SimulatedBackend;
let c: Client<typeof NetworkService>;
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
/** A TCP service in `ns` answering "<name> <peer address>". */
function serve(ns: string, name: string, ip: string): void {
  const code = `import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("${ip}", 8080)); s.listen(16)\nwhile True:\n c,a=s.accept(); c.sendall(("${name} "+a[0]).encode()); c.close()\n`;
  children.push(spawn("ip", ["netns", "exec", ns, "python3", "-c", code], { stdio: "ignore" }));
}
const links = (ns: string) => (JSON.parse(sh(["ip", "-n", ns, "-json", "link", "show"])) as { ifname: string; master?: string }[]);
const netnsList = () => (JSON.parse(sh(["ip", "-json", "netns", "list"]) || "[]") as { name: string }[]).map((n) => n.name);
const notReady = (s: RouterStatus) => s.conditions.filter((x) => !x.status);

function routerSpec(over: Partial<MessageInitShape<typeof RouterSpecSchema>> = {}): MessageInitShape<typeof RouterSpecSchema> {
  return {
    routerId: ROUTER,
    external: { physicalNetwork: "ext", address: `${ROUTER_EXT}/24`, gatewayIp: EXT_GW, macAddress: ROUTER_EXT_MAC },
    interfaces: [{ networkId: NET, macAddress: "02:aa:00:00:01:01", addresses: [`${ROUTER_IN}/24`] }],
    snatEnabled: true,
    floatingIps: [],
    ...over,
  } as MessageInitShape<typeof RouterSpecSchema>;
}

/** The network: no gateway of its own (the router answers on the subnet's gateway_ip), ports without security groups. */
function networkSpec(): MessageInitShape<typeof NetworkSpecSchema> {
  return {
    networkId: NET,
    vni: 4545,
    mtu: 1450,
    localUnderlayAddress: "192.0.2.1",
    subnets: [{ cidr: "10.40.0.0/24", gatewayIp: ROUTER_IN }],
    ports: (["g1", "g2"] as const).map((g) => ({ portId: PORT[g], macAddress: MAC[g], fixedIps: [IP[g]] })),
  };
}

async function startAgent(): Promise<void> {
  host = new NetworkHost({ stateDir: root, netns: HOST, adoptVethPorts: true });
  await host.start();
  routers = new RouterHost({ stateDir: root, netns: HOST, physicalNetworks: new Map([["ext", PHYS]]) });
  await routers.start();
  backend = new SimulatedBackend({ bootMs: 20 });
  const manager = new VmManager({ backend, portTaps: (id) => host.portTap(id) });
  await manager.start();
  server = await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: silentLogger, network: { host, routers, features: () => probeNetworkCapabilities(HOST, undefined, new Map([["ext", PHYS], ["physnet2", `${P}none`]])) } });
  c = createClient(NetworkService, createGrpcTransport({ baseUrl: server.url }));
}

async function stopAgent(): Promise<void> {
  await server?.close().catch(() => undefined);
  await backend?.close().catch(() => undefined);
  await routers?.close().catch(() => undefined);
  await host?.close(true).catch(() => undefined);
}

before(async () => {
  await ensureDebianPackages(["nftables", "conntrack", "busybox-static", "iputils-ping"]);
  for (const ns of [HOST, OUT, G.g1, G.g2]) {
    sh(["ip", "netns", "add", ns]);
    sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
  }
  // The underlay address the network's VXLAN needs (a veth inside the host).
  sh(["ip", "-n", HOST, "link", "add", `${P}u`, "type", "veth", "peer", "name", `${P}v`]);
  sh(["ip", "-n", HOST, "addr", "add", "192.0.2.1/24", "dev", `${P}u`]);
  sh(["ip", "-n", HOST, "link", "set", `${P}u`, "up"]);
  sh(["ip", "-n", HOST, "link", "set", `${P}v`, "up"]);
  // The physical network's wire: the host's interface "ext" and the outside at its other end.
  sh(["ip", "-n", HOST, "link", "add", PHYS, "type", "veth", "peer", "name", "eth0", "netns", OUT]);
  sh(["ip", "-n", OUT, "addr", "add", `${EXT_GW}/24`, "dev", "eth0"]);
  sh(["ip", "-n", OUT, "link", "set", "eth0", "up"]);
  // The outside learns addresses from gratuitous ARP (to see the router announce a floating IP).
  sh(["ip", "netns", "exec", OUT, "sysctl", "-qw", "net.ipv4.conf.eth0.arp_accept=1"]);
  serve(OUT, "outside", EXT_GW);
  await startAgent();
  for (const g of ["g1", "g2"] as const) {
    sh(["ip", "-n", HOST, "link", "add", tapName(PORT[g]), "type", "veth", "peer", "name", "eth0", "netns", G[g]]);
    sh(["ip", "-n", G[g], "link", "set", "eth0", "address", MAC[g], "mtu", "1450", "up"]);
    sh(["ip", "-n", G[g], "addr", "add", `${IP[g]}/24`, "dev", "eth0"]);
    sh(["ip", "-n", G[g], "route", "add", "default", "via", ROUTER_IN]);
    serve(G[g], g, "0.0.0.0");
  }
  const s = await c.applyNetwork({ spec: networkSpec(), generation: 1n });
  assert.deepEqual(s.conditions.filter((x) => !x.status), [], JSON.stringify(s.conditions));
});

after(async () => {
  if (process.env["QRT_KEEP"]) return;
  for (const ch of children) ch.kill("SIGKILL");
  await routers?.deleteRouter(ROUTER).catch(() => undefined);
  await stopAgent();
  for (const ns of [G.g1, G.g2, OUT, HOST, NS]) quiet(["ip", "netns", "del", ns]);
  rmSync(root, { recursive: true, force: true });
});

test("capabilities: network-uplink and the physical networks present", async () => {
  const caps = await c.getNetworkCapabilities({});
  const uplink = caps.features.find((f) => f.name === "network-uplink");
  assert.equal(uplink?.available, true, uplink?.reason);
  assert.match(uplink?.reason ?? "", new RegExp(`ext \\(${PHYS}\\) are reachable; missing: physnet2`));
  assert.deepEqual(caps.physicalNetworks, ["ext"]);
});

test("(a) a guest without a floating IP reaches the outside behind the router's external address (SNAT)", async () => {
  const s = await c.applyRouter({ spec: routerSpec(), generation: 1n });
  assert.deepEqual(notReady(s), [], JSON.stringify(s.conditions));
  assert.equal(s.namespace, NS);
  assert.equal(s.observedGeneration, 1n);
  // Before any traffic, the outside learns the router's address: a new router announces it (right after its answer).
  const learnt = (ip: string) => (JSON.parse(sh(["ip", "-n", OUT, "-json", "neigh", "show", ip])) as { lladdr?: string }[])[0]?.lladdr;
  assert.equal(await until(async () => learnt(ROUTER_EXT), "the outside learns the router's address from its announcement", 10_000, 50), ROUTER_EXT_MAC);
  assert.ok(netnsList().includes(NS));
  // The host's interface went onto the physical network's bridge, with the router's leg.
  const hl = links(HOST);
  const ebr = externalBridgeName("ext");
  assert.equal(hl.find((l) => l.ifname === PHYS)?.master, ebr);
  assert.equal(hl.find((l) => l.ifname === externalLegName(ROUTER))?.master, ebr);
  assert.equal(hl.find((l) => l.ifname === internalLegName(ROUTER, NET))?.master, bridgeName(NET));
  assert.equal((await inNs(NS, ["sysctl", "-n", "net.ipv4.ip_forward"])).stdout.trim(), "1");
  assert.equal(await until(() => ask(G.g1, EXT_GW), "g1 reaches the outside", 15_000), `outside ${ROUTER_EXT}`);
  assert.equal(await ask(G.g2, EXT_GW), `outside ${ROUTER_EXT}`);
  assert.equal(await ask(OUT, IP.g1), undefined, "without a floating IP the guest is not reachable from outside");
  // Without SNAT the guests' own addresses leave, and the outside has no route back to them.
  const off = await c.applyRouter({ spec: routerSpec({ snatEnabled: false }), generation: 2n });
  assert.deepEqual(notReady(off), []);
  assert.equal(await ask(G.g1, EXT_GW), undefined);
  await c.applyRouter({ spec: routerSpec(), generation: 3n });
  assert.equal(await ask(G.g1, EXT_GW), `outside ${ROUTER_EXT}`);
  assert.deepEqual((await c.listRouters({})).routers.map((r) => r.routerId), [ROUTER]);
});

test("bad input: INVALID_ARGUMENT or FAILED_PRECONDITION with the field paths, nothing changed", async () => {
  const cases: [MessageInitShape<typeof RouterSpecSchema>, Code, string[]][] = [
    [routerSpec({ floatingIps: [{ floatingIp: FIP, fixedIp: "10.41.0.5" }] }), Code.InvalidArgument, ["spec.floating_ips[0].fixed_ip"]],
    [routerSpec({ floatingIps: [{ floatingIp: "198.51.100.10", fixedIp: IP.g1 }] }), Code.InvalidArgument, ["spec.floating_ips[0].floating_ip"]],
    [routerSpec({ floatingIps: [{ floatingIp: FIP, fixedIp: IP.g1 }, { floatingIp: FIP, fixedIp: IP.g2 }] }), Code.InvalidArgument, ["spec.floating_ips[1].floating_ip"]],
    [routerSpec({ floatingIps: [{ floatingIp: ROUTER_EXT, fixedIp: IP.g1 }] }), Code.InvalidArgument, ["spec.floating_ips[0].floating_ip"]],
    [routerSpec({ external: { physicalNetwork: "Ext;x", address: "203.0.113.0/24", gatewayIp: "203.0.114.1", macAddress: "01:00:5e:00:00:01" } }), Code.InvalidArgument, ["spec.external.address", "spec.external.mac_address", "spec.external.physical_network"]],
    [routerSpec({ interfaces: [{ networkId: NET, macAddress: "02:aa:00:00:01:01", addresses: ["203.0.113.200/25"] }] }), Code.InvalidArgument, ["spec.interfaces[0].addresses[0]"]],
    [routerSpec({ external: { physicalNetwork: "physnet9", address: `${ROUTER_EXT}/24`, gatewayIp: EXT_GW, macAddress: ROUTER_EXT_MAC } }), Code.FailedPrecondition, ["spec.external.physical_network"]],
    [routerSpec({ interfaces: [...routerSpec().interfaces!, { networkId: OTHER_NET, macAddress: "02:aa:00:00:01:02", addresses: ["10.41.0.1/24"] }] }), Code.FailedPrecondition, ["spec.interfaces[1].network_id"]],
  ];
  for (const [spec, code, want] of cases) {
    const e = await rejection(c.applyRouter({ spec, generation: 99n }));
    assert.equal(e.code, code, e.message);
    assert.deepEqual(fields(e).sort(), want, e.message);
  }
  const missing = await rejection(c.applyRouter({ spec: cases[7]![0], generation: 99n }));
  assert.match(missing.message, new RegExp(`network '${OTHER_NET}' is not applied on this host`));
  const s = await c.getRouter({ routerId: ROUTER });
  assert.equal(s.observedGeneration, 3n, "nothing changed");
  assert.deepEqual(s.spec?.floatingIps, []);
  assert.equal((await rejection(c.getRouter({ routerId: "not-a-uuid" }))).code, Code.InvalidArgument);
});

test("(b) a floating IP: the outside reaches the guest, the guest leaves as it, announced by gratuitous ARP; (c) removed: no more", async () => {
  const s = await c.applyRouter({ spec: routerSpec({ floatingIps: [{ floatingIp: FIP, fixedIp: IP.g1 }, { floatingIp: FIP2, fixedIp: IP.g2 }] }), generation: 4n });
  assert.deepEqual(notReady(s), [], JSON.stringify(s.conditions));
  assert.deepEqual(s.floatingIps.map((f) => [f.floatingIp, f.fixedIp, f.applied]), [[FIP, IP.g1, true], [FIP2, IP.g2, true]]);
  // The outside never asked for FIP2 yet learns it: the router announces it (right after its answer).
  const neigh = () => (JSON.parse(sh(["ip", "-n", OUT, "-json", "neigh", "show", FIP2])) as { lladdr?: string }[])[0]?.lladdr;
  assert.equal(await until(async () => neigh(), "gratuitous ARP of FIP2 seen outside", 10_000, 50), ROUTER_EXT_MAC);
  assert.equal(await until(() => ask(OUT, FIP), "the outside reaches g1 by its floating IP", 15_000), `g1 ${EXT_GW}`);
  assert.equal(await ask(OUT, FIP2), `g2 ${EXT_GW}`);
  assert.equal(await ask(G.g1, EXT_GW), `outside ${FIP}`, "g1 leaves as its floating IP");
  // Hairpin: g2 reaches g1 by g1's floating IP, behind the router's internal address.
  assert.equal(await ask(G.g2, FIP), `g1 ${ROUTER_IN}`);
  const tracked = async () => (await inNs(NS, ["conntrack", "-L", "-f", "ipv4", "--orig-dst", FIP]).then((r) => r.stdout, (e: { stdout?: string }) => e.stdout ?? "")).includes(FIP);
  assert.equal(await tracked(), true, "the router tracks the floating IP's connections");
  // (c) FIP removed from the spec: unreachable, its connections gone, the other one unaffected.
  const r = await c.applyRouter({ spec: routerSpec({ floatingIps: [{ floatingIp: FIP2, fixedIp: IP.g2 }] }), generation: 5n });
  assert.deepEqual(notReady(r), [], JSON.stringify(r.conditions));
  assert.deepEqual(r.floatingIps.map((f) => f.floatingIp), [FIP2]);
  assert.equal(await tracked(), false, "the removed mapping's connections were deleted");
  assert.equal(await ask(OUT, FIP), undefined);
  assert.equal(await ask(G.g1, EXT_GW), `outside ${ROUTER_EXT}`, "g1 is back behind the router's address");
  assert.equal(await ask(OUT, FIP2), `g2 ${EXT_GW}`);
});

test("(d) a floating IP moved to another guest in one ApplyRouter reaches the new guest", async () => {
  await c.applyRouter({ spec: routerSpec({ floatingIps: [{ floatingIp: FIP, fixedIp: IP.g1 }] }), generation: 6n });
  assert.equal(await until(() => ask(OUT, FIP), "g1 by FIP", 15_000), `g1 ${EXT_GW}`);
  const s = await c.applyRouter({ spec: routerSpec({ floatingIps: [{ floatingIp: FIP, fixedIp: IP.g2 }] }), generation: 7n });
  assert.deepEqual(notReady(s), [], JSON.stringify(s.conditions));
  assert.deepEqual(s.floatingIps.map((f) => [f.floatingIp, f.fixedIp, f.applied]), [[FIP, IP.g2, true]]);
  assert.equal(await ask(OUT, FIP), `g2 ${EXT_GW}`);
  assert.equal(await ask(G.g2, EXT_GW), `outside ${FIP}`);
  assert.equal(await ask(G.g1, EXT_GW), `outside ${ROUTER_EXT}`);
});

test("ApplyNetwork of a network a router serves re-attaches the router's leg to its bridge at once", async () => {
  sh(["ip", "-n", HOST, "link", "set", internalLegName(ROUTER, NET), "nomaster"]);
  assert.equal(await ask(OUT, FIP), undefined, "off the bridge, the router cannot reach g2");
  const bad = await c.getRouter({ routerId: ROUTER });
  assert.deepEqual(bad.conditions.filter((x) => !x.status).map((x) => [x.type, x.reason]), [["Ready", "NotOnBridge"], ["InterfacesReady", "NotOnBridge"]]);
  await c.applyNetwork({ spec: networkSpec(), generation: 2n });
  assert.equal(links(HOST).find((l) => l.ifname === internalLegName(ROUTER, NET))?.master, bridgeName(NET));
  assert.equal(await ask(OUT, FIP), `g2 ${EXT_GW}`);
});

test("(e) an agent restart converges the router from its state file", async () => {
  await stopAgent();
  // While the agent is down the kernel loses parts of the router.
  sh(["ip", "netns", "exec", NS, "nft", "delete", "table", "ip", "quantix_router"]);
  sh(["ip", "-n", HOST, "link", "del", internalLegName(ROUTER, NET)]);
  sh(["ip", "-n", NS, "addr", "del", `${FIP}/32`, "dev", "qre"]);
  assert.equal(await ask(OUT, FIP), undefined);
  await startAgent();
  const s = await c.getRouter({ routerId: ROUTER });
  assert.deepEqual(notReady(s), [], JSON.stringify(s.conditions));
  assert.equal(s.observedGeneration, 7n);
  assert.equal((await c.getNetwork({ networkId: NET })).observedGeneration, 2n);
  assert.deepEqual(s.floatingIps.map((f) => [f.floatingIp, f.fixedIp, f.applied]), [[FIP, IP.g2, true]]);
  assert.equal(await until(() => ask(OUT, FIP), "g2 by FIP after the restart", 15_000), `g2 ${EXT_GW}`);
  assert.equal(await ask(G.g1, EXT_GW), `outside ${ROUTER_EXT}`);
});

test("(f) DeleteRouter leaves no namespace, link or table; a second delete is NOT_FOUND", async () => {
  await c.deleteRouter({ routerId: ROUTER });
  assert.ok(!netnsList().includes(NS), "the router's namespace is gone");
  const hl = links(HOST);
  for (const name of [externalLegName(ROUTER), internalLegName(ROUTER, NET), externalBridgeName("ext")]) assert.ok(!hl.some((l) => l.ifname === name), `${name} is gone`);
  assert.equal(hl.find((l) => l.ifname === PHYS)?.master, undefined, "the host's interface was released");
  assert.ok(hl.some((l) => l.ifname === bridgeName(NET)), "the network stays");
  assert.equal(await ask(G.g1, EXT_GW), undefined);
  const e = await rejection(c.deleteRouter({ routerId: ROUTER }));
  assert.equal(e.code, Code.NotFound);
  assert.match(e.message, new RegExp(ROUTER));
  assert.deepEqual((await c.listRouters({})).routers, []);
});
