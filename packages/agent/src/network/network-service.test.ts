import assert from "node:assert/strict";
import { execFile, execFileSync, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, test } from "node:test";
import { Code, createClient, type Client, type ConnectError } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { VmService } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { NetworkService, PortState, RuleDirection, RuleProtocol, type NetworkSpec } from "@quantix/api/gen/vmm/v1/network_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { NetworkSpecSchema } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { silentLogger } from "@quantix/rpc";
import { ensureDebianPackages, rejection, until } from "@quantix/testing";
import { SimulatedBackend } from "../backends/simulated/simulated-backend.js";
import { startAgentServer, type AgentServer } from "../rpc/agent-server.js";
import { VmManager } from "../vm-manager.js";
import { buildDhcpGuest, DHCP_GUEST_LEASE } from "../testing/dhcp-guest.js";
import { probeNetworkCapabilities } from "./capabilities.js";
import { NetworkHost } from "./network-host.js";
import { bridgeName, tapName } from "./names.js";

// Two "hosts" (network namespaces joined by a veth underlay), each with its own
// NetworkHost behind a real agent server, driven by a real gRPC client; "guests" are
// namespaces attached by a veth named as the port's TAP. Every check is real traffic:
// ping, DHCP from busybox udhcpc, DNS with dig, TCP connects.

const run = promisify(execFile);
const P = `qxn${(process.pid & 0xffff).toString(16)}`;
const H1 = `${P}h1`;
const H2 = `${P}h2`;
const G = { g1: `${P}g1`, g2: `${P}g2`, g3: `${P}g3` };
const root = mkdtempSync(join(tmpdir(), "quantix-net-"));
const NET = "0a000000-0000-4000-8000-000000000001";
const SG_WEB = "5a000000-0000-4000-8000-000000000001";
const SG_CLIENTS = "5b000000-0000-4000-8000-000000000002";
const PORT = { g1: "c1000000-0000-4000-8000-000000000001", g2: "c2000000-0000-4000-8000-000000000002", g3: "c3000000-0000-4000-8000-000000000003" };
const MAC = { g1: "02:00:00:00:00:11", g2: "02:00:00:00:00:12", g3: "02:00:00:00:00:13" };
const IP = { g1: "10.20.0.11", g2: "10.20.0.12", g3: "10.20.0.13" };

interface Side {
  host: NetworkHost;
  server: AgentServer;
  backend: SimulatedBackend;
  c: Client<typeof NetworkService>;
  vm: Client<typeof VmService>;
}
const sides: Partial<Record<"h1" | "h2", Side>> = {};
const listeners: ChildProcess[] = [];

const sh = (args: string[]) => execFileSync(args[0]!, args.slice(1), { stdio: ["ignore", "pipe", "pipe"], timeout: 15_000 }).toString();
const inNs = (ns: string, args: string[]) => run("ip", ["netns", "exec", ns, ...args], { timeout: 20_000 });
const ok = (p: Promise<unknown>) => p.then(() => true, () => false);
const fields = (e: ConnectError) => e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));

async function startSide(name: "h1" | "h2", ns: string): Promise<Side> {
  const host = new NetworkHost({ stateDir: join(root, name), netns: ns, adoptVethPorts: true });
  await host.start();
  const backend = new SimulatedBackend({ bootMs: 20 });
  const manager = new VmManager({ backend, portTaps: (id) => host.portTap(id) });
  await manager.start();
  const server = await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: silentLogger, network: { host, features: () => probeNetworkCapabilities(ns) } });
  const transport = createGrpcTransport({ baseUrl: server.url });
  return { host, server, backend, c: createClient(NetworkService, transport), vm: createClient(VmService, transport) };
}

async function stopSide(s: Side | undefined, stopDnsmasq: boolean): Promise<void> {
  await s?.server.close();
  await s?.backend.close();
  await s?.host.close(stopDnsmasq);
}

/** A guest namespace on `host`, its eth0 the peer of a veth named as the port's TAP. */
function guest(g: keyof typeof G, hostNs: string): void {
  sh(["ip", "netns", "add", G[g]]);
  sh(["ip", "-n", hostNs, "link", "add", tapName(PORT[g]), "type", "veth", "peer", "name", "eth0", "netns", G[g]]);
  sh(["ip", "-n", G[g], "link", "set", "eth0", "address", MAC[g], "mtu", "1450", "up"]);
  sh(["ip", "-n", G[g], "link", "set", "lo", "up"]);
}

