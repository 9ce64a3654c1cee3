import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { VirtualMachineSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { PortDeviceOwner, PortSchema } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { NetworkType, VirtualNetworkSchema } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { GatewayMode } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { planNodes, type PlanInput } from "./network-plan.js";

// The plan's part of routers: a network with a router gets a gateway on every node that
// has it, NAT when snat_enabled, ROUTED otherwise; without a router, none.

const NET = "0c000000-0000-4000-8000-000000000001";
const underlay = new Map([
  ["node-a", "192.0.2.1"],
  ["node-b", "192.0.2.2"],
]);

function input(router: { snatEnabled: boolean } | undefined): PlanInput {
  const network = create(VirtualNetworkSchema, {
    id: NET,
    name: "routed",
    spec: { type: NetworkType.VXLAN, cidr: "10.50.0.0/24", gatewayIp: "10.50.0.1", vni: 99, mtu: 1450, dhcp: { enabled: true, leaseSeconds: 86400 }, ...(router ? { router } : {}) },
  });
  const vmPort = (n: number, node: string) => ({
    port: create(PortSchema, { id: `c7000000-0000-4000-8000-00000000000${n}`, spec: { networkId: NET, macAddress: `52:54:00:00:00:0${n}`, fixedIps: [`10.50.0.1${n}`] }, status: { deviceOwner: PortDeviceOwner.VM, deviceId: `vm${n}` } }),
    vm: create(VirtualMachineSchema, { id: `vm${n}`, name: `vm${n}`, spec: { nics: [{ portId: `c7000000-0000-4000-8000-00000000000${n}` }] }, status: { nodeId: node } }),
  });
  const guests = [vmPort(1, "node-a"), vmPort(2, "node-b")];
  const dhcp = ["node-a", "node-b"].map((node, i) => create(PortSchema, { id: `d7000000-0000-4000-8000-00000000000${i}`, spec: { networkId: NET, fixedIps: [`10.50.0.${2 + i}`] }, status: { deviceOwner: PortDeviceOwner.DHCP, deviceId: node } }));
  return { networks: [network], ports: [...guests.map((g) => g.port), ...dhcp], groups: [], vms: guests.map((g) => g.vm) };
}

test("a router with snat_enabled: every node with the network gets a NAT gateway on the subnet's gateway_ip", () => {
  const plans = planNodes(input({ snatEnabled: true }), underlay);
  for (const node of ["node-a", "node-b"]) {
    const spec = plans.get(node)?.networks.get(NET);
    assert.deepEqual(spec?.gateway, { mode: GatewayMode.NAT }, node);
    assert.equal(spec?.subnets?.[0]?.gatewayIp, "10.50.0.1");
  }
});

test("a router without snat: ROUTED; no router: no gateway", () => {
  assert.deepEqual(planNodes(input({ snatEnabled: false }), underlay).get("node-a")?.networks.get(NET)?.gateway, { mode: GatewayMode.ROUTED });
  const none = planNodes(input(undefined), underlay).get("node-a")?.networks.get(NET);
  assert.ok(none, "the network is planned");
  assert.equal(none.gateway, undefined);
});
