import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { NetworkService, PortState, RuleDirection, RuleProtocol } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { VmService } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QemuBackend } from "@quantix/agent";
import { ensureDebianPackages } from "./guest.js";
import { consoleText } from "./guest-console.js";
import { buildNetProbeGuest, netProbeKernelArgs, parseNetProbeConsole, type NetProbeConsole, type NetProbeGuest } from "./net-probe-guest.js";
import { TestAgent } from "./test-agent.js";
import { until } from "./until.js";

test("parseNetProbeConsole: the last lease and the latest complete round, other lines ignored", () => {
  const text = [
    "[    1.2] random: crng init done",
    "QX-LEASE ip=10.40.0.11 router=10.40.0.1 dns=10.40.0.2 hostname=vm-a mtu=1450",
    "QX-LISTEN 22",
    "QX-ROUND 1",
    "QX-PING 10.40.0.12 fail",
    "QX-TCP 10.40.0.12 fail",
    "QX-DNS vm-b fail",
    "QX-END 1",
    "QX-ROUND 2",
    "QX-PING 10.40.0.12 ok",
    "QX-PING 10.40.0.77 fail",
    "QX-TCP 10.40.0.12 ok",
    "QX-SPOOF 10.40.0.12 fail",
    "QX-DNS vm-b 10.40.0.12",
    "QX-END 2",
    "QX-ROUND 3",
    "QX-PING 10.40.0.12 fail",
  ].join("\r\n");
  const c = parseNetProbeConsole(text);
  assert.deepEqual(c.lease, { ip: "10.40.0.11", router: "10.40.0.1", dns: "10.40.0.2", hostname: "vm-a", mtu: "1450" });
  assert.equal(c.listening, true);
  assert.deepEqual(c.round, { round: 2, ping: { "10.40.0.12": true, "10.40.0.77": false }, tcp: { "10.40.0.12": true }, spoof: { "10.40.0.12": false }, dns: { "vm-b": "10.40.0.12" } });
  assert.deepEqual(parseNetProbeConsole("QX-ROUND 1\nQX-PING 10.0.0.1 ok\n"), { lease: undefined, listening: false, round: undefined }, "an incomplete round is no result");
});

test("netProbeKernelArgs: the checks as qx.* words; anything but addresses and names refused", () => {
  assert.equal(netProbeKernelArgs({ ping: ["10.0.0.1", "10.0.0.2"], tcp: ["10.0.0.1"], spoof: "10.0.0.99", dns: "web1.net.internal" }), "console=ttyS0 panic=-1 quiet qx.ping=10.0.0.1,10.0.0.2 qx.tcp=10.0.0.1 qx.spoof=10.0.0.99 qx.dns=web1.net.internal");
  assert.equal(netProbeKernelArgs(), "console=ttyS0 panic=-1 quiet");
  assert.throws(() => netProbeKernelArgs({ ping: ["10.0.0.1 init=/bin/sh"] }), /ping: not an IPv4 address/);
  assert.throws(() => netProbeKernelArgs({ tcp: ["256.0.0.1"] }), /tcp/);
  assert.throws(() => netProbeKernelArgs({ spoof: "x" }), /spoof/);
  assert.throws(() => netProbeKernelArgs({ dns: "a b" }), /dns: not a host name/);
});

// Two hosts simulated as namespaces joined by a veth underlay, each a TestAgent with its
// data plane there and QEMU run there; one net probe guest on each, on ports of one
// network whose security group allows ICMP and TCP 22.