/** The QEMU guest's port (on h1, declared only by the QEMU test). */
const QPORT = { portId: "c4000000-0000-4000-8000-000000000004", macAddress: "52:54:00:00:00:14", fixedIps: ["10.20.0.14"], securityGroupIds: [], hostname: "qemu1" };

function spec(host: "h1" | "h2", sg: string[] = [SG_WEB], extra: (typeof QPORT)[] = []): MessageInitShape<typeof NetworkSpecSchema> {
  const local = host === "h1" ? "192.0.2.1" : "192.0.2.2";
  const peer = host === "h1" ? "192.0.2.2" : "192.0.2.1";
  const all = [
    { portId: PORT.g1, macAddress: MAC.g1, fixedIps: [IP.g1], securityGroupIds: sg, hostname: "web1", on: "h1" },
    { portId: PORT.g3, macAddress: MAC.g3, fixedIps: [IP.g3], securityGroupIds: [], hostname: "spoofer", on: "h1" },
    { portId: PORT.g2, macAddress: MAC.g2, fixedIps: [IP.g2], securityGroupIds: [SG_CLIENTS], hostname: "client2", on: "h2" },
  ];
  return {
    networkId: NET,
    vni: 4242,
    mtu: 1450,
    localUnderlayAddress: local,
    peerUnderlayAddresses: [peer],
    subnets: [{ cidr: "10.20.0.0/24", gatewayIp: "10.20.0.1", dhcpEnabled: true, serviceAddress: host === "h1" ? "10.20.0.2" : "10.20.0.3" }],
    ports: [...all.filter((p) => p.on === host).map(({ on: _on, ...p }) => p), ...extra],
    remotePorts: all.filter((p) => p.on !== host).map((p) => ({ macAddress: p.macAddress, underlayAddress: peer, ipAddresses: p.fixedIps, hostname: p.hostname })),
    dnsDomain: "net1.internal",
  };
}

/** A TCP connect from a guest namespace: true when it is accepted within 2 s. */
const connects = (from: string, ip: string, port: number) =>
  ok(inNs(from, ["python3", "-c", `import socket; socket.create_connection(("${ip}", ${port}), timeout=2).close()`]));
const pings = (from: string, ip: string, extra: string[] = []) => ok(inNs(from, ["ping", "-c", "1", "-W", "1", ...extra, ip]));

before(async () => {
  await ensureDebianPackages(["nftables", "dnsmasq-base", "busybox-static", "dnsutils", "iputils-ping", "conntrack"]);
  for (const ns of [H1, H2]) {
    sh(["ip", "netns", "add", ns]);
    sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
  }
  sh(["ip", "-n", H1, "link", "add", `${P}u1`, "type", "veth", "peer", "name", `${P}u2`, "netns", H2]);
  sh(["ip", "-n", H1, "addr", "add", "192.0.2.1/24", "dev", `${P}u1`]);
  sh(["ip", "-n", H2, "addr", "add", "192.0.2.2/24", "dev", `${P}u2`]);
  sh(["ip", "-n", H1, "link", "set", `${P}u1`, "up"]);
  sh(["ip", "-n", H2, "link", "set", `${P}u2`, "up"]);
  sides.h1 = await startSide("h1", H1);
  sides.h2 = await startSide("h2", H2);
});

after(async () => {
  if (process.env["QXN_KEEP"]) return;
  for (const l of listeners) l.kill("SIGKILL");
  await stopSide(sides.h1, true).catch(() => undefined);
  await stopSide(sides.h2, true).catch(() => undefined);
  for (const ns of [...Object.values(G), H1, H2]) spawnSyncQuiet(["ip", "netns", "del", ns]);
  rmSync(root, { recursive: true, force: true });
});

function spawnSyncQuiet(args: string[]): void {
  try {
    sh(args);
  } catch {
    // already gone
  }
}

test("capabilities are probed from the kernel and the binaries", async () => {
  const caps = await sides.h1!.c.getNetworkCapabilities({});
  const by = new Map(caps.features.map((f) => [f.name, f]));
  assert.equal(by.get("network-vxlan")?.available, true, by.get("network-vxlan")?.reason);
  assert.equal(by.get("network-security-groups")?.available, true, by.get("network-security-groups")?.reason);
  assert.equal(by.get("network-dhcp")?.available, true);
  assert.equal(by.get("network-vlan")?.available, false);
  assert.equal(by.get("network-uplink")?.available, false);
  assert.match(by.get("network-uplink")?.reason ?? "", /overlay networks only/);
  assert.equal(caps.underlayAddress, "192.0.2.1", "the namespace's global IPv4 address");
});

