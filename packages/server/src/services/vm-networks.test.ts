import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, createClient, type Client, type ConnectError } from "@connectrpc/connect";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { NetworkType } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { VirtualNetworkService } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { PortDeviceOwner } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { PortService } from "@quantix/api/gen/Quantixkvm/network/v1/port_service_pb.js";
import { SecurityGroupService } from "@quantix/api/gen/Quantixkvm/network/v1/security_group_service_pb.js";
import { VmStatus_State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { ON_SIMULATED_NODES, rejection, startTestServer, until, type TestServer } from "@quantix/testing";

const WEB = "11111111-1111-1111-1111-111111111111";
const spec = { cpu: { cores: 1 }, memory: { sizeMib: 512n } };
const fields = (e: ConnectError) => e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));

// A VM's NICs on virtual networks, through the real API (memory store, the demo's
// simulated hosts, which have no network data plane): CreateVM makes or binds the NICs'
// ports in its own commit, refuses bad references naming the field, and the network
// controller deletes a VM's own ports (and unbinds others) when the VM goes.
describe("VM NICs on virtual networks", () => {
  let s: TestServer;
  let nets: Client<typeof VirtualNetworkService>;
  let ports: Client<typeof PortService>;
  let groups: Client<typeof SecurityGroupService>;
  let netId: string;

  before(async () => {
    s = await startTestServer();
    nets = createClient(VirtualNetworkService, s.transport);
    ports = createClient(PortService, s.transport);
    groups = createClient(SecurityGroupService, s.transport);
    netId = (await nets.createVirtualNetwork({ name: "vmnets", spec: { type: NetworkType.VXLAN, cidr: "10.60.0.0/24" } })).id;
  });
  after(() => s.close());

  it("CreateVM with a NIC naming a network makes the VM's own port, bound to the NIC, in the same commit", async () => {
    const before = (await nets.getVirtualNetwork({ id: netId })).status!.portCount;
    const vm = await s.vms.createVM({ name: "nic-vm", spec: { ...spec, nics: [{ id: "eth0", networkId: netId }] } });
    const nic = vm.spec!.nics[0]!;
    assert.match(nic.portId, /^[0-9a-f-]{36}$/);
    assert.match(nic.macAddress, /^52:54:00(:[0-9a-f]{2}){3}$/);
    const port = await ports.getPort({ id: nic.portId });
    assert.equal(port.spec!.ownerVmId, vm.id);
    assert.equal(port.spec!.macAddress, nic.macAddress);
    assert.equal(port.spec!.networkId, netId);
    assert.equal(port.spec!.fixedIps.length, 1);
    assert.equal(port.spec!.securityGroupIds.length, 1, "the project's default group");
    assert.equal(port.status!.deviceOwner, PortDeviceOwner.VM);
    assert.equal(port.status!.deviceId, vm.id);
    assert.equal(port.status!.nicId, "eth0");
    assert.equal((await nets.getVirtualNetwork({ id: netId })).status!.portCount, before + 1);
    // A port a VM uses cannot be deleted.
    const err = await rejection(ports.deletePort({ id: port.id }));
    assert.equal(err.code, Code.FailedPrecondition, err.message);
    // Deleting the VM deletes its own port (the network controller, once the VM is gone) and frees the address.
    await s.vms.deleteVM({ id: vm.id });
    await until(async () => ((await rejection(ports.getPort({ id: port.id }))).code === Code.NotFound ? true : undefined), "the VM's port is deleted", 15_000, 50);
    assert.equal((await nets.getVirtualNetwork({ id: netId })).status!.portCount, before);
  });

  it("a VM's own ports are unnamed and claim no name: two NICs on one network beside a named port, deleted with the VM, the counts kept", async () => {
    const named = await ports.createPort({ name: "beside", spec: { networkId: netId } });
    const vm = await s.vms.createVM({ name: "two-nics", spec: { ...spec, nics: [{ id: "eth0", networkId: netId }, { id: "eth1", networkId: netId }] } });
    const own = await Promise.all(vm.spec!.nics.map((n) => ports.getPort({ id: n.portId })));
    assert.deepEqual(own.map((p) => p.name), ["", ""]);
    await s.vms.deleteVM({ id: vm.id });
    for (const p of own) await until(async () => ((await rejection(ports.getPort({ id: p.id }))).code === Code.NotFound ? true : undefined), "the VM's port is deleted", 15_000, 50);
    const taken = await rejection(ports.createPort({ name: "beside", spec: { networkId: netId } }));
    assert.equal(taken.code, Code.AlreadyExists, taken.message);
    assert.match(taken.rawMessage, new RegExp(named.id));
    await ports.deletePort({ id: named.id });
    const again = await ports.createPort({ name: "beside", spec: { networkId: netId } });
    const n = (await nets.getVirtualNetwork({ id: netId })).status!;
    assert.equal(n.allocatedIpCount, n.portCount + 1, "names are not addresses");
    await ports.deletePort({ id: again.id });
  });

  it("a NIC naming an existing port binds it; a second VM naming it is FAILED_PRECONDITION; the port is unbound when its VM goes", async () => {
    const port = await ports.createPort({ name: "pre", spec: { networkId: netId, fixedIps: ["10.60.0.77"] } });
    const vm = await s.vms.createVM({ name: "port-vm", spec: { ...spec, nics: [{ id: "eth0", portId: port.id }] } });
    assert.equal(vm.spec!.nics[0]!.networkId, netId);
    assert.equal(vm.spec!.nics[0]!.macAddress, port.spec!.macAddress);
    const bound = await ports.getPort({ id: port.id });
    assert.equal(bound.status!.deviceId, vm.id);
    const err = await rejection(s.vms.createVM({ name: "thief", spec: { ...spec, nics: [{ id: "eth0", portId: port.id }] } }));
    assert.equal(err.code, Code.FailedPrecondition, err.message);
    assert.match(err.rawMessage, new RegExp(`spec\\.nics\\[0\\]\\.port_id: port '${port.id}' is used by VM '${vm.id}'`));
    assert.equal((await s.vms.listVMs({})).vms.some((v) => v.name === "thief"), false);
    await s.vms.deleteVM({ id: vm.id });
    const freed = await until(async () => {
      const p = await ports.getPort({ id: port.id });
      return p.status!.deviceId === "" ? p : undefined;
    }, "the port is unbound", 15_000, 50);
    assert.equal(freed.spec!.fixedIps[0], "10.60.0.77", "a port made with CreatePort outlives the VM");
    await ports.deletePort({ id: port.id });
  });

  it("bad NIC references are refused naming the field, and nothing is created", async () => {
    const countBefore = (await nets.getVirtualNetwork({ id: netId })).status!.portCount;
    const missing = await rejection(s.vms.createVM({ name: "nic-bad", spec: { ...spec, nics: [{ id: "eth0", networkId: "0a0a0a0a-0000-4000-8000-000000000000" }] } }));
    assert.equal(missing.code, Code.NotFound, missing.message);
    assert.match(missing.rawMessage, /spec\.nics\[0\]\.network_id: virtual network '0a0a0a0a-0000-4000-8000-000000000000' not found/);
    const badGroup = await rejection(s.vms.createVM({ name: "nic-bad", spec: { ...spec, nics: [{ id: "eth0", networkId: netId, securityGroups: ["0b0b0b0b-0000-4000-8000-000000000000"] }] } }));
    assert.equal(badGroup.code, Code.InvalidArgument, badGroup.message);
    assert.deepEqual(fields(badGroup), ["spec.nics[0].security_groups[0]"]);
    const port = await ports.createPort({ spec: { networkId: netId } });
    const contradict = await rejection(s.vms.createVM({ name: "nic-bad", spec: { ...spec, nics: [{ id: "eth0", portId: port.id, macAddress: "02:00:00:00:00:99", securityGroups: [(await groups.listSecurityGroups({})).securityGroups[0]!.id] }] } }));
    assert.equal(contradict.code, Code.InvalidArgument, contradict.message);
    assert.deepEqual(fields(contradict), ["spec.nics[0].mac_address", "spec.nics[0].security_groups"]);
    assert.equal((await s.vms.listVMs({})).vms.some((v) => v.name === "nic-bad"), false);
    await ports.deletePort({ id: port.id });
    assert.equal((await nets.getVirtualNetwork({ id: netId })).status!.portCount, countBefore);
  });

  it("a VM with a NIC on a port waits for a node with a network data plane: the demo's simulated hosts have none", async () => {
    const vm = await s.vms.createVM({ name: "nic-wait", spec: { ...spec, nics: [{ id: "eth0", networkId: netId }] }, startOnCreate: true });
    const seen = await until(async () => {
      const v = await s.vms.getVM({ id: vm.id });
      const c = v.status?.conditions.find((x) => x.type === "Scheduled");
      return c && /missing capability 'network-vxlan'/.test(c.message) ? v : undefined;
    }, "the scheduler says why", 15_000, 50);
    assert.equal(seen.status!.state, VmStatus_State.PENDING);
    await s.vms.deleteVM({ id: vm.id, force: true });
  });

  it("UpdateVM of a stopped VM adds NICs: a new VM-owned port for a network, an existing port bound, in the update's commit", async () => {
    const vm = await s.vms.createVM({ name: "cold-add", spec });
    const pre = await ports.createPort({ name: "cold-pre", spec: { networkId: netId } });
    const countBefore = (await nets.getVirtualNetwork({ id: netId })).status!.portCount;
    const up = await s.vms.updateVM({ id: vm.id, spec: { ...spec, nics: [{ id: "eth0", networkId: netId }, { id: "eth1", portId: pre.id }] }, updateMask: { paths: ["spec.nics"] } });
    const [eth0, eth1] = up.spec!.nics;
    assert.match(eth0!.portId, /^[0-9a-f-]{36}$/);
    const own = await ports.getPort({ id: eth0!.portId });
    assert.equal(own.spec!.ownerVmId, vm.id);
    assert.equal(own.spec!.macAddress, eth0!.macAddress);
    assert.equal(own.status!.deviceId, vm.id);
    assert.equal(own.status!.nicId, "eth0");
    assert.equal(eth1!.portId, pre.id);
    assert.equal(eth1!.networkId, netId);
    assert.equal(eth1!.macAddress, pre.spec!.macAddress);
    const bound = await ports.getPort({ id: pre.id });
    assert.equal(bound.status!.deviceId, vm.id);
    assert.equal(bound.status!.nicId, "eth1");
    assert.equal(bound.spec!.ownerVmId, "", "a port made with CreatePort stays the user's");
    assert.equal((await nets.getVirtualNetwork({ id: netId })).status!.portCount, countBefore + 1);

    // An update that sends the NICs back without their port fields keeps them (filled in from the stored NICs).
    const same = await s.vms.updateVM({ id: vm.id, description: "kept", spec: { ...spec, nics: [{ id: "eth0" , networkId: netId }, { id: "eth1", portId: pre.id }] } });
    assert.deepEqual(same.spec!.nics.map((n) => n.portId), [eth0!.portId, pre.id]);

    // Removing them: the VM's own port is deleted, the user's port unbound (the network controller).
    await s.vms.updateVM({ id: vm.id, spec: { ...spec, nics: [] }, updateMask: { paths: ["spec.nics"] } });
    await until(async () => ((await rejection(ports.getPort({ id: own.id }))).code === Code.NotFound ? true : undefined), "the removed NIC's own port is deleted", 15_000, 50);
    const freed = await until(async () => {
      const p = await ports.getPort({ id: pre.id });
      return p.status!.deviceId === "" ? p : undefined;
    }, "the removed NIC's port is unbound", 15_000, 50);
    assert.equal(freed.spec!.macAddress, pre.spec!.macAddress);
    assert.equal((await nets.getVirtualNetwork({ id: netId })).status!.portCount, countBefore);
    await s.vms.deleteVM({ id: vm.id });
    await ports.deletePort({ id: pre.id });
  });

  it("UpdateVM refuses changing a kept NIC's network, port or MAC, and bad added NICs, naming the field; nothing changes", async () => {
    const vm = await s.vms.createVM({ name: "cold-bad", spec: { ...spec, nics: [{ id: "eth0", networkId: netId }] } });
    const eth0 = vm.spec!.nics[0]!;
    const countBefore = (await nets.getVirtualNetwork({ id: netId })).status!.portCount;
    const moved = await rejection(s.vms.updateVM({ id: vm.id, spec: { ...spec, nics: [{ ...eth0, macAddress: "52:54:00:aa:bb:cc" }] }, updateMask: { paths: ["spec.nics"] } }));
    assert.equal(moved.code, Code.InvalidArgument, moved.message);
    assert.deepEqual(fields(moved), ["spec.nics[0].mac_address"]);
    assert.match(moved.rawMessage, /remove the NIC and add a new one/);
    const other = await ports.createPort({ spec: { networkId: netId } });
    const repointed = await rejection(s.vms.updateVM({ id: vm.id, spec: { ...spec, nics: [{ id: "eth0", portId: other.id }] }, updateMask: { paths: ["spec.nics"] } }));
    assert.equal(repointed.code, Code.InvalidArgument, repointed.message);
    assert.deepEqual(fields(repointed), ["spec.nics[0].port_id"], "the port's network and MAC are filled in from the stored NIC, the port is not");
    const missing = await rejection(s.vms.updateVM({ id: vm.id, spec: { ...spec, nics: [eth0, { id: "eth1", networkId: "0a0a0a0a-0000-4000-8000-000000000000" }] }, updateMask: { paths: ["spec.nics"] } }));
    assert.equal(missing.code, Code.NotFound, missing.message);
    assert.match(missing.rawMessage, /spec\.nics\[1\]\.network_id: virtual network '0a0a0a0a-0000-4000-8000-000000000000' not found/);
    const thief = await s.vms.createVM({ name: "cold-thief", spec });
    const taken = await rejection(s.vms.updateVM({ id: thief.id, spec: { ...spec, nics: [{ id: "eth0", portId: eth0.portId }] }, updateMask: { paths: ["spec.nics"] } }));
    assert.equal(taken.code, Code.FailedPrecondition, taken.message);
    assert.match(taken.rawMessage, new RegExp(`spec\\.nics\\[0\\]\\.port_id: port '${eth0.portId}' is used by VM '${vm.id}'`));
    assert.equal((await s.vms.getVM({ id: thief.id })).resourceVersion, thief.resourceVersion);
    await s.vms.deleteVM({ id: thief.id });
    const now = await s.vms.getVM({ id: vm.id });
    assert.equal(now.resourceVersion, vm.resourceVersion);
    assert.equal((await nets.getVirtualNetwork({ id: netId })).status!.portCount, countBefore + 1, "only the port made with CreatePort");
    await ports.deletePort({ id: other.id });
    await s.vms.deleteVM({ id: vm.id });
  });

  it("a running VM on a node without 'nic-hotplug' gets no NIC: FAILED_PRECONDITION naming the capability", async () => {
    // The demo's simulated nodes are tainted (this VM tolerates it) and declare no 'nic-hotplug'.
    const vm = await s.vms.createVM({ name: "hot-none", spec: { ...spec, placement: ON_SIMULATED_NODES } });
    assert.equal((await s.vms.startVM({ id: vm.id })).status?.state, VmStatus_State.RUNNING);
    const err = await rejection(s.vms.updateVM({ id: vm.id, spec: { ...spec, placement: ON_SIMULATED_NODES, nics: [{ id: "eth0", networkId: netId }] }, updateMask: { paths: ["spec.nics"] } }));
    assert.equal(err.code, Code.FailedPrecondition, err.message);
    assert.match(err.rawMessage, /lacks the 'nic-hotplug' capability; stop the VM first/);
    assert.equal((await s.vms.getVM({ id: vm.id })).spec!.nics.length, 0);
    assert.equal((await ports.listPorts({})).ports.some((p) => p.spec!.ownerVmId === vm.id), false, "no port left behind");
    await s.vms.deleteVM({ id: vm.id, force: true });
  });

  it("a demo VM stored with a NIC can still be updated where its NICs do not change", async () => {
    const up = await s.vms.updateVM({ id: WEB, description: "still the web server", updateMask: { paths: ["description"] } });
    assert.equal(up.description, "still the web server");
    assert.equal(up.spec?.nics.length, 1);
  });
});
