import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { createClient, type Client } from "@connectrpc/connect";
import { VmStatus_State as State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { ConditionStatus } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { NetworkType, VirtualNetworkState } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { VirtualNetworkService } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { PortDeviceOwner, PortState } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { PortService } from "@quantix/api/gen/Quantixkvm/network/v1/port_service_pb.js";
import { SecurityGroupRuleDirection as Dir, SecurityGroupRuleProtocol as Proto } from "@quantix/api/gen/Quantixkvm/network/v1/security_group_pb.js";
import { SecurityGroupService } from "@quantix/api/gen/Quantixkvm/network/v1/security_group_service_pb.js";
import { FloatingIpService } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_service_pb.js";
import { FloatingIpState } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_pb.js";
import { QemuBackend } from "@quantix/agent";
import { buildNetProbeGuest, connectsFrom, consoleText, ensureDebianPackages, pingsFrom, netProbeKernelArgs, parseNetProbeConsole, rejection, startTestServer, TestAgent, until, type NetProbeConsole, type NetProbeGuest, type TestServer } from "@quantix/testing";

// Issue 14 end to end, through the control plane's API only: two hosts simulated as
// network namespaces joined by a veth underlay, each a host agent (its network data plane
// and its QEMUs in that namespace). Networks, ports and security groups are made with the
// API; VMs name them in spec.nics; the network controller programs the hosts. Real QEMU
// guests (the net probe guest) report DHCP leases, pings, TCP connects to port 22, DNS
// and a spoofed ping on their consoles, round after round. The guest's kernel and initrd lie
// in a directory both agents share (as VMCP_SHARED_DIRS), so a VM can live-migrate.

const P = `qxe${(process.pid & 0xffff).toString(16)}`;
const H = { a: `${P}a`, b: `${P}b` };
/** The "internet": a namespace on host a's physical network "ext", holding the upstream gateway. */
const OUT = `${P}o`;
const UPSTREAM = "198.51.100.1";
const UNDERLAY = { a: "192.0.2.11", b: "192.0.2.12" };
const IP = { a: "10.41.0.11", b: "10.41.0.12" };
const SPOOFED = "10.41.0.99";
const GATEWAY = "10.41.0.1";
const sh = (args: string[]) => execFileSync(args[0]!, args.slice(1), { stdio: ["ignore", "pipe", "pipe"], timeout: 15_000 }).toString();

let s: TestServer | undefined;
let dir: string;
let guest: NetProbeGuest;
const agents: Partial<Record<"a" | "b", TestAgent<QemuBackend>>> = {};
const nodeId = { a: "", b: "" };

before(async () => {
  await ensureDebianPackages(["qemu-system-x86", "iproute2", "nftables", "dnsmasq-base", "busybox-static", "cpio"]);
  guest = await buildNetProbeGuest();
  dir = await mkdtemp(join(tmpdir(), "quantix-net-e2e-"));
  for (const ns of [H.a, H.b]) {
    sh(["ip", "netns", "add", ns]);
    sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
  }
  sh(["ip", "-n", H.a, "link", "add", `${P}u1`, "type", "veth", "peer", "name", `${P}u2`, "netns", H.b]);
  sh(["ip", "-n", H.a, "addr", "add", `${UNDERLAY.a}/24`, "dev", `${P}u1`]);
  sh(["ip", "-n", H.b, "addr", "add", `${UNDERLAY.b}/24`, "dev", `${P}u2`]);
  sh(["ip", "-n", H.a, "link", "set", `${P}u1`, "up"]);
  // Host a maps physical network "ext" to an interface of its own (an EXTERNAL network's uplink).
  sh(["ip", "-n", H.a, "link", "add", `${P}x`, "type", "veth", "peer", "name", `${P}y`]);
  sh(["ip", "-n", H.b, "link", "set", `${P}u2`, "up"]);
  s = await startTestServer({ demo: false });
  for (const k of ["a", "b"] as const) {
    const stateDir = join(dir, k);
    const agent = new TestAgent(new QemuBackend({ stateDir: join(stateDir, "qemu"), kvm: false, netns: H[k] }), stateDir, `${P}-${k}`, { imageDirs: [guest.imageDir], sharedDirs: [guest.imageDir], network: { netns: H[k], underlayAddress: UNDERLAY[k], ...(k === "a" ? { physicalNetworks: new Map([["ext", `${P}x`]]) } : {}) } });
    await agent.start(s.url);
    agents[k] = agent;
  }
  for (const k of ["a", "b"] as const) {
    nodeId[k] = await until(async () => (await s!.nodes.listNodes({})).nodes.find((n) => n.hostname === `${P}-${k}` && n.status?.hypervisor?.capabilities.includes("network-vxlan"))?.id, `node ${k} registered with its network capabilities`, 30_000, 100);
  }
});

after(async () => {
  for (const k of ["a", "b"] as const) {
    const agent = agents[k];
    if (!agent) continue;
    for (const vm of await agent.backend.listVMs().catch(() => [])) await agent.backend.deleteVM(vm.vmId).catch(() => undefined);
    // The routers' namespaces are the machine's: dropped before the agent stops (a router outlives its agent by design).
    await agent.routerHost?.dropAll().catch(() => undefined);
    await agent.stop().catch(() => undefined);
    await agent.backend.close();
  }
  await s?.close();
  for (const ns of [H.a, H.b, OUT]) {
    try {
      sh(["ip", "netns", "del", ns]);
    } catch {
      // already gone
    }
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** The net probe guest's console of VM `vmId` on host `k`, parsed, once `done` holds for it. */
function probe(k: "a" | "b", vmId: string, what: string, done: (p: NetProbeConsole) => boolean, timeoutMs = 300_000): Promise<NetProbeConsole> {
  return until(
    async () => {
      const text = await consoleText(agents[k]!.backend, vmId).catch(() => "");
      const p = parseNetProbeConsole(text);
      return done(p) ? p : undefined;
    },
    what,
    timeoutMs,
    500,
  ).catch(async (err: unknown) => {
    const text = await consoleText(agents[k]!.backend, vmId).catch(() => "");
    const lease = text.split("\n").filter((l) => l.startsWith("QX-LEASE")).join(" | ");
    throw new Error(`${String(err)}; its lease: ${lease || "none"}; ${await dataPlanes()}; the console of ${vmId} ended with: ${text.slice(-1500)}`);
  });
}

/**
 * What both hosts' data planes hold, for a failure's message: each network's conditions
 * as the agent reports them, and the names its dnsmasq answers (addn-hosts) with the end
 * of its log. Read only when a check has already failed.
 */
async function dataPlanes(): Promise<string> {
  const out: string[] = [];
  for (const k of ["a", "b"] as const) {
    const host = agents[k]?.networkHost;
    if (!host) continue;
    for (const n of await host.listNetworks().catch(() => [])) {
      const netDir = join(dir, k, "network", n.spec.networkId);
      const names = await readFile(join(netDir, "addn-hosts"), "utf8").catch((e: Error) => e.message);
      const log = (await readFile(join(netDir, "dnsmasq.log"), "utf8").catch((e: Error) => e.message)).trim().split("\n").slice(-8).join(" | ");
      out.push(`host ${k} network ${n.spec.networkId}: dnsmasq pid ${n.dnsmasqPid}; remote ports ${n.spec.remotePorts.map((r) => `${r.hostname || "-"}=${r.ips.join(",")}`).join(" ") || "none"}; ${n.conditions.map((c) => `${c.type}=${c.status} ${c.reason}: ${c.message}`).join("; ")}; addn-hosts: ${JSON.stringify(names)}; dnsmasq log: ${log}`);
    }
  }
  return `the hosts' networks: ${out.join(" || ") || "none"}`;
}

/** The results of a round that began after `after` (a later round than the one given). */
const laterRound = (after: number | undefined, check: (p: NetProbeConsole) => boolean) => (p: NetProbeConsole) => (p.round?.round ?? 0) > (after ?? 0) + 1 && check(p);

test("VMs on virtual networks through the API: DHCP, ping and DNS across hosts, another network isolated, security groups by remote group changed live, spoofing dropped", { timeout: 600_000 }, async () => {
  const nets: Client<typeof VirtualNetworkService> = createClient(VirtualNetworkService, s!.transport);
  const ports: Client<typeof PortService> = createClient(PortService, s!.transport);
  const groups: Client<typeof SecurityGroupService> = createClient(SecurityGroupService, s!.transport);

  // Two networks with the same subnet: isolation is the overlay's, not routing's.
  const n1 = await nets.createVirtualNetwork({ name: "e2e-one", spec: { type: NetworkType.VXLAN, cidr: "10.41.0.0/24" } });
  const n2 = await nets.createVirtualNetwork({ name: "e2e-two", spec: { type: NetworkType.VXLAN, cidr: "10.41.0.0/24", dhcp: { enabled: true, rangeStart: "10.41.0.100", rangeEnd: "10.41.0.200" } } });
  // "web" (a's group) lets "clients" (b's group) ping and reach TCP 22; "clients" lets "web" ping only.
  const web = await groups.createSecurityGroup({ name: "e2e-web", rules: [{ direction: Dir.EGRESS }] });
  const clients = await groups.createSecurityGroup({ name: "e2e-clients", rules: [{ direction: Dir.EGRESS }, { direction: Dir.INGRESS, protocol: Proto.ICMP, remote: { case: "remoteGroupId", value: web.id } }] });
  const webRules = await groups.addSecurityGroupRules({
    securityGroupId: web.id,
    rules: [
      { direction: Dir.INGRESS, protocol: Proto.ICMP, remote: { case: "remoteGroupId", value: clients.id } },
      { direction: Dir.INGRESS, protocol: Proto.TCP, portRangeMin: 22, remote: { case: "remoteGroupId", value: clients.id } },
    ],
  });
  const pa = await ports.createPort({ name: "e2e-a", spec: { networkId: n1.id, fixedIps: [IP.a], securityGroupIds: [web.id] } });
  const pb = await ports.createPort({ name: "e2e-b", spec: { networkId: n1.id, fixedIps: [IP.b], securityGroupIds: [clients.id] } });
  // The spoofed address is held by a port no VM uses: the network never gives it to a DHCP
  // port (a random free address), whose address guest a would then hold itself and ask
  // for names (1 run in about 250 would).
  const held = await ports.createPort({ name: "e2e-spoofed", spec: { networkId: n1.id, fixedIps: [SPOOFED] } });

  const boot = (args: Parameters<typeof netProbeKernelArgs>[0]) => ({ directBoot: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, cmdline: netProbeKernelArgs(args) } });
  const on = (k: "a" | "b") => ({ requiredNodeIds: [nodeId[k]] });
  const base = { cpu: { cores: 1 }, memory: { sizeMib: 256n } };
  const [va, vb, vc] = await Promise.all([
    s!.vms.createVM({ name: "e2e-a", spec: { ...base, boot: boot({ ping: [IP.b, GATEWAY, UNDERLAY.b], tcp: [IP.b], spoof: SPOOFED, dns: "e2e-b" }), nics: [{ id: "eth0", portId: pa.id }], placement: on("a") }, startOnCreate: true }),
    s!.vms.createVM({ name: "e2e-b", spec: { ...base, boot: boot({ ping: [IP.a], tcp: [IP.a], dns: "e2e-a.e2e-one.quantix.internal" }), nics: [{ id: "eth0", portId: pb.id }], placement: on("b") }, startOnCreate: true }),
    // On the other network, on a's host: it reaches neither, though the addresses are in its own subnet.
    s!.vms.createVM({ name: "e2e-c", spec: { ...base, boot: boot({ ping: [IP.a, IP.b], tcp: [IP.a] }), nics: [{ id: "eth0", networkId: n2.id }], placement: on("a") }, startOnCreate: true }),
  ]);
  const cPort = await ports.getPort({ id: vc.spec!.nics[0]!.portId });
  assert.equal(cPort.spec!.ownerVmId, vc.id);

  // The VMs run once their ports are ACTIVE on their nodes; the networks are ACTIVE on their nodes.
  for (const vm of [va, vb, vc]) await until(async () => ((await s!.vms.getVM({ id: vm.id })).status?.state === State.RUNNING ? true : undefined), `${vm.name} RUNNING`, 120_000, 200);
  const n1Now = await until(async () => {
    const n = await nets.getVirtualNetwork({ id: n1.id });
    return n.status?.state === VirtualNetworkState.ACTIVE && n.status.nodes.length === 2 ? n : undefined;
  }, "network one ACTIVE on both nodes", 60_000, 200);
  assert.deepEqual(n1Now.status!.nodes.map((x) => x.nodeId).sort(), [nodeId.a, nodeId.b].sort());
  for (const [p, k] of [[pa, "a"], [pb, "b"]] as const) {
    const got = await until(async () => {
      const x = await ports.getPort({ id: p.id });
      return x.status?.state === PortState.ACTIVE ? x : undefined;
    }, `port ${k} ACTIVE`, 60_000, 200).catch(async () => ports.getPort({ id: p.id }));
    assert.equal(got.status!.state, PortState.ACTIVE, `${PortState[got.status!.state]}: ${got.status?.conditions.map((c) => `${c.type} ${c.reason}: ${c.message}`).join("; ")}`);
    assert.equal(got.status!.nodeId, nodeId[k]);
    assert.match(got.status!.tapDevice, /^qt[0-9a-f]{12}$/);
  }

  // Leases, reachability, DNS and spoofing, from the guests' own reports.
  const a1 = await probe("a", va.id, "guest a pings b and resolves its name", (p) => p.round?.ping[IP.b] === true && p.round.dns["e2e-b"] !== undefined && p.round.dns["e2e-b"] !== "fail");
  const b1 = await probe("b", vb.id, "guest b pings a and connects to its TCP 22", (p) => p.round?.ping[IP.a] === true && p.round.tcp[IP.a] === true && p.round.dns["e2e-a.e2e-one.quantix.internal"] !== undefined);
  const c1 = await probe("a", vc.id, "guest c's rounds", (p) => p.lease !== undefined && p.round !== undefined);
  assert.equal(a1.lease?.ip, IP.a);
  assert.equal(a1.lease?.hostname, "e2e-a");
  assert.equal(a1.lease?.router, GATEWAY);
  assert.equal(a1.round!.ping[GATEWAY], false, "no router yet: nothing answers on the gateway");
  assert.equal(a1.lease?.mtu, "1450");
  assert.equal(b1.lease?.ip, IP.b);
  assert.equal(a1.round!.dns["e2e-b"], IP.b, "b's name resolves on a's host");
  assert.equal(b1.round!.dns["e2e-a.e2e-one.quantix.internal"], IP.a);
  assert.equal(a1.round!.tcp[IP.b], false, "clients allow no TCP 22 from web");
  assert.equal(a1.round!.spoof[IP.b], false, "a ping from a spoofed source is dropped in the round where the real one passes");
  assert.equal(c1.lease?.ip, cPort.spec!.fixedIps[0]);
  assert.deepEqual(c1.round!.ping, { [IP.a]: false, [IP.b]: false }, "another network reaches neither");
  assert.equal(c1.round!.tcp[IP.a], false);

  // Rules changed live: web drops its TCP 22 rule, clients gain one; nothing restarts.
  const tcpRule = webRules.rules.find((r) => r.protocol === Proto.TCP)!;
  await groups.removeSecurityGroupRules({ securityGroupId: web.id, ruleIds: [tcpRule.id] });
  await groups.addSecurityGroupRules({ securityGroupId: clients.id, rules: [{ direction: Dir.INGRESS, protocol: Proto.TCP, portRangeMin: 22, remote: { case: "remoteGroupId", value: web.id } }] });
  const b2 = await probe("b", vb.id, "guest b no longer reaches a's TCP 22", laterRound(b1.round?.round, (p) => p.round?.tcp[IP.a] === false && p.round.ping[IP.a] === true));
  const a2 = await probe("a", va.id, "guest a now reaches b's TCP 22", laterRound(a1.round?.round, (p) => p.round?.tcp[IP.b] === true));
  assert.equal(b2.round!.ping[IP.a], true, "ICMP is still allowed");
  assert.equal(a2.round!.ping[IP.b], true);
  // A router with SNAT: each host becomes its guests' gateway; a reaches b's host's
  // underlay address (outside the network) through its own host, masqueraded.
  await nets.updateVirtualNetwork({ id: n1.id, spec: { router: { snatEnabled: true } }, updateMask: { paths: ["spec.router"] } });
  const gwReady = await until(async () => {
    const n = await nets.getVirtualNetwork({ id: n1.id });
    const c = n.status?.conditions.find((x) => x.type === "GatewayReady");
    return c?.status === ConditionStatus.TRUE && n.status?.state === VirtualNetworkState.ACTIVE ? c : undefined;
  }, "GatewayReady on the network", 60_000, 200);
  assert.equal(gwReady.reason, "Nat");
  const a3 = await probe("a", va.id, "guest a pings its gateway and the outside", laterRound(a2.round?.round, (p) => p.round?.ping[GATEWAY] === true && p.round.ping[UNDERLAY.b] === true));
  assert.equal(a3.round!.ping[IP.b], true, "and still b");
  // The router removed: nothing answers on the gateway again; the network stays ACTIVE
  // (the hosts recreate the bridge without the gateway MAC and re-attach the VMs' TAPs).
  await nets.updateVirtualNetwork({ id: n1.id, spec: {}, updateMask: { paths: ["spec.router"] } });
  const a4 = await probe("a", va.id, "guest a no longer reaches its gateway, still b", laterRound(a3.round?.round, (p) => p.round?.ping[GATEWAY] === false && p.round.ping[UNDERLAY.b] === false && p.round.ping[IP.b] === true));
  assert.equal(a4.round!.tcp[IP.b], true);
  await until(async () => {
    const n = await nets.getVirtualNetwork({ id: n1.id });
    return !n.status?.conditions.some((x) => x.type === "GatewayReady") && n.status?.state === VirtualNetworkState.ACTIVE ? true : undefined;
  }, "no GatewayReady condition without a router", 60_000, 200);
  // The guests kept running through it all.
  for (const vm of [va, vb]) assert.equal((await s!.vms.getVM({ id: vm.id })).status?.state, State.RUNNING);

  // Deleting the VMs deletes c's own port and unbinds a's and b's; the hosts drop the networks.
  for (const vm of [va, vb, vc]) await s!.vms.deleteVM({ id: vm.id, force: true });
  await until(async () => ((await ports.getPort({ id: pa.id })).status?.deviceId === "" && (await ports.listPorts({ networkId: n2.id })).ports.length === 0 ? true : undefined), "ports released", 60_000, 200);
  await until(async () => ((await nets.getVirtualNetwork({ id: n1.id })).status?.state === VirtualNetworkState.PENDING ? true : undefined), "network one on no node", 60_000, 200);
  for (const k of ["a", "b"] as const) {
    const left = await until(async () => {
      const links = sh(["ip", "-n", H[k], "-o", "link", "show"]);
      return /: q[bvt][0-9a-f]{12}[@:]/.test(links) ? undefined : links;
    }, `host ${k} holds no bridge, VXLAN or TAP of the networks`, 60_000, 200);
    assert.doesNotMatch(left, /qb[0-9a-f]{12}/);
  }
  await ports.deletePort({ id: pa.id });
  await ports.deletePort({ id: pb.id });
  await ports.deletePort({ id: held.id });
  await nets.deleteVirtualNetwork({ id: n1.id });
  await nets.deleteVirtualNetwork({ id: n2.id });
});

test("a VM live-migrated to another host keeps its address and reaches its peer across the hosts afterwards", { timeout: 600_000 }, async () => {
  const nets = createClient(VirtualNetworkService, s!.transport);
  const ports = createClient(PortService, s!.transport);
  const net = await nets.createVirtualNetwork({ name: "e2e-move", spec: { type: NetworkType.VXLAN, cidr: "10.43.0.0/24" } });
  const pm = await ports.createPort({ name: "mover", spec: { networkId: net.id, fixedIps: ["10.43.0.21"] } });
  const pp = await ports.createPort({ name: "peer", spec: { networkId: net.id, fixedIps: ["10.43.0.22"] } });
  const boot = (args: Parameters<typeof netProbeKernelArgs>[0]) => ({ directBoot: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, cmdline: netProbeKernelArgs(args) } });
  const base = { cpu: { cores: 1 }, memory: { sizeMib: 256n } };
  // Both start on a (the project's default group: members reach each other).
  const [mover, peer] = await Promise.all([
    s!.vms.createVM({ name: "mover", spec: { ...base, boot: boot({ ping: ["10.43.0.22"] }), nics: [{ id: "eth0", portId: pm.id }], placement: { requiredNodeIds: [nodeId.a, nodeId.b] } }, nodeId: nodeId.a, startOnCreate: true }),
    s!.vms.createVM({ name: "peer", spec: { ...base, boot: boot({ ping: ["10.43.0.21"] }), nics: [{ id: "eth0", portId: pp.id }], placement: { requiredNodeIds: [nodeId.a] } }, startOnCreate: true }),
  ]);
  for (const vm of [mover, peer]) await until(async () => ((await s!.vms.getVM({ id: vm.id })).status?.state === State.RUNNING ? true : undefined), `${vm.name} RUNNING`, 120_000, 200);
  const before = await probe("a", mover.id, "the mover pings its peer on the same host", (p) => p.round?.ping["10.43.0.22"] === true);
  assert.equal(before.lease?.ip, "10.43.0.21");

  const moved = await s!.vms.migrateVM({ vmId: mover.id, targetNodeId: nodeId.b, live: true }, { timeoutMs: 5 * 60_000 });
  assert.equal(moved.vm?.status?.nodeId, nodeId.b);
  // The guest runs on b now: its console is b's. Its rounds go on with the same address, its peer on a reached across VXLAN.
  const after1 = await probe("b", mover.id, "the migrated VM pings its peer across the hosts", (p) => p.round !== undefined && p.round.ping["10.43.0.22"] === true, 120_000);
  // The target's console starts at the move (no lease line again); a ping answered through anti-spoofing is from the port's address.
  assert.equal(after1.round!.ping["10.43.0.22"], true);
  const seenByPeer = await probe("a", peer.id, "the peer still reaches the migrated VM", laterRound(undefined, (p) => p.round?.ping["10.43.0.21"] === true), 120_000);
  assert.equal(seenByPeer.round!.ping["10.43.0.21"], true);
  const port = await until(async () => {
    const x = await ports.getPort({ id: pm.id });
    return x.status?.nodeId === nodeId.b && x.status.state === PortState.ACTIVE ? x : undefined;
  }, "the mover's port ACTIVE on b", 60_000, 200);
  assert.equal(port.spec!.fixedIps[0], "10.43.0.21");

  for (const vm of [mover, peer]) await s!.vms.deleteVM({ id: vm.id, force: true });
  await until(async () => ((await ports.getPort({ id: pm.id })).status?.deviceId === "" && (await ports.getPort({ id: pp.id })).status?.deviceId === "" ? true : undefined), "ports released", 60_000, 200);
  await ports.deletePort({ id: pm.id });
  await ports.deletePort({ id: pp.id });
  await nets.deleteVirtualNetwork({ id: net.id });
});

test("a full network grows by a second subnet: a VM there gets its lease from that subnet's DHCP and reaches a VM on the first subnet through the router", { timeout: 600_000 }, async () => {
  const nets = createClient(VirtualNetworkService, s!.transport);
  const ports = createClient(PortService, s!.transport);
  // A network type no node supports is refused with each node's reason, from its agent's probe.
  const vlan = await rejection(nets.createVirtualNetwork({ name: "e2e-vlan", spec: { type: NetworkType.VLAN, cidr: "10.45.0.0/24", vlanId: 0 } }));
  assert.match(vlan.message, /no node supports VLAN networks \(network-vlan\)/);
  for (const k of ["a", "b"] as const) assert.match(vlan.message, new RegExp(`node '${P}-${k}': the kernel (can|cannot) create VLAN devices`));
  const bridge = await rejection(nets.createVirtualNetwork({ name: "e2e-bridge", spec: { type: NetworkType.BRIDGE, cidr: "10.45.0.0/24" } }));
  // Host a maps a physical network (network-uplink), but bridged networks are not built: said so.
  assert.match(bridge.message, /1 node\(s\) report network-uplink, but this control plane does not build BRIDGE networks yet/);
  // /28 with a DHCP range of two addresses: one for host a's DHCP port, one for a filler
  // port. The VMs run on different hosts: each host's gateway routes between the subnets
  // for its own guests, across the overlay to the other host's.
  const A = "10.44.0.10";
  const net = await nets.createVirtualNetwork({ name: "e2e-grow", spec: { type: NetworkType.VXLAN, cidr: "10.44.0.0/28", dhcp: { enabled: true, rangeStart: "10.44.0.2", rangeEnd: "10.44.0.3" }, router: { snatEnabled: true } } });
  const pa = await ports.createPort({ name: "grow-a", spec: { networkId: net.id, fixedIps: [A] } });
  const boot = (args: Parameters<typeof netProbeKernelArgs>[0]) => ({ directBoot: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, cmdline: netProbeKernelArgs(args) } });
  const base = { cpu: { cores: 1 }, memory: { sizeMib: 256n } };
  const va = await s!.vms.createVM({ name: "grow-a", spec: { ...base, boot: boot({ ping: ["10.44.0.1"] }), nics: [{ id: "eth0", portId: pa.id }], placement: { requiredNodeIds: [nodeId.a] } }, startOnCreate: true });
  await until(async () => ((await s!.vms.getVM({ id: va.id })).status?.state === State.RUNNING ? true : undefined), "grow-a RUNNING", 120_000, 200);
  const a1 = await probe("a", va.id, "guest a has its lease on the first subnet", (p) => p.lease !== undefined && p.round?.ping["10.44.0.1"] === true);
  assert.equal(a1.lease?.ip, A);
  // The range is full once a filler takes what a's DHCP port left.
  const filler = await ports.createPort({ name: "grow-filler", spec: { networkId: net.id } });
  const full = await rejection(ports.createPort({ spec: { networkId: net.id } }));
  assert.match(full.message, /subnet 10\.44\.0\.0\/28 \(DHCP range 10\.44\.0\.2-10\.44\.0\.3\)/);

  // Grown by a subnet: the next port's address comes from it.
  await nets.updateVirtualNetwork({ id: net.id, spec: { additionalSubnets: [{ cidr: "10.44.1.0/24", allocationPools: [{ start: "10.44.1.100", end: "10.44.1.120" }] }] }, updateMask: { paths: ["spec.additional_subnets"] } });
  const pb = await ports.createPort({ name: "grow-b", spec: { networkId: net.id } });
  const B = pb.spec!.fixedIps[0]!;
  assert.match(B, /^10\.44\.1\.1[0-2][0-9]$/);
  // The filler goes: host b's DHCP port (made when b's VM is placed) takes its address in the first subnet.
  await ports.deletePort({ id: filler.id });
  const vb = await s!.vms.createVM({ name: "grow-b", spec: { ...base, boot: boot({ ping: [A, "10.44.1.1"] }), nics: [{ id: "eth0", portId: pb.id }], placement: { requiredNodeIds: [nodeId.b] } }, startOnCreate: true });
  await until(async () => ((await s!.vms.getVM({ id: vb.id })).status?.state === State.RUNNING ? true : undefined), "grow-b RUNNING", 120_000, 200);
  const b1 = await probe("b", vb.id, "guest b, on the second subnet on host b, pings a on the first subnet on host a through its host's gateway", (p) => p.lease !== undefined && p.round?.ping[A] === true);
  assert.equal(b1.lease?.ip, B);
  assert.equal(b1.lease?.router, "10.44.1.1", "the second subnet's gateway");
  assert.equal(b1.round!.ping["10.44.1.1"], true, "host b answers on the second subnet's gateway");
  // a reaches b back across the hosts (its host routes to the other subnet over the overlay).
  const a2 = await probe("a", va.id, "guest a still reaches its gateway", laterRound(a1.round?.round, (p) => p.round?.ping["10.44.0.1"] === true));
  assert.equal(a2.lease?.ip, A);
  // Each host's DHCP port has an address in both subnets (a's, made before the subnet was added, was given one; its first kept).
  const dhcp = await until(async () => {
    const list = (await ports.listPorts({ networkId: net.id, deviceOwner: PortDeviceOwner.DHCP })).ports;
    return list.length === 2 && list.every((p) => p.spec!.fixedIps.length === 2) ? list : undefined;
  }, "a DHCP port on each host with an address in both subnets", 60_000, 200);
  for (const p of dhcp) assert.deepEqual(p.spec!.fixedIps.map((ip) => ip.split(".").slice(0, 3).join(".")), ["10.44.0", "10.44.1"], `DHCP port on ${p.status?.deviceId}`);
  const active = await until(async () => {
    const n = await nets.getVirtualNetwork({ id: net.id });
    return n.status?.state === VirtualNetworkState.ACTIVE && n.status.nodes.length === 2 ? n : undefined;
  }, "the grown network ACTIVE on both hosts", 60_000, 200);
  assert.deepEqual(active.status!.nodes.map((x) => x.nodeId).sort(), [nodeId.a, nodeId.b].sort());
  // The second subnet is in use: it stays.
  const busy = await rejection(nets.updateVirtualNetwork({ id: net.id, spec: { additionalSubnets: [] }, updateMask: { paths: ["spec.additional_subnets"] } }));
  assert.match(busy.message, new RegExp(pb.id));

  for (const vm of [va, vb]) await s!.vms.deleteVM({ id: vm.id, force: true });
  await until(async () => ((await ports.getPort({ id: pa.id })).status?.deviceId === "" && (await ports.getPort({ id: pb.id })).status?.deviceId === "" ? true : undefined), "ports released", 60_000, 200);
  for (const p of [pa, pb]) await ports.deletePort({ id: p.id });
  await until(async () => ((await ports.listPorts({ networkId: net.id })).ports.length === 0 ? true : undefined), "the DHCP ports gone with the hosts' copies", 60_000, 200);
  await nets.deleteVirtualNetwork({ id: net.id });
});

test("an EXTERNAL network is made where a node maps its physical network, and floating IPs are allocated from it", { timeout: 120_000 }, async () => {
  const nets = createClient(VirtualNetworkService, s!.transport);
  const fips = createClient(FloatingIpService, s!.transport);
  // No node maps "other": refused, with what each node maps or why it has no uplink.
  const other = await rejection(nets.createVirtualNetwork({ name: "e2e-ext-other", spec: { type: NetworkType.EXTERNAL, cidr: "198.51.100.0/24", physicalNetwork: "other" } }));
  assert.match(other.message, /no node maps physical network 'other'/);
  assert.match(other.message, new RegExp(`node '${P}-a': maps no physical network 'other' \\(it maps 'ext'`));
  assert.match(other.message, new RegExp(`node '${P}-b': .*overlay networks only`));
  const ext = await nets.createVirtualNetwork({ name: "e2e-ext", spec: { type: NetworkType.EXTERNAL, cidr: "198.51.100.0/24", physicalNetwork: "ext", dhcp: { rangeStart: "198.51.100.20", rangeEnd: "198.51.100.29" } } });
  assert.equal(ext.spec!.dhcp!.enabled, false);
  const fip = await fips.createFloatingIp({ externalNetworkId: ext.id });
  assert.match(fip.address, /^198\.51\.100\.2[0-9]$/);
  assert.equal((await nets.getVirtualNetwork({ id: ext.id })).status!.allocatedIpCount, 2, "the upstream gateway and the floating IP");
  await fips.deleteFloatingIp({ id: fip.id });
  await nets.deleteVirtualNetwork({ id: ext.id });
});

test("a guest behind its network's central router reaches the outside through SNAT; the outside reaches it through its floating IP, and no longer after disassociation", { timeout: 600_000 }, async () => {
  const nets = createClient(VirtualNetworkService, s!.transport);
  const ports = createClient(PortService, s!.transport);
  const groups = createClient(SecurityGroupService, s!.transport);
  const fips = createClient(FloatingIpService, s!.transport);
  // The outside: host a's uplink's other end, with the upstream gateway and no route to any guest subnet.
  sh(["ip", "netns", "add", OUT]);
  sh(["ip", "-n", OUT, "link", "set", "lo", "up"]);
  sh(["ip", "-n", H.a, "link", "set", `${P}y`, "netns", OUT]);
  sh(["ip", "-n", OUT, "addr", "add", `${UPSTREAM}/24`, "dev", `${P}y`]);
  sh(["ip", "-n", OUT, "link", "set", `${P}y`, "up"]);
  sh(["ip", "-n", H.a, "link", "set", `${P}x`, "up"]);

  const ext = await nets.createVirtualNetwork({ name: "e2e-internet", spec: { type: NetworkType.EXTERNAL, cidr: "198.51.100.0/24", physicalNetwork: "ext", dhcp: { rangeStart: "198.51.100.40", rangeEnd: "198.51.100.49" } } });
  const net = await nets.createVirtualNetwork({ name: "e2e-routed", spec: { type: NetworkType.VXLAN, cidr: "10.47.0.0/24", router: { externalNetworkId: ext.id, snatEnabled: true } } });
  const open = await groups.createSecurityGroup({
    name: "e2e-public",
    rules: [{ direction: Dir.EGRESS }, { direction: Dir.INGRESS, protocol: Proto.ICMP, remote: { case: "remoteCidr", value: "0.0.0.0/0" } }, { direction: Dir.INGRESS, protocol: Proto.TCP, portRangeMin: 22, portRangeMax: 22, remote: { case: "remoteCidr", value: "0.0.0.0/0" } }],
  });
  const port = await ports.createPort({ name: "e2e-web", spec: { networkId: net.id, fixedIps: ["10.47.0.10"], securityGroupIds: [open.id] } });
  // The router can only be on host a (the one node mapping "ext"); the guest runs on b, so every packet crosses the overlay.
  const routed = await until(async () => {
    const n = await nets.getVirtualNetwork({ id: net.id });
    return n.status?.router?.ready ? n : undefined;
  }, "the router ready on host a", 60_000, 200).catch(async (err: unknown) => {
    throw new Error(`${String(err)}; router: ${JSON.stringify((await nets.getVirtualNetwork({ id: net.id })).status?.router)}`);
  });
  assert.equal(routed.status!.router!.nodeId, nodeId.a);
  const routerIp = routed.status!.router!.externalIp;
  assert.match(routerIp, /^198\.51\.100\.4[0-9]$/);
  await until(async () => ((await pingsFrom(OUT, routerIp)) ? true : undefined), "the outside pings the router", 30_000, 200);

  const boot = { directBoot: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, cmdline: netProbeKernelArgs({ ping: [UPSTREAM], tcp: [] }) } };
  const vm = await s!.vms.createVM({ name: "e2e-web", spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot, nics: [{ id: "eth0", portId: port.id }], placement: { requiredNodeIds: [nodeId.b] } }, startOnCreate: true });
  await until(async () => ((await s!.vms.getVM({ id: vm.id })).status?.state === State.RUNNING ? true : undefined), "the guest RUNNING", 120_000, 200);
  // The outside has no route to 10.47.0.0/24: an answer means the router translated the guest's address.
  const p1 = await probe("b", vm.id, "the guest pings the outside through the router's SNAT", (p) => p.lease !== undefined && p.round?.ping[UPSTREAM] === true);
  assert.equal(p1.lease?.router, "10.47.0.1");
  assert.equal(await pingsFrom(OUT, "10.47.0.10"), false, "nothing routes the guest's own address from outside");

  // A floating IP: the outside reaches the guest on it (ICMP and TCP 22), wherever the guest runs.
  const fip = await fips.createFloatingIp({ externalNetworkId: ext.id, portId: port.id });
  assert.deepEqual([fip.portId, fip.fixedIp, fip.vmId], [port.id, "10.47.0.10", vm.id]);
  const active = await until(async () => {
    const f = await fips.getFloatingIp({ id: fip.id });
    return f.state === FloatingIpState.ACTIVE ? f : undefined;
  }, "the floating IP ACTIVE", 60_000, 200).catch(async (err: unknown) => {
    throw new Error(`${String(err)}; ${JSON.stringify(await fips.getFloatingIp({ id: fip.id }))}`);
  });
  assert.equal(active.errorMessage, "");
  await until(async () => ((await pingsFrom(OUT, fip.address)) ? true : undefined), "the outside pings the guest's floating IP", 60_000, 200);
  await until(async () => ((await connectsFrom(OUT, fip.address, 22)) ? true : undefined), "the outside connects to the guest's TCP 22 on its floating IP", 30_000, 200);

  // Disassociated: the outside reaches it no more; the guest still gets out (behind the router's address).
  const off = await fips.disassociateFloatingIp({ id: fip.id });
  assert.equal(off.state, FloatingIpState.DOWN);
  await until(async () => (!(await pingsFrom(OUT, fip.address)) ? true : undefined), "the floating IP no longer reaches the guest", 30_000, 200);
  assert.equal(await connectsFrom(OUT, fip.address, 22), false);
  const p2 = await probe("b", vm.id, "the guest still reaches the outside", laterRound(p1.round?.round, (p) => p.round?.ping[UPSTREAM] === true));
  assert.ok(p2.round);

  await s!.vms.deleteVM({ id: vm.id, force: true });
  await until(async () => ((await ports.getPort({ id: port.id })).status?.deviceId === "" ? true : undefined), "the port released", 60_000, 200);
  await ports.deletePort({ id: port.id });
  await fips.deleteFloatingIp({ id: fip.id });
  await nets.updateVirtualNetwork({ id: net.id, spec: {}, updateMask: { paths: ["spec.router"] } });
  await until(async () => ((await agents.a!.routerHost!.listRouters()).length === 0 ? true : undefined), "the router removed from host a", 30_000, 200);
  await nets.deleteVirtualNetwork({ id: net.id });
  await nets.deleteVirtualNetwork({ id: ext.id });
  await groups.deleteSecurityGroup({ id: open.id });
});