test("bad input is INVALID_ARGUMENT with the field paths and changes nothing", async () => {
  const c = sides.h1!.c;
  const bad = spec("h1") as { subnets: { cidr: string }[]; ports: { macAddress: string; hostname: string }[] };
  bad.subnets[0]!.cidr = "10.20.0.1/24";
  bad.ports[0]!.macAddress = "02:00:00:00:00:1g";
  bad.ports[1]!.hostname = "x; rm -rf /";
  const e = await rejection(c.applyNetwork({ spec: bad as NetworkSpec, generation: 1n }));
  assert.equal(e.code, Code.InvalidArgument);
  for (const f of ["spec.subnets[0].cidr", "spec.ports[0].mac_address", "spec.ports[1].hostname"]) assert.ok(fields(e).includes(f), `${f} in ${fields(e).join(",")}`);
  const rule = await rejection(c.applySecurityGroup({ spec: { securityGroupId: SG_WEB, rules: [{ direction: RuleDirection.INGRESS, protocol: RuleProtocol.ICMP, portRangeMin: 22 }] } }));
  assert.deepEqual(fields(rule), ["spec.rules[0].port_range_min"]);
  assert.deepEqual((await c.listNetworks({})).networks, []);
  assert.deepEqual((await c.listSecurityGroups({})).securityGroups, []);
  assert.ok(!sh(["ip", "-n", H1, "link", "show"]).includes(bridgeName(NET)), "no bridge was created");
});

test("two hosts: ports ACTIVE, ping across VXLAN, DHCP lease, DNS names of the whole network", async () => {
  const { h1, h2 } = sides as Required<typeof sides>;
  // The groups first on every host, as the controller will; then the networks.
  for (const s of [h1, h2]) {
    await s.c.applySecurityGroup({
      spec: {
        securityGroupId: SG_WEB,
        rules: [
          { direction: RuleDirection.INGRESS, protocol: RuleProtocol.TCP, portRangeMin: 22 },
          { direction: RuleDirection.INGRESS, protocol: RuleProtocol.ICMP },
          { direction: RuleDirection.INGRESS, protocol: RuleProtocol.TCP, portRangeMin: 80, remoteGroupId: SG_CLIENTS },
        ],
        memberIps: [IP.g1],
      },
      generation: 1n,
    });
    await s.c.applySecurityGroup({ spec: { securityGroupId: SG_CLIENTS, rules: [], memberIps: [] }, generation: 1n });
  }
  // Only now: every converge deletes links named like the agent's that its state does not want.
  guest("g1", H1);
  guest("g3", H1);
  guest("g2", H2);
  const s1 = await h1.c.applyNetwork({ spec: spec("h1"), generation: 1n });
  const s2 = await h2.c.applyNetwork({ spec: spec("h2"), generation: 1n });
  for (const s of [s1, s2]) {
    assert.deepEqual(s.conditions.filter((x) => !x.status), [], JSON.stringify(s.conditions));
    assert.ok(s.ports.every((p) => p.state === PortState.ACTIVE), JSON.stringify(s.ports));
    assert.ok(s.dnsmasqPid > 0);
  }
  assert.equal(s1.observedGeneration, 1n);
  // The same spec again changes nothing: dnsmasq keeps its pid.
  assert.equal((await h1.c.applyNetwork({ spec: spec("h1"), generation: 1n })).dnsmasqPid, s1.dnsmasqPid);

  // DHCP: g2 on h2 gets its fixed IP, with h2's dnsmasq as DNS server and MTU 1450.
  const dhcp = await inNs(G.g2, ["busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-f", "-t", "5", "-T", "1", "-s", "/bin/true"]);
  assert.match(dhcp.stdout + dhcp.stderr, new RegExp(`lease of ${IP.g2.replaceAll(".", "\\.")} obtained`));
  for (const g of ["g1", "g2", "g3"] as const) sh(["ip", "-n", G[g], "addr", "add", `${IP[g]}/24`, "dev", "eth0"]);

  assert.ok(await until(async () => ((await pings(G.g2, IP.g1)) ? true : undefined), "g2 (h2) pings g1 (h1) over VXLAN", 15_000));
  // DNS on h2 answers a name on h1 (a remote port), with and without the domain.
  const dig = async (name: string) => (await inNs(G.g2, ["dig", "+short", "+time=2", "+tries=2", "@10.20.0.3", name])).stdout.trim();
  assert.equal(await dig("web1.net1.internal"), IP.g1);
  assert.equal(await dig("client2"), IP.g2);
});

