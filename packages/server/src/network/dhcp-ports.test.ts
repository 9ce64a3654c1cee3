import assert from "node:assert/strict";
import { before, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ProjectSchema } from "@quantix/api/gen/Quantixkvm/identity/v1/project_pb.js";
import { PortDeviceOwner, type Port } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { CreatePortRequestSchema, DeletePortRequestSchema } from "@quantix/api/gen/Quantixkvm/network/v1/port_service_pb.js";
import { NetworkType } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { CreateVirtualNetworkRequestSchema, UpdateVirtualNetworkRequestSchema } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { addressAllocationId, allOf, DEFAULT_PROJECT_ID, NETWORK_ALLOCATION_KIND, PORT_KIND, PROJECT_KIND, randomIds, systemClock, VIRTUAL_NETWORK_KIND, type Resource } from "@quantix/core";
import { VirtualNetworkService } from "../services/network-service.js";
import { PortService, randomFraction } from "../services/port-service.js";
import { SecurityGroupService } from "../services/security-group-service.js";
import { MemoryStore } from "../store/memory-store.js";
import { ensureDhcpPort, reshapeDhcpPort } from "./dhcp-ports.js";
import { agentSubnets } from "./network-plan.js";

// The system's DHCP port of a (network, node) holds an address in every subnet of the
// network: made so, given one in a subnet added later (its other addresses kept, so the
// guests' DHCP server does not move), its address in a removed subnet released, and a
// subnet whose pools are full said so. The plan hands the agent one subnet each, with
// DHCP where the port has an address.

// The services over a memory store, without the network controller (which would remove
// a DHCP port of a node that does not exist, as it should).
const store = new MemoryStore();
const deps = () => ({ store, clock: systemClock, ids: randomIds });
const groupService = new SecurityGroupService(deps());
const ensureDefaultGroup = (projectId: string) => groupService.ensureDefault(projectId);
const netService = new VirtualNetworkService({ ...deps(), ensureDefaultGroup });
const portService = new PortService({ ...deps(), ensureDefaultGroup, random: randomFraction });
const nets = {
  createVirtualNetwork: (r: Parameters<typeof create<typeof CreateVirtualNetworkRequestSchema>>[1]) => netService.create(create(CreateVirtualNetworkRequestSchema, r)),
  updateVirtualNetwork: (r: Parameters<typeof create<typeof UpdateVirtualNetworkRequestSchema>>[1]) => netService.update(create(UpdateVirtualNetworkRequestSchema, r)),
  getVirtualNetwork: async (r: { id: string }) => (await store.of(VIRTUAL_NETWORK_KIND).get(r.id))!,
};
const ports = {
  createPort: (r: Parameters<typeof create<typeof CreatePortRequestSchema>>[1]) => portService.create(create(CreatePortRequestSchema, r)),
  deletePort: (r: { id: string }) => portService.delete(create(DeletePortRequestSchema, r)),
};

before(async () => {
  const now = timestampFromMs(Date.now());
  await store.of(PROJECT_KIND).create(create(ProjectSchema, { id: DEFAULT_PROJECT_ID, name: "default", createdAt: now, updatedAt: now }) as never, { actor: "test" });
});

const network = async (id: string) => (await store.of(VIRTUAL_NETWORK_KIND).get(id))!;
async function dhcpPortOf(networkId: string): Promise<Port & Resource> {
  for await (const p of allOf(store.of(PORT_KIND), { where: { network_id: networkId } })) if (p.status?.deviceOwner === PortDeviceOwner.DHCP) return p;
  throw new Error(`no DHCP port on ${networkId}`);
}

