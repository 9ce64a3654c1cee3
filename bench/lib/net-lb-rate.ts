import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { NetworkService, RouterLoadBalancerAlgorithm, RouterLoadBalancerProtocol } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { NetworkHost, probeNetworkCapabilities, RouterHost, routerNetns, SimulatedBackend, startAgentServer, tapName, VmManager, type AgentServer } from "@quantix/agent";
import { makeNamespace, removeNamespaces, run, sh } from "./net-hosts.js";
import { ROOT } from "./proc.js";
import { median } from "./stats.js";

/** Load-balanced TCP connections per second through a router's VIP, and straight to one member through the same router. */
export interface LbRateResult {
  readonly rounds: number;
  readonly seconds: number;
  readonly loops: number;
  readonly lb: { readonly perSec: number[]; readonly medianPerSec: number; readonly failed: number[]; readonly perMember: Record<string, number>[] };
  readonly direct: { readonly perSec: number[]; readonly medianPerSec: number; readonly failed: number[] };
  /** Connections each member's server accepted over the whole run (warm-ups included), and what the clients completed. */
  readonly served: Record<string, number>;
  readonly completed: number;
}

// Names: `qeb<pid hex>` (the edge bench's prefix), at most 15 characters with their suffixes.
const hex = (process.pid & 0xfff).toString(16);
const P = `qeb${hex}`;
const pad = hex.padStart(4, "0");
const HOST = `${P}h`;
const OUT = `${P}o`;
const PHYS = `${P}x`;
const MEMBERS = ["m1", "m2", "m3"] as const;
type Member = (typeof MEMBERS)[number];
const NET = `0e00${pad}-0000-4000-8000-0000000000e1`;
const ROUTER = `7b00${pad}-0000-4000-8000-0000000000e1`;
const LB = `1b00${pad}-0000-4000-8000-0000000000e1`;
const idx: Record<Member, number> = { m1: 1, m2: 2, m3: 3 };
const PORT_ID = (m: Member) => `c9${pad}0${idx[m]}-0000-4000-8000-0000000000e${idx[m]}`;
const MEMBER_ID = (m: Member) => `2b00${pad}-0000-4000-8000-0000000000e${idx[m]}`;
const MAC = (m: Member) => `52:54:00:00:0e:1${idx[m]}`;
const IP = (m: Member) => `10.59.0.1${idx[m]}`;
const ROUTER_IN = "10.59.0.1";
const ROUTER_EXT = "203.0.113.5";
const OUTSIDE = "203.0.113.1";
const VIP = "203.0.113.100";
const SERVICE_PORT = 8080;
const VIP_PORT = 80;

/** A member's server: `tcp-byte-server.mjs` in its namespace, pinned to CPU 0 (servers on CPU 0, clients on CPU 1). */
async function startMember(ns: string): Promise<{ child: ChildProcess; served: () => Promise<number> }> {
  const child = spawn("ip", ["netns", "exec", ns, "taskset", "-c", "0", process.execPath, join(ROOT, "bench", "lib", "tcp-byte-server.mjs"), String(SERVICE_PORT)], { stdio: ["pipe", "pipe", "pipe"] });
  let err = "";
  child.stderr!.on("data", (b: Buffer) => (err += b.toString()));
  const lines = createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  const first = await lines.next();
  if (first.done || first.value !== "ready") throw new Error(`the TCP server in ${ns} did not start: ${err.trim()}`);
  return {
    child,
    served: async () => {
      child.stdin!.end();
      const r = await lines.next();
      const m = r.done ? null : /^served (\d+)$/.exec(r.value);
      if (!m) throw new Error(`the TCP server in ${ns} gave no count: ${err.trim()}`);
      return Number(m[1]);
    },
  };
}

/** The client in the outside namespace: `loops` loops of connect, read a byte, close, for `seconds`. */
async function client(ip: string, port: number, loops: number, seconds: number): Promise<{ ok: number; failed: number; ms: number; perSec: number; errors: Record<string, number> }> {
  const out = await run(["ip", "netns", "exec", OUT, process.execPath, join(ROOT, "bench", "lib", "tcp-conn-client.mjs"), ip, String(port), String(loops), String(seconds)]);
  return JSON.parse(out) as { ok: number; failed: number; ms: number; perSec: number; errors: Record<string, number> };
}