test("security groups: tcp/22 allowed, 8080 dropped, remote-group membership by delta, replies stateful", async () => {
  const { h1, h2 } = sides as Required<typeof sides>;
  const listener = spawn("ip", ["netns", "exec", G.g1, "python3", "-c", "import socket,select\nss=[]\nfor p in (22,80,8080):\n s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0',p)); s.listen(16); ss.append(s)\nwhile True:\n r,_,_=select.select(ss,[],[])\n for s in r: s.accept()[0].close()\n"], { stdio: "ignore" });
  listeners.push(listener);
  assert.ok(await until(async () => ((await connects(G.g1, "127.0.0.1", 8080)) ? true : undefined), "the listener in g1"));
  assert.equal(await connects(G.g2, IP.g1, 22), true, "22 is allowed from anywhere");
  assert.equal(await connects(G.g2, IP.g1, 8080), false, "8080 is dropped");
  assert.equal(await connects(G.g2, IP.g1, 80), false, "80 needs membership of the clients group");
  // g2 joins "clients": only the member set changes, on the host that filters (h1).
  const st = await h1.c.updateSecurityGroupMembers({ securityGroupId: SG_CLIENTS, addIps: [IP.g2] });
  assert.deepEqual(st.spec?.memberIps, [IP.g2]);
  await h2.c.updateSecurityGroupMembers({ securityGroupId: SG_CLIENTS, addIps: [IP.g2] });
  assert.equal(await connects(G.g2, IP.g1, 80), true, "80 is allowed once g2 is a member");
  await h1.c.updateSecurityGroupMembers({ securityGroupId: SG_CLIENTS, removeIps: [IP.g2] });
  assert.equal(await connects(G.g2, IP.g1, 80), false, "and dropped again once it left");
  // Egress is allowed by default, and the replies come back: g1 reaches g3 (no groups).
  assert.equal(await pings(G.g1, IP.g3), true);
});

test("a removed rule ends the connections it allowed (their conntrack entries go); a connection another rule still allows goes on", async () => {
  const { h1, h2 } = sides as Required<typeof sides>;
  const web = (extra: { portRangeMin: number }[]) => ({
    spec: {
      securityGroupId: SG_WEB,
      rules: [
        { direction: RuleDirection.INGRESS, protocol: RuleProtocol.TCP, portRangeMin: 22 },
        { direction: RuleDirection.INGRESS, protocol: RuleProtocol.ICMP },
        { direction: RuleDirection.INGRESS, protocol: RuleProtocol.TCP, portRangeMin: 80, remoteGroupId: SG_CLIENTS },
        ...extra.map((x) => ({ direction: RuleDirection.INGRESS, protocol: RuleProtocol.TCP, ...x })),
      ],
      memberIps: [IP.g1],
    },
    generation: 2n,
  });
  for (const h of [h1, h2]) await h.c.applySecurityGroup(web([{ portRangeMin: 2222 }, { portRangeMin: 2223 }]));
  // An echo server on 2222 and 2223 in g1 that keeps its connections open.
  const echoServer = [
    "import socket, threading",
    "def serve(c):",
    "    while True:",
    "        d = c.recv(16)",
    "        if not d: return",
    "        c.sendall(d)",
    "def accept(s):",
    "    while True:",
    "        c, _ = s.accept()",
    "        threading.Thread(target=serve, args=(c,), daemon=True).start()",
    "for p in (2222, 2223):",
    "    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', p)); s.listen(4)",
    "    threading.Thread(target=accept, args=(s,), daemon=True).start()",
    "threading.Event().wait()",
  ].join("\n");
  const echo = spawn("ip", ["netns", "exec", G.g1, "python3", "-c", echoServer], { stdio: "ignore" });
  listeners.push(echo);
  assert.ok(await until(async () => ((await connects(G.g1, "127.0.0.1", 2223)) ? true : undefined), "the echo server in g1"));
  // A client in g2 holding one connection to each port; it checks both when told to.
  const clientScript = [
    "import socket, sys",
    `cs = [socket.create_connection(("${IP.g1}", p), timeout=3) for p in (2222, 2223)]`,
    "for c in cs:",
    "    c.sendall(b'x'); assert c.recv(1) == b'x'",
    "print('connected', flush=True)",
    "sys.stdin.readline()",
    "out = []",
    "for c in cs:",
    "    try:",
    "        c.settimeout(4); c.sendall(b'y'); out.append('ok' if c.recv(1) == b'y' else 'closed')",
    "    except Exception:",
    "        out.append('dead')",
    "print(' '.join(out), flush=True)",
  ].join("\n");
  const client = spawn("ip", ["netns", "exec", G.g2, "python3", "-c", clientScript], { stdio: ["pipe", "pipe", "inherit"] });
  listeners.push(client);
  let out = "";
  client.stdout!.setEncoding("utf8").on("data", (d: string) => (out += d));
  await until(() => (out.includes("connected") ? true : undefined), "both connections established", 15_000);
  const tracked = (await inNs(H1, ["conntrack", "-L", "-f", "ipv4", "--orig-dst", IP.g1, "-p", "tcp", "--dport", "2222"])).stdout;
  assert.match(tracked, /ESTABLISHED/, "the connection is tracked on the host that filters it");
  // The 2222 rule goes; 2223 stays.
  for (const h of [h1, h2]) {
    const st = await h.c.applySecurityGroup(web([{ portRangeMin: 2223 }]));
    assert.deepEqual(st.conditions.filter((c) => !c.status), [], JSON.stringify(st.conditions));
  }
  client.stdin!.write("\n");
  const result = await until(() => /^(ok|dead|closed) (ok|dead|closed)$/m.exec(out)?.[0], "the client's verdict", 20_000);
  assert.equal(result, "dead ok", "the connection the removed rule allowed is cut; the other goes on");
});