const P = `qxa${(process.pid & 0xffff).toString(16)}`;
const H = { a: `${P}1`, b: `${P}2` };
const NET = "0a000000-0000-4000-8000-0000000000b1";
const SG = "5a000000-0000-4000-8000-0000000000b1";
const VM = {
  a: { port: "c1000000-0000-4000-8000-0000000000b1", mac: "02:00:00:00:00:b1", ip: "10.40.0.11", name: "vm-a", service: "10.40.0.2", underlay: "192.0.2.1" },
  b: { port: "c2000000-0000-4000-8000-0000000000b2", mac: "02:00:00:00:00:b2", ip: "10.40.0.12", name: "vm-b", service: "10.40.0.3", underlay: "192.0.2.2" },
};
const NOBODY = "10.40.0.77";
const SPOOFED = "10.40.0.99";
const sh = (args: string[]) => execFileSync(args[0]!, args.slice(1), { stdio: ["ignore", "pipe", "pipe"], timeout: 15_000 }).toString();
let dir: string;
let guest: NetProbeGuest;
const agents: Partial<Record<"a" | "b", TestAgent<QemuBackend>>> = {};

before(async () => {
  await ensureDebianPackages(["qemu-system-x86", "iproute2", "nftables", "dnsmasq-base", "busybox-static", "cpio"]);
  guest = await buildNetProbeGuest();
  dir = await mkdtemp(join(tmpdir(), "quantix-net-probe-"));
  for (const ns of [H.a, H.b]) {
    sh(["ip", "netns", "add", ns]);
    sh(["ip", "-n", ns, "link", "set", "lo", "up"]);
  }
  sh(["ip", "-n", H.a, "link", "add", `${P}u1`, "type", "veth", "peer", "name", `${P}u2`, "netns", H.b]);
  sh(["ip", "-n", H.a, "addr", "add", `${VM.a.underlay}/24`, "dev", `${P}u1`]);
  sh(["ip", "-n", H.b, "addr", "add", `${VM.b.underlay}/24`, "dev", `${P}u2`]);
  sh(["ip", "-n", H.a, "link", "set", `${P}u1`, "up"]);
  sh(["ip", "-n", H.b, "link", "set", `${P}u2`, "up"]);
  for (const k of ["a", "b"] as const) {
    const stateDir = join(dir, k);
    // The test builds the QEMU backend, so it gives it the namespace itself.
    const agent = new TestAgent(new QemuBackend({ stateDir: join(stateDir, "qemu"), kvm: false, netns: H[k] }), stateDir, `${P}-${k}`, { imageDirs: [guest.imageDir], network: { netns: H[k] } });
    // No control plane: this test drives the agents' NetworkService itself (a control plane's network controller would own it).
    await agent.startStandalone();
    agents[k] = agent;
  }
});