/**
 * Issue 15, row "load-balanced connections": the agent's router data plane in a namespace
 * host (NetworkHost + RouterHost behind the agent's gRPC server, no control plane): one
 * network with three member namespaces on veths (each serving TCP 8080: accept, write one
 * byte, close), a router with an external leg onto an "outside" namespace and a load
 * balancer on an external VIP:80, round robin over the three members. The client in the
 * outside namespace runs `loops` concurrent connect → read → close loops for `seconds`.
 * Baseline: the same client to one member's address and port, routed through the same
 * router without the LB (the outside has a route to the internal subnet via the router's
 * external address). In turns after one warm-up each; medians of connections per second.
 * A round counts only if every member's LB counter moved (LB) and nearly every
 * connection completed; at the end the servers' own counts must cover what the clients completed.
 */
export async function lbRate(rounds: number, seconds: number, loops: number, progress: (msg: string) => void): Promise<LbRateResult> {
  const dir = mkdtempSync(join(tmpdir(), "qx-bench-lb-"));
  const nsOf = (m: Member) => `${P}${m}`;
  const servers: Partial<Record<Member, Awaited<ReturnType<typeof startMember>>>> = {};
  let host: NetworkHost | undefined;
  let routers: RouterHost | undefined;
  let server: AgentServer | undefined;
  let backend: SimulatedBackend | undefined;
  let c: Client<typeof NetworkService> | undefined;
  try {
    makeNamespace(HOST, "192.0.2.1");
    makeNamespace(OUT);
    for (const m of MEMBERS) makeNamespace(nsOf(m));
    sh(["ip", "-n", HOST, "link", "add", PHYS, "type", "veth", "peer", "name", "eth0", "netns", OUT]);
    sh(["ip", "-n", OUT, "addr", "add", `${OUTSIDE}/24`, "dev", "eth0"]);
    sh(["ip", "-n", OUT, "link", "set", "eth0", "up"]);
    // Many short connections from one address: the whole port range.
    sh(["ip", "netns", "exec", OUT, "sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000"]);
    const physical = new Map([["ext", PHYS]]);
    host = new NetworkHost({ stateDir: dir, netns: HOST, adoptVethPorts: true, resyncMs: 0 });
    await host.start();
    routers = new RouterHost({ stateDir: dir, netns: HOST, physicalNetworks: physical, resyncMs: 0 });
    await routers.start();
    backend = new SimulatedBackend({ bootMs: 20 });
    const h = host;
    const manager = new VmManager({ backend, portTaps: (id) => h.portTap(id) });
    await manager.start();
    server = await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: { log: () => undefined }, network: { host, routers, features: () => probeNetworkCapabilities(HOST, undefined, physical) } });
    const agent = createClient(NetworkService, createGrpcTransport({ baseUrl: server.url }));
    c = agent;
    for (const m of MEMBERS) {
      const ns = nsOf(m);
      sh(["ip", "-n", HOST, "link", "add", tapName(PORT_ID(m)), "type", "veth", "peer", "name", "eth0", "netns", ns]);
      sh(["ip", "-n", ns, "link", "set", "eth0", "address", MAC(m), "mtu", "1450", "up"]);
      sh(["ip", "-n", ns, "addr", "add", `${IP(m)}/24`, "dev", "eth0"]);
      sh(["ip", "-n", ns, "route", "add", "default", "via", ROUTER_IN]);
      servers[m] = await startMember(ns);
    }
    const net = await agent.applyNetwork({
      spec: { networkId: NET, vni: 4659, mtu: 1450, localUnderlayAddress: "192.0.2.1", subnets: [{ cidr: "10.59.0.0/24", gatewayIp: ROUTER_IN }], ports: MEMBERS.map((m) => ({ portId: PORT_ID(m), macAddress: MAC(m), fixedIps: [IP(m)] })) },
      generation: 1n,
    });
    const badNet = net.conditions.filter((x) => !x.status);
    if (badNet.length > 0) throw new Error(`ApplyNetwork: ${JSON.stringify(badNet)}`);
    const r = await agent.applyRouter({
      spec: {
        routerId: ROUTER,
        external: { physicalNetwork: "ext", address: `${ROUTER_EXT}/24`, gatewayIp: OUTSIDE, macAddress: "02:ab:00:00:0e:05" },
        interfaces: [{ networkId: NET, macAddress: "02:ab:00:00:0e:01", addresses: [`${ROUTER_IN}/24`] }],
        snatEnabled: true,
        loadBalancers: [{ loadBalancerId: LB, vip: VIP, listeners: [{ protocol: RouterLoadBalancerProtocol.TCP, port: VIP_PORT, algorithm: RouterLoadBalancerAlgorithm.ROUND_ROBIN, members: MEMBERS.map((m) => ({ memberId: MEMBER_ID(m), address: IP(m), port: SERVICE_PORT })) }] }],
      },
      generation: 1n,
    });
    const badRouter = r.conditions.filter((x) => !x.status);
    if (badRouter.length > 0) throw new Error(`ApplyRouter: ${JSON.stringify(badRouter)}`);
    // The baseline's path: the outside reaches the internal subnet via the router's external address (no NAT; replies return through the router).
    sh(["ip", "-n", OUT, "route", "add", "10.59.0.0/24", "via", ROUTER_EXT]);
    const via = sh(["ip", "-n", OUT, "route", "get", IP("m1")]);
    if (!via.includes(`via ${ROUTER_EXT}`)) throw new Error(`the outside does not route ${IP("m1")} through the router: ${via.trim()}`);

    const counters = async (): Promise<Record<string, number>> => {
      const s = await agent.getRouter({ routerId: ROUTER });
      const l = s.loadBalancers.find((x) => x.loadBalancerId === LB)?.listeners.find((x) => x.port === VIP_PORT);
      if (!l) throw new Error("GetRouter shows no listener on the VIP");
      return Object.fromEntries(MEMBERS.map((m) => [m, Number(l.members.find((x) => x.memberId === MEMBER_ID(m))?.connections ?? -1n)]));
    };
    const checked = (what: string, x: { ok: number; failed: number; errors: Record<string, number> }) => {
      if (x.ok === 0) throw new Error(`${what}: no connection completed (${JSON.stringify(x.errors)})`);
      if (x.failed > x.ok / 100) throw new Error(`${what}: ${x.failed} of ${x.ok + x.failed} connections failed (${JSON.stringify(x.errors)}); no number reported`);
    };

    const lbRates: number[] = [];
    const lbFailed: number[] = [];
    const perMember: Record<string, number>[] = [];
    const directRates: number[] = [];
    const directFailed: number[] = [];
    let completed = 0;
    // Round 0 is a warm-up (1 s each), not counted.
    for (let i = 0; i <= rounds; i++) {
      const secs = i === 0 ? 1 : seconds;
      const before = await counters();
      const viaLb = await client(VIP, VIP_PORT, loops, secs);
      const after = await counters();
      const moved = Object.fromEntries(MEMBERS.map((m) => [m, after[m]! - before[m]!]));
      checked(`LB round ${i}`, viaLb);
      const idle = MEMBERS.filter((m) => !(moved[m]! > 0));
      if (idle.length > 0) throw new Error(`LB round ${i}: member(s) ${idle.join(", ")} got no connection through the VIP (counters moved ${JSON.stringify(moved)}); no number reported`);
      const direct = await client(IP("m1"), SERVICE_PORT, loops, secs);
      checked(`direct round ${i}`, direct);
      const still = await counters();
      if (MEMBERS.some((m) => still[m] !== after[m])) throw new Error(`direct round ${i}: the LB's counters moved (${JSON.stringify(after)} → ${JSON.stringify(still)}): the direct connections went through the VIP`);
      completed += viaLb.ok + direct.ok;
      progress(`network: LB ${i === 0 ? "warm-up" : `round ${i}/${rounds}`}: through the VIP ${viaLb.perSec.toFixed(0)} conn/s (members ${MEMBERS.map((m) => moved[m]).join("/")}, ${viaLb.failed} failed), straight to m1 ${direct.perSec.toFixed(0)} conn/s (${direct.failed} failed)`);
      if (i === 0) continue;
      lbRates.push(viaLb.perSec);
      lbFailed.push(viaLb.failed);
      perMember.push(moved);
      directRates.push(direct.perSec);
      directFailed.push(direct.failed);
    }
    const served: Record<string, number> = {};
    for (const m of MEMBERS) served[m] = await servers[m]!.served();
    const total = Object.values(served).reduce((a, b) => a + b, 0);
    if (total < completed) throw new Error(`the members' servers accepted ${total} connections, fewer than the ${completed} the clients completed`);
    return { rounds, seconds, loops, lb: { perSec: lbRates, medianPerSec: median(lbRates), failed: lbFailed, perMember }, direct: { perSec: directRates, medianPerSec: median(directRates), failed: directFailed }, served, completed };
  } finally {
    for (const s of Object.values(servers)) s.child.kill("SIGKILL");
    if (c) await c.deleteRouter({ routerId: ROUTER }).catch(() => undefined);
    await server?.close().catch(() => undefined);
    await backend?.close().catch(() => undefined);
    await routers?.close().catch(() => undefined);
    await host?.close(true).catch(() => undefined);
    try {
      sh(["ip", "netns", "del", routerNetns(ROUTER, HOST)]);
    } catch {
      // deleted with the router
    }
    removeNamespaces();
    rmSync(dir, { recursive: true, force: true });
  }
}