test("anti-spoofing: a guest sending from another IP is dropped", async () => {
  // Static neighbours on both sides, so only the IP source check can stop the ping (the
  // spoofer's ARP from 10.20.0.99 would be dropped too). g1's group allows ICMP.
  sh(["ip", "-n", G.g3, "neigh", "replace", IP.g1, "lladdr", MAC.g1, "dev", "eth0", "nud", "permanent"]);
  sh(["ip", "-n", G.g1, "neigh", "replace", "10.20.0.99", "lladdr", MAC.g3, "dev", "eth0", "nud", "permanent"]);
  assert.equal(await pings(G.g3, IP.g1), true, "g3 from its own address");
  sh(["ip", "-n", G.g3, "addr", "add", "10.20.0.99/24", "dev", "eth0"]);
  assert.equal(await pings(G.g3, IP.g1, ["-I", "10.20.0.99"]), false, "g3 spoofing 10.20.0.99");
  sh(["ip", "-n", G.g3, "addr", "del", "10.20.0.99/24", "dev", "eth0"]);
});

test("a VM NIC naming a port gets the port's TAP; an unknown port or another MAC is refused", async () => {
  const vm = sides.h1!.vm;
  const config = (nic: Record<string, string>) => ({ cpu: { vcpuCount: 1 }, memory: { sizeBytes: 128n << 20n }, boot: { kernelPath: "/boot/vmlinuz" }, network: [{ id: "nic0", ...nic }] });
  await vm.createVm({ vmId: "portvm", config: config({ macAddress: MAC.g1, portId: PORT.g1 }) });
  const info = await vm.getVmInfo({ vmId: "portvm" });
  assert.equal(info.config?.network[0]?.tapDevice, tapName(PORT.g1));
  await vm.deleteVm({ vmId: "portvm" });
  assert.equal((await rejection(vm.createVm({ vmId: "portvm2", config: config({ macAddress: MAC.g2, portId: PORT.g2 }) }))).code, Code.FailedPrecondition, "g2's port lives on h2");
  const mac = await rejection(vm.createVm({ vmId: "portvm3", config: config({ macAddress: "02:00:00:00:00:99", portId: PORT.g1 }) }));
  assert.deepEqual(fields(mac), ["config.network[0].mac_address"]);
  const id = await rejection(vm.createVm({ vmId: "portvm4", config: config({ macAddress: MAC.g1, portId: "not-a-uuid" }) }));
  assert.deepEqual(fields(id), ["config.network[0].port_id"]);
});

