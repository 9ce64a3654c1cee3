import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { NodeStatus_Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { NetworkType } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { VirtualNetworkService } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { SimulatedBackend } from "@quantix/agent";
import { ensureDebianPackages, pingsFrom, startTestServer, TestAgent, until, type TestServer } from "@quantix/testing";

// A central router on a network node, and its failover, with real namespaces: hosts a and
// b (each a host agent whose data plane lives in its own namespace, joined by a veth
// underlay) both map physical network "ext" to an interface onto one "outside" bridge
// holding the upstream gateway 198.51.100.1. The network's router is placed on one of
// them; the outside pings its external address. That host is then lost (its agent killed
// and its uplink cut): once the node is OFFLINE the router is placed on the other host,
// with the same address and MACs, and the outside reaches it there. When the lost host
// comes back, its agent does not bring its copy back from its state file (it starts past
// its self-fencing deadline), and the control plane does not put it back.

const P = `qrf${(process.pid & 0xffff).toString(16)}`;
const H = { a: `${P}a`, b: `${P}b` } as const;
const OUT = `${P}o`;
const UNDERLAY = { a: "192.0.2.21", b: "192.0.2.22" };
const UPSTREAM = "198.51.100.1";
const sh = (args: string[]) => execFileSync(args[0]!, args.slice(1), { stdio: ["ignore", "pipe", "pipe"], timeout: 15_000 }).toString();

let s: TestServer | undefined;
let dir: string;
const agents: Partial<Record<"a" | "b", TestAgent<SimulatedBackend>>> = {};
const made = (k: "a" | "b") => new TestAgent(new SimulatedBackend({ bootMs: 20 }), join(dir, k), `${P}-${k}`, { heartbeatMs: 200, network: { netns: H[k], underlayAddress: UNDERLAY[k], physicalNetworks: new Map([["ext", `${P}x${k}`]]) } });

before(async () => {
  await ensureDebianPackages(["iproute2", "nftables", "iputils-ping", "conntrack"]);
  dir = await mkdtemp(join(tmpdir(), "quantix-router-failover-"));
  for (const ns of [H.a, H.b, OUT]) {
    sh(["ip", "netns", "add", ns]);
    sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
  }
  sh(["ip", "-n", H.a, "link", "add", `${P}u1`, "type", "veth", "peer", "name", `${P}u2`, "netns", H.b]);
  sh(["ip", "-n", H.a, "addr", "add", `${UNDERLAY.a}/24`, "dev", `${P}u1`]);
  sh(["ip", "-n", H.b, "addr", "add", `${UNDERLAY.b}/24`, "dev", `${P}u2`]);
  sh(["ip", "-n", H.a, "link", "set", `${P}u1`, "up"]);
  sh(["ip", "-n", H.b, "link", "set", `${P}u2`, "up"]);
  // The outside: a bridge with the upstream gateway, and each host's uplink on it.
  sh(["ip", "-n", OUT, "link", "add", `${P}br`, "type", "bridge"]);
  sh(["ip", "-n", OUT, "addr", "add", `${UPSTREAM}/24`, "dev", `${P}br`]);
  sh(["ip", "-n", OUT, "link", "set", `${P}br`, "up"]);
  for (const k of ["a", "b"] as const) {
    sh(["ip", "-n", H[k], "link", "add", `${P}x${k}`, "type", "veth", "peer", "name", `${P}p${k}`, "netns", OUT]);
    sh(["ip", "-n", OUT, "link", "set", `${P}p${k}`, "master", `${P}br`, "up"]);
  }
  s = await startTestServer({ demo: false, nodeLostAfterSec: 4 });
  for (const k of ["a", "b"] as const) {
    agents[k] = made(k);
    await agents[k]!.start(s.url);
  }
  for (const k of ["a", "b"] as const) {
    await until(async () => (await s!.nodes.listNodes({})).nodes.find((n) => n.hostname === `${P}-${k}` && n.status?.hypervisor?.capabilities.includes("network-uplink"))?.id, `node ${k} registered with an uplink`, 30_000, 100);
  }
});

after(async () => {
  await s?.close();
  // The routers' namespaces are the machine's: dropped before the agents stop (a router outlives its agent by design).
  for (const k of ["a", "b"] as const) await agents[k]?.routerHost?.dropAll().catch(() => undefined);
  for (const k of ["a", "b"] as const) await agents[k]?.stop().catch(() => undefined);
  for (const ns of [H.a, H.b, OUT]) {
    try {
      sh(["ip", "netns", "del", ns]);
    } catch {
      // already gone
    }
  }
  // The routers' own namespaces (qr<12 hex>) are the agents' to delete; a test that failed midway may leave one.
  if (dir) await rm(dir, { recursive: true, force: true });
});

test("a central router runs on a network node, answers on its external address, and moves to the other node when its node is lost", { timeout: 180_000 }, async () => {
  const nets = createClient(VirtualNetworkService, s!.transport);
  const ext = await nets.createVirtualNetwork({ name: "failover-ext", spec: { type: NetworkType.EXTERNAL, cidr: "198.51.100.0/24", physicalNetwork: "ext", dhcp: { rangeStart: "198.51.100.20", rangeEnd: "198.51.100.29" } } });
  const net = await nets.createVirtualNetwork({ name: "failover-in", spec: { type: NetworkType.VXLAN, cidr: "10.46.0.0/24", router: { externalNetworkId: ext.id, snatEnabled: true } } });
  const ready = await until(async () => {
    const n = await nets.getVirtualNetwork({ id: net.id });
    return n.status?.router?.ready ? n : undefined;
  }, "the router ready on a network node", 60_000, 200).catch(async (err: unknown) => {
    throw new Error(`${String(err)}; status: ${JSON.stringify((await nets.getVirtualNetwork({ id: net.id })).status?.router)}`);
  });
  const first = ready.status!.router!;
  assert.match(first.externalIp, /^198\.51\.100\.2[0-9]$/);
  assert.equal(ready.status!.conditions.find((c) => c.type === "GatewayReady")?.reason, "RouterReady");
  const host = (await s!.nodes.getNode({ id: first.nodeId })).hostname === `${P}-a` ? "a" : "b";
  const other = host === "a" ? "b" : "a";
  assert.equal((await agents[host]!.routerHost!.listRouters()).map((r) => r.spec.routerId).join(), net.id, "the router is on its node");
  assert.deepEqual(await agents[other]!.routerHost!.listRouters(), [], "and nowhere else");
  await until(async () => ((await pingsFrom(OUT, first.externalIp)) ? true : undefined), "the outside pings the router's external address", 30_000, 200);
  assert.equal((await nets.getVirtualNetwork({ id: ext.id })).status!.allocatedIpCount, 2, "the upstream gateway and the router's address");

  // The router's host is lost (a power loss): its agent dies, its router's namespace is gone, its uplink is cut.
  const lostNs = (await agents[host]!.routerHost!.listRouters())[0]!.namespace;
  await agents[host]!.kill();
  sh(["ip", "netns", "del", lostNs]);
  sh(["ip", "-n", H[host], "link", "set", `${P}x${host}`, "down"]);
  const moved = await until(async () => {
    const n = await nets.getVirtualNetwork({ id: net.id });
    return n.status?.router?.ready && n.status.router.nodeId !== first.nodeId ? n : undefined;
  }, "the router moved to the other node and ready there", 60_000, 200).catch(async (err: unknown) => {
    throw new Error(`${String(err)}; status: ${JSON.stringify((await nets.getVirtualNetwork({ id: net.id })).status?.router)}`);
  });
  const second = moved.status!.router!;
  assert.equal(second.externalIp, first.externalIp, "the same external address");
  assert.ok(timestampMs(second.placedAt!) > timestampMs(first.placedAt!), "placed_at says when it moved");
  assert.equal((await agents[other]!.routerHost!.listRouters()).map((r) => r.spec.routerId).join(), net.id);
  await until(async () => ((await pingsFrom(OUT, first.externalIp)) ? true : undefined), "the outside pings the router on its new node", 30_000, 200);

  // The lost host comes back (its network first, then its agent): the agent starts past its
  // self-fencing deadline, so it does not bring the router back from its state file, and
  // the control plane keeps the router where it is.
  sh(["ip", "-n", H[host], "link", "set", `${P}x${host}`, "up"]);
  agents[host] = made(host);
  await agents[host]!.start(s!.url);
  assert.ok(!sh(["ip", "netns", "list"]).includes(lostNs), "the returning agent did not bring its copy of the router back");
  await until(async () => ((await agents[host]!.routerHost!.listRouters()).length === 0 ? true : undefined), "the returned host holds no copy of the router", 30_000, 200);
  await until(async () => ((await s!.nodes.getNode({ id: first.nodeId })).status?.phase === NodeStatus_Phase.READY ? true : undefined), "the returned node READY", 30_000, 200);
  const after = await nets.getVirtualNetwork({ id: net.id });
  assert.equal(after.status!.router!.nodeId, second.nodeId, "the router stays on its new node");
  assert.deepEqual(await agents[host]!.routerHost!.listRouters(), []);
  await until(async () => ((await pingsFrom(OUT, first.externalIp)) ? true : undefined), "still reached, on the new node", 10_000, 200);
  assert.ok(!sh(["ip", "netns", "list"]).includes(lostNs), "the lost host's copy never came back");

  // Gone with the router: the namespace on its node, and the address.
  await nets.updateVirtualNetwork({ id: net.id, spec: {}, updateMask: { paths: ["spec.router"] } });
  await until(async () => ((await agents[other]!.routerHost!.listRouters()).length === 0 ? true : undefined), "the router deleted from its node", 30_000, 200);
  await until(async () => ((await nets.getVirtualNetwork({ id: ext.id })).status!.allocatedIpCount === 1 ? true : undefined), "the router's external address released", 30_000, 200);
  await nets.deleteVirtualNetwork({ id: net.id });
  await nets.deleteVirtualNetwork({ id: ext.id });
});