test("a DHCP port follows its network's subnets: one address each, the kept ones unchanged", async () => {
  const n = await nets.createVirtualNetwork({ name: "dhcp-follows", spec: { type: NetworkType.VXLAN, cidr: "10.110.0.0/24", additionalSubnets: [{ cidr: "10.110.1.0/24" }] } });
  assert.equal(await ensureDhcpPort(deps(), await network(n.id), "node-x"), undefined);
  const made = await dhcpPortOf(n.id);
  assert.equal(made.spec!.fixedIps.length, 2);
  assert.match(made.spec!.fixedIps[0]!, /^10\.110\.0\./);
  assert.match(made.spec!.fixedIps[1]!, /^10\.110\.1\./);
  assert.deepEqual((await reshapeDhcpPort(deps(), await network(n.id), made)).changed, false, "nothing to do");

  // A subnet added: the port gains an address there and keeps the others.
  await nets.updateVirtualNetwork({ id: n.id, spec: { additionalSubnets: [{ cidr: "10.110.1.0/24" }, { cidr: "10.110.2.0/24" }] }, updateMask: { paths: ["spec.additional_subnets"] } });
  assert.deepEqual(await reshapeDhcpPort(deps(), await network(n.id), made), { changed: true });
  const grown = await dhcpPortOf(n.id);
  assert.deepEqual(grown.spec!.fixedIps.slice(0, 2), made.spec!.fixedIps);
  assert.match(grown.spec!.fixedIps[2]!, /^10\.110\.2\./);
  let net = await nets.getVirtualNetwork({ id: n.id });
  assert.equal(net.status!.allocatedIpCount, 6, "three gateways, three DHCP addresses");

  // The plan: three agent subnets, each with DHCP on the port's address there.
  const subnets = agentSubnets(await network(n.id), grown.spec!.fixedIps);
  assert.deepEqual(
    subnets.map((x) => [x.cidr, x.gatewayIp, x.serviceAddress, x.dhcpEnabled]),
    [
      ["10.110.0.0/24", "10.110.0.1", grown.spec!.fixedIps[0], true],
      ["10.110.1.0/24", "10.110.1.1", grown.spec!.fixedIps[1], true],
      ["10.110.2.0/24", "10.110.2.1", grown.spec!.fixedIps[2], true],
    ],
  );
  // Without an address in a subnet, that subnet gets no DHCP on the node.
  assert.deepEqual(agentSubnets(await network(n.id), grown.spec!.fixedIps.slice(0, 1)).map((x) => x.dhcpEnabled), [true, false, false]);

  // A subnet removed (no user port holds an address there): the DHCP port's address in it is released.
  await nets.updateVirtualNetwork({ id: n.id, spec: { additionalSubnets: [{ cidr: "10.110.2.0/24" }] }, updateMask: { paths: ["spec.additional_subnets"] } });
  assert.deepEqual(await reshapeDhcpPort(deps(), await network(n.id), grown), { changed: true });
  const shrunk = await dhcpPortOf(n.id);
  assert.deepEqual(shrunk.spec!.fixedIps, [grown.spec!.fixedIps[0], grown.spec!.fixedIps[2]]);
  net = await nets.getVirtualNetwork({ id: n.id });
  assert.deepEqual([net.status!.allocatedIpCount, net.status!.availableIpCount], [4, 253 + 253 - 2]);
  // Its allocation record is gone with it.
  assert.equal(await store.of(NETWORK_ALLOCATION_KIND).get(addressAllocationId(n.id, grown.spec!.fixedIps[1]!)), undefined);
  assert.ok(await store.of(NETWORK_ALLOCATION_KIND).get(addressAllocationId(n.id, grown.spec!.fixedIps[2]!)));
});

test("a subnet whose pool is full gives the DHCP port no address there, and says so", async () => {
  const n = await nets.createVirtualNetwork({ name: "dhcp-full", spec: { type: NetworkType.VXLAN, cidr: "10.111.0.0/24" } });
  assert.equal(await ensureDhcpPort(deps(), await network(n.id), "node-y"), undefined);
  const port = await dhcpPortOf(n.id);
  await nets.updateVirtualNetwork({ id: n.id, spec: { additionalSubnets: [{ cidr: "10.111.1.0/24", allocationPools: [{ start: "10.111.1.5", end: "10.111.1.5" }] }] }, updateMask: { paths: ["spec.additional_subnets"] } });
  const taker = await ports.createPort({ spec: { networkId: n.id, fixedIps: ["10.111.1.5"] } });
  const out = await reshapeDhcpPort(deps(), await network(n.id), port);
  assert.equal(out.changed, false);
  assert.match(out.problem ?? "", /has no address in subnet 10\.111\.1\.0\/24 \(its pools are full\): guests there get no DHCP lease/);
  // Freed: the next pass gives it the address.
  await ports.deletePort({ id: taker.id });
  assert.deepEqual(await reshapeDhcpPort(deps(), await network(n.id), port), { changed: true });
  assert.deepEqual((await dhcpPortOf(n.id)).spec!.fixedIps.slice(1), ["10.111.1.5"]);
});