after(async () => {
  for (const k of ["a", "b"] as const) {
    const agent = agents[k];
    if (!agent) continue;
    await agent.backend.deleteVM(VM[k].name).catch(() => undefined);
    await agent.stop().catch(() => undefined);
    await agent.backend.close();
  }
  for (const ns of [H.a, H.b]) {
    try {
      sh(["ip", "netns", "del", ns]);
    } catch {
      // already gone
    }
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

test("two net probe guests on two hosts: DHCP lease and host name, ping and TCP 22 across VXLAN, DNS of the remote one, spoofing dropped", { timeout: 400_000 }, async () => {
  const clients = (k: "a" | "b") => {
    const t = createGrpcTransport({ baseUrl: agents[k]!.server.url });
    return { net: createClient(NetworkService, t), vm: createClient(VmService, t) };
  };
  const c = { a: clients("a"), b: clients("b") };
  for (const k of ["a", "b"] as const) {
    const other = k === "a" ? "b" : "a";
    const caps = await c[k].net.getNetworkCapabilities({});
    assert.equal(caps.underlayAddress, VM[k].underlay);
    await c[k].net.applySecurityGroup({
      spec: { securityGroupId: SG, rules: [{ direction: RuleDirection.INGRESS, protocol: RuleProtocol.TCP, portRangeMin: 22 }, { direction: RuleDirection.INGRESS, protocol: RuleProtocol.ICMP }], memberIps: [VM.a.ip, VM.b.ip] },
      generation: 1n,
    });
    const st = await c[k].net.applyNetwork({
      spec: {
        networkId: NET,
        vni: 4343,
        mtu: 1450,
        localUnderlayAddress: caps.underlayAddress,
        peerUnderlayAddresses: [VM[other].underlay],
        subnets: [{ cidr: "10.40.0.0/24", gatewayIp: "10.40.0.1", dhcpEnabled: true, serviceAddress: VM[k].service }],
        ports: [{ portId: VM[k].port, macAddress: VM[k].mac, fixedIps: [VM[k].ip], securityGroupIds: [SG], hostname: VM[k].name }],
        remotePorts: [{ macAddress: VM[other].mac, underlayAddress: VM[other].underlay, ipAddresses: [VM[other].ip], hostname: VM[other].name }],
        dnsDomain: "probe.internal",
      },
      generation: 1n,
    });
    assert.equal(st.ports[0]?.state, PortState.ACTIVE, JSON.stringify(st.conditions));
  }
  const checks = {
    a: { ping: [VM.b.ip, NOBODY], tcp: [VM.b.ip, NOBODY], spoof: SPOOFED, dns: VM.b.name },
    b: { ping: [VM.a.ip], tcp: [VM.a.ip], dns: `${VM.a.name}.probe.internal` },
  };
  // Both guests boot at once: TCG boots take tens of seconds on a loaded machine.
  await Promise.all(
    (["a", "b"] as const).map(async (k) => {
      const boot = { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, kernelArgs: netProbeKernelArgs(checks[k]) };
      await c[k].vm.createVm({ vmId: VM[k].name, config: { cpu: { vcpuCount: 1 }, memory: { sizeBytes: 192n << 20n }, boot, network: [{ id: "nic0", macAddress: VM[k].mac, portId: VM[k].port }] } });
      await c[k].vm.bootVm({ vmId: VM[k].name });
    }),
  );
  const settled = (k: "a" | "b", done: (p: NetProbeConsole) => boolean) =>
    until(
      async () => {
        const p = parseNetProbeConsole(await consoleText(agents[k]!.backend, VM[k].name));
        return done(p) ? p : undefined;
      },
      `guest ${k}'s checks`,
      300_000,
      500,
    ).catch(async (err: unknown) => {
      throw new Error(`${String(err)}; its console ended with: ${(await consoleText(agents[k]!.backend, VM[k].name)).slice(-1500)}`);
    });
  const [a, b] = await Promise.all([
    settled("a", (p) => p.round?.ping[VM.b.ip] === true && p.round.tcp[VM.b.ip] === true && p.round.dns[VM.b.name] !== "fail" && p.round.dns[VM.b.name] !== undefined),
    settled("b", (p) => p.round?.ping[VM.a.ip] === true && p.round.tcp[VM.a.ip] === true && p.round.dns[checks.b.dns] !== "fail" && p.round.dns[checks.b.dns] !== undefined),
  ]);
  assert.deepEqual(a.lease, { ip: VM.a.ip, router: "10.40.0.1", dns: VM.a.service, hostname: VM.a.name, mtu: "1450" });
  assert.deepEqual(b.lease, { ip: VM.b.ip, router: "10.40.0.1", dns: VM.b.service, hostname: VM.b.name, mtu: "1450" });
  assert.equal(a.listening && b.listening, true);
  // In the very round where the plain ping to b was answered, the one from a spoofed source was not.
  assert.deepEqual(a.round, { round: a.round!.round, ping: { [VM.b.ip]: true, [NOBODY]: false }, tcp: { [VM.b.ip]: true, [NOBODY]: false }, spoof: { [VM.b.ip]: false }, dns: { [VM.b.name]: VM.b.ip } });
  assert.deepEqual(b.round, { round: b.round!.round, ping: { [VM.a.ip]: true }, tcp: { [VM.a.ip]: true }, spoof: {}, dns: { [checks.b.dns]: VM.a.ip } });
});