test("a real QEMU guest on a port's TAP (QEMU run in the host's namespace) gets its DHCP lease", async () => {
  const guestFiles = await buildDhcpGuest();
  const st = await sides.h1!.c.applyNetwork({ spec: spec("h1", [SG_WEB], [QPORT]), generation: 3n });
  const port = st.ports.find((p) => p.portId === QPORT.portId)!;
  assert.equal(port.state, PortState.ACTIVE);
  assert.equal(port.carrier, false, "no VM holds the TAP yet");
  // The args QEMU's backend builds for a NIC (qemu-args.ts), with the TAP the port resolves to.
  const netdev = JSON.stringify({ type: "tap", id: "net0", ifname: port.tapDevice, script: "no", downscript: "no" });
  const device = JSON.stringify({ driver: "virtio-net-pci", id: "nic0", netdev: "net0", mac: QPORT.macAddress });
  const qemu = spawn("ip", ["netns", "exec", H1, "qemu-system-x86_64", "-accel", "tcg", "-m", "256M", "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
    "-serial", "stdio", "-kernel", guestFiles.kernelPath, "-initrd", guestFiles.initrdPath, "-append", "console=ttyS0 quiet panic=-1", "-netdev", netdev, "-device", device], { stdio: ["ignore", "pipe", "pipe"] });
  listeners.push(qemu);
  let out = "";
  qemu.stdout.on("data", (b: Buffer) => (out += b.toString()));
  qemu.stderr.on("data", (b: Buffer) => (out += b.toString()));
  try {
    const line = await until(() => new RegExp(`${DHCP_GUEST_LEASE} [^\r\n]*\r?\n`).exec(out)?.[0], "the guest's DHCP answer", 150_000, 200).catch((err: unknown) => {
      throw new Error(`${String(err)}; the guest's console ended with: ${out.slice(-1500)}`);
    });
    assert.match(line, /ip=10\.20\.0\.14 mtu=1450 router=10\.20\.0\.1 dns=10\.20\.0\.2/, out.slice(-2000));
  } finally {
    qemu.kill("SIGKILL");
  }
});

test("converge after a restart: a new instance on the same state re-applies; a hand-deleted bridge comes back", async () => {
  const before = await sides.h1!.c.getNetwork({ networkId: NET });
  await stopSide(sides.h1, false);
  sh(["ip", "-n", H1, "link", "del", bridgeName(NET)]);
  sides.h1 = await startSide("h1", H1);
  const after = await sides.h1.c.getNetwork({ networkId: NET });
  assert.deepEqual(after.conditions.filter((x) => !x.status), [], JSON.stringify(after.conditions));
  assert.equal(after.dnsmasqPid, before.dnsmasqPid, "dnsmasq was adopted, not restarted");
  assert.ok(after.ports.every((p) => p.state === PortState.ACTIVE));
  assert.ok(await until(async () => ((await pings(G.g2, IP.g1)) ? true : undefined), "g2 pings g1 again", 15_000));
  assert.equal(await connects(G.g2, IP.g1, 8080), false, "the rules came back too");
});

test("dnsmasq killed: status says so, the next converge restarts it", async () => {
  const h2 = sides.h2!;
  const pid = (await h2.c.getNetwork({ networkId: NET })).dnsmasqPid;
  process.kill(pid, "SIGKILL");
  const down = await until(async () => {
    const s = await h2.c.getNetwork({ networkId: NET });
    return s.dnsmasqPid === 0 ? s : undefined;
  }, "dnsmasq seen dead");
  assert.ok(down.conditions.some((c) => c.type === "DhcpReady" && !c.status && c.reason === "DnsmasqNotRunning"));
  await h2.host.resync();
  const up = await h2.c.getNetwork({ networkId: NET });
  assert.ok(up.dnsmasqPid > 0 && up.dnsmasqPid !== pid);
});

test("a removed port stops working; a deleted network leaves nothing behind", async () => {
  const { h1, h2 } = sides as Required<typeof sides>;
  const s = spec("h2");
  await h2.c.applyNetwork({ spec: { ...s, ports: [] }, generation: 2n });
  assert.ok(!sh(["ip", "-n", H2, "link", "show"]).includes(tapName(PORT.g2)), "the port's device is gone");
  assert.equal(await pings(G.g1, IP.g2), false);
  const e = await rejection(h2.c.getPort({ portId: PORT.g2 }));
  assert.equal(e.code, Code.NotFound);
  await h1.c.deleteNetwork({ networkId: NET });
  const links = sh(["ip", "-n", H1, "link", "show"]);
  assert.ok(!links.includes(bridgeName(NET)) && !links.includes(tapName(PORT.g1)), links);
  assert.equal((await rejection(h1.c.deleteNetwork({ networkId: NET }))).code, Code.NotFound);
});
