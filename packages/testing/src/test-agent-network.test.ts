import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { NetworkService, PortState } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { VmService } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { isProcessAlive, SimulatedBackend } from "@quantix/agent";
import { ensureDebianPackages } from "./guest.js";
import { TestAgent } from "./test-agent.js";
import { startTestServer, type TestServer } from "./test-server.js";
import { until } from "./until.js";

// A TestAgent given `network`: a host simulated as a namespace, its data plane served as
// NetworkService, VM NICs on ports' TAPs, the network features registered on its node.

const NS = `qxa${(process.pid & 0xffff).toString(16)}n`;
const NET = "0a000000-0000-4000-8000-0000000000a1";
const PORT = "c1000000-0000-4000-8000-0000000000a1";
const MAC = "02:00:00:00:00:a1";
const sh = (args: string[]) => execFileSync(args[0]!, args.slice(1), { stdio: ["ignore", "pipe", "pipe"], timeout: 15_000 }).toString();
let s: TestServer | undefined;
let dir: string;
let agent: TestAgent<SimulatedBackend>;

before(async () => {
  await ensureDebianPackages(["iproute2", "nftables", "dnsmasq-base"]);
  sh(["ip", "netns", "add", NS]);
  sh(["ip", "-n", NS, "link", "set", "lo", "up"]);
  // The host's underlay: a veth pair inside the namespace with one global address.
  sh(["ip", "-n", NS, "link", "add", `${NS}u`, "type", "veth", "peer", "name", `${NS}v`]);
  sh(["ip", "-n", NS, "addr", "add", "192.0.2.10/24", "dev", `${NS}u`]);
  for (const l of [`${NS}u`, `${NS}v`]) sh(["ip", "-n", NS, "link", "set", l, "up"]);
  s = await startTestServer({ demo: false });
  dir = await mkdtemp(join(tmpdir(), "quantix-test-agent-net-"));
  agent = new TestAgent(new SimulatedBackend({ bootMs: 20 }), dir, `net-agent-${process.pid}`, { heartbeatMs: 100, network: { netns: NS } });
  await agent.start(s.url);
});

after(async () => {
  await agent?.stop().catch(() => undefined);
  await agent?.backend.close();
  await s?.close();
  try {
    sh(["ip", "netns", "del", NS]);
  } catch {
    // already gone
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

test("a TestAgent with network: underlay address, node capabilities, ports' TAPs for VMs, dnsmasq stopped by stop()", async () => {
  const transport = createGrpcTransport({ baseUrl: agent.server.url });
  const net = createClient(NetworkService, transport);
  const caps = await net.getNetworkCapabilities({});
  assert.equal(caps.underlayAddress, "192.0.2.10");
  assert.equal(caps.features.find((f) => f.name === "network-vxlan")?.available, true);

  const node = await until(async () => {
    const n = (await s!.nodes.listNodes({})).nodes.find((x) => x.hostname === agent.name);
    return n?.status?.hypervisor?.capabilities.includes("network-vxlan") ? n : undefined;
  }, "the node registered with the network features");
  for (const f of ["network-dhcp", "network-security-groups"]) assert.ok(node.status?.hypervisor?.capabilities.includes(f), f);
  // From here the test drives the agent's NetworkService itself: the control plane goes, or
  // its network controller would delete the network below (no plan of its wants it).
  await s!.close();
  s = undefined;

  const st = await net.applyNetwork({
    spec: {
      networkId: NET,
      vni: 4301,
      localUnderlayAddress: caps.underlayAddress,
      peerUnderlayAddresses: ["192.0.2.11"],
      subnets: [{ cidr: "10.30.0.0/24", gatewayIp: "10.30.0.1", dhcpEnabled: true, serviceAddress: "10.30.0.2" }],
      ports: [{ portId: PORT, macAddress: MAC, fixedIps: ["10.30.0.5"], hostname: "one" }],
    },
    generation: 1n,
  });
  assert.equal(st.ports[0]?.state, PortState.ACTIVE, JSON.stringify(st.conditions));
  assert.ok(st.dnsmasqPid > 0);
  assert.ok(sh(["ip", "-n", NS, "link", "show"]).includes(st.ports[0]!.tapDevice), "the TAP is in the agent's namespace");

  const vms = createClient(VmService, transport);
  const kernelPath = await agent.image("vmlinuz");
  await vms.createVm({ vmId: "netvm", config: { cpu: { vcpuCount: 1 }, memory: { sizeBytes: 128n << 20n }, boot: { kernelPath }, network: [{ id: "nic0", macAddress: MAC, portId: PORT }] } });
  assert.equal((await vms.getVmInfo({ vmId: "netvm" })).config?.network[0]?.tapDevice, st.ports[0]!.tapDevice);
  await vms.deleteVm({ vmId: "netvm" });

  await agent.stop();
  assert.ok(await until(() => (!isProcessAlive(st.dnsmasqPid) ? true : undefined), "dnsmasq stopped", 10_000));
});
