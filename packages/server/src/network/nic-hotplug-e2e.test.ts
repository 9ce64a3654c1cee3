import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Code, createClient } from "@connectrpc/connect";
import { VmStatus_State as State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { NetworkType } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { VirtualNetworkService } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { PortState } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { PortService } from "@quantix/api/gen/Quantixkvm/network/v1/port_service_pb.js";
import { QemuBackend } from "@quantix/agent";
import { buildTestGuest, consoleText, ensureDebianPackages, rejection, startTestServer, TestAgent, until, type TestGuest, type TestServer } from "@quantix/testing";

// Issue 14's NIC hot-plug end to end, through the API only: one host simulated as a
// network namespace with its agent (data plane and QEMU in it). A running VM without NICs
// gets one with UpdateVM: its new port is set up on the VM's node by the network
// controller, then the VM controller plugs the NIC into the running guest (AttachNic);
// removing it unplugs it (DetachNic) and the port goes. What the guest was given is read
// from the agent's side (QMP query-rx-filter: the NIC and its MAC), as the busybox guest
// configures no hot-plugged interface. One QEMU boot.

const P = `qxh${(process.pid & 0xffff).toString(16)}`;
const sh = (args: string[]) => execFileSync(args[0]!, args.slice(1), { stdio: ["ignore", "pipe", "pipe"], timeout: 15_000 }).toString();

let s: TestServer | undefined;
let dir: string;
let guest: TestGuest;
let agent: TestAgent<QemuBackend> | undefined;
let nodeId = "";

before(async () => {
  await ensureDebianPackages(["qemu-system-x86", "iproute2", "nftables", "dnsmasq-base", "busybox-static", "cpio"]);
  guest = await buildTestGuest();
  dir = await mkdtemp(join(tmpdir(), "quantix-nic-e2e-"));
  sh(["ip", "netns", "add", P]);
  sh(["ip", "-n", P, "link", "set", "lo", "up"]);
  // An underlay address for the host (a veth pair inside the namespace: no peer host here).
  sh(["ip", "-n", P, "link", "add", `${P}u1`, "type", "veth", "peer", "name", `${P}u2`]);
  sh(["ip", "-n", P, "addr", "add", "192.0.2.21/24", "dev", `${P}u1`]);
  sh(["ip", "-n", P, "link", "set", `${P}u1`, "up"]);
  sh(["ip", "-n", P, "link", "set", `${P}u2`, "up"]);
  s = await startTestServer({ demo: false });
  agent = new TestAgent(new QemuBackend({ stateDir: join(dir, "qemu"), kvm: false, netns: P }), dir, `${P}-a`, { imageDirs: [guest.imageDir], network: { netns: P, underlayAddress: "192.0.2.21" } });
  await agent.start(s.url);
  nodeId = await until(async () => (await s!.nodes.listNodes({})).nodes.find((n) => n.hostname === `${P}-a` && n.status?.hypervisor?.capabilities.includes("network-vxlan"))?.id, "the node registered with its network capabilities", 30_000, 100);
});

after(async () => {
  if (agent) {
    for (const vm of await agent.backend.listVMs().catch(() => [])) await agent.backend.deleteVM(vm.vmId).catch(() => undefined);
    await agent.stop().catch(() => undefined);
    await agent.backend.close();
  }
  await s?.close();
  try {
    sh(["ip", "netns", "del", P]);
  } catch {
    // already gone
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

test("UpdateVM hot-plugs a NIC on a new port into a running VM once the port is ACTIVE on its node, and hot-unplugs it when removed", { timeout: 300_000 }, async () => {
  const nets = createClient(VirtualNetworkService, s!.transport);
  const ports = createClient(PortService, s!.transport);
  assert.ok((await s!.nodes.getNode({ id: nodeId })).status?.hypervisor?.capabilities.includes("nic-hotplug"), "the QEMU agent registers nic-hotplug");
  const net = await nets.createVirtualNetwork({ name: "hot", spec: { type: NetworkType.VXLAN, cidr: "10.42.0.0/24" } });
  const spec = { cpu: { cores: 1 }, memory: { sizeMib: 256n }, boot: { directBoot: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, cmdline: guest.kernelArgs } }, placement: { requiredNodeIds: [nodeId] } };
  const vm = await s!.vms.createVM({ name: "hot", spec, startOnCreate: true });
  await until(async () => ((await s!.vms.getVM({ id: vm.id })).status?.state === State.RUNNING ? true : undefined), "the VM RUNNING", 120_000, 200);
  // ACPI hot-plug needs the guest up.
  await until(async () => (/quantix-tick 3\b/.test(await consoleText(agent!.backend, vm.id)) ? true : undefined), "the guest booted", 120_000, 200);
  const rx = async () => (await agent!.backend.executeQmp<{ name: string; "main-mac": string }[]>(vm.id, "query-rx-filter")).map((f) => f["main-mac"]);
  assert.deepEqual(await rx(), []);

  // A changed NIC is refused in place; a new one goes in.
  const up = await s!.vms.updateVM({ id: vm.id, spec: { ...spec, nics: [{ id: "eth0", networkId: net.id }] }, updateMask: { paths: ["spec.nics"] } });
  const nic = up.spec!.nics[0]!;
  const port = await until(async () => {
    const p = await ports.getPort({ id: nic.portId });
    return p.status?.state === PortState.ACTIVE && p.status.nodeId === nodeId ? p : undefined;
  }, "the new port ACTIVE on the VM's node", 60_000, 200);
  assert.equal(port.spec!.ownerVmId, vm.id);
  await until(async () => ((await rx()).includes(nic.macAddress) ? true : undefined), "the NIC plugged into the running guest", 60_000, 200);
  const plugged = await until(async () => {
    const v = await s!.vms.getVM({ id: vm.id });
    return v.status?.conditions.some((c) => c.type === "NicsPlugged") ? undefined : v;
  }, "no NicsPlugged=False left", 30_000, 200);
  assert.equal(plugged.status?.state, State.RUNNING, "the guest kept running");
  assert.deepEqual(plugged.status?.nics.map((n) => [n.id, n.portId]), [["eth0", port.id]], "the VM's status lists the NIC its node has");
  const cfg = await agent!.backend.getVMInfo(vm.id);
  assert.deepEqual(cfg.config.network.map((n) => [n.id, n.portId, n.tapDevice]), [["eth0", port.id, port.status!.tapDevice]], "the agent's config has the NIC on the port's TAP");
  const moved = await rejection(s!.vms.updateVM({ id: vm.id, spec: { ...spec, nics: [{ id: "eth0", networkId: net.id, macAddress: "52:54:00:0a:0b:0c" }] }, updateMask: { paths: ["spec.nics"] } }));
  assert.equal(moved.code, Code.InvalidArgument, moved.message);

  // Removed: unplugged from the guest, the VM's own port deleted, the network off the node.
  // The port (and its TAP) stays until the guest let the NIC go: when the port is gone, the NIC is.
  await s!.vms.updateVM({ id: vm.id, spec: { ...spec, nics: [] }, updateMask: { paths: ["spec.nics"] } });
  await until(async () => ((await rejection(ports.getPort({ id: port.id }))).code === Code.NotFound ? true : undefined), "the NIC's own port deleted", 90_000, 50);
  assert.deepEqual(await rx(), [], "unplugged from the guest before its port went");
  assert.equal((await agent!.backend.getVMInfo(vm.id)).config.network.length, 0);
  assert.deepEqual((await s!.vms.getVM({ id: vm.id })).status?.nics, []);
  assert.equal((await s!.vms.getVM({ id: vm.id })).status?.state, State.RUNNING);
  await s!.vms.deleteVM({ id: vm.id, force: true });
  await until(async () => nets.deleteVirtualNetwork({ id: net.id }).then(() => true, () => undefined), "the network deleted once no VM port is left", 60_000, 200);
});
