import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { NetworkType } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { VirtualNetworkService } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { PortService } from "@quantix/api/gen/Quantixkvm/network/v1/port_service_pb.js";
import { rejection, startTestServer, type TestServer } from "@quantix/testing";

// A network with several IPv4 subnets, through the real API on the memory store: the
// additional subnets' defaults, IPAM taking addresses from the first subnet with a free
// one, a full network grown by adding a subnet, a subnet in use kept, bad subnets refused
// with field paths and nothing written.

const fields = (e: ConnectError) => e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));

describe("networks with several subnets", () => {
  let s: TestServer;
  let nets: Client<typeof VirtualNetworkService>;
  let ports: Client<typeof PortService>;

  before(async () => {
    s = await startTestServer({ demo: false });
    nets = createClient(VirtualNetworkService, s.transport);
    ports = createClient(PortService, s.transport);
  });
  after(async () => s?.close());

  it("fills in an additional subnet's gateway and pools, and counts every subnet's addresses", async () => {
    const n = await nets.createVirtualNetwork({
      name: "two-subnets",
      spec: { type: NetworkType.VXLAN, cidr: "10.70.0.0/24", additionalSubnets: [{ cidr: "10.70.1.0/24" }, { cidr: "10.70.2.0/28", gatewayIp: "10.70.2.7", dnsServers: ["192.0.2.53"] }] },
    });
    const [one, two] = n.spec!.additionalSubnets;
    assert.equal(one!.gatewayIp, "10.70.1.1");
    assert.deepEqual(one!.allocationPools.map((p) => [p.start, p.end]), [["10.70.1.2", "10.70.1.254"]]);
    // A gateway in the middle splits the default pool in two.
    assert.deepEqual(two!.allocationPools.map((p) => [p.start, p.end]), [["10.70.2.1", "10.70.2.6"], ["10.70.2.8", "10.70.2.14"]]);
    assert.deepEqual(two!.dnsServers, ["192.0.2.53"]);
    // 253 + 253 + 13 assignable; three gateways.
    assert.deepEqual([n.status!.allocatedIpCount, n.status!.availableIpCount], [3, 519]);
    const fixed = await ports.createPort({ spec: { networkId: n.id, fixedIps: ["10.70.2.3", "10.70.1.9"] } });
    assert.deepEqual(fixed.spec!.fixedIps, ["10.70.2.3", "10.70.1.9"]);
    for (const [ip, why] of [["10.70.2.7", /subnet 10\.70\.2\.0\/28's gateway/], ["10.70.1.255", /broadcast/], ["10.70.3.1", /outside the network's subnets 10\.70\.0\.0\/24, 10\.70\.1\.0\/24, 10\.70\.2\.0\/28/]] as const) {
      const e = await rejection(ports.createPort({ spec: { networkId: n.id, fixedIps: [ip] } }));
      assert.equal(e.code, Code.InvalidArgument, e.message);
      assert.match(e.message, why);
    }
    const got = await nets.getVirtualNetwork({ id: n.id });
    assert.deepEqual([got.status!.portCount, got.status!.allocatedIpCount, got.status!.availableIpCount], [1, 5, 517]);
  });

  it("takes addresses from the first subnet until it is full, then the next; a full network grows by a subnet added, and a subnet in use is not removed", async () => {
    // /29: hosts .1-.6, gateway .1, range .2-.3: two addresses.
    const n = await nets.createVirtualNetwork({ name: "grows", spec: { type: NetworkType.VXLAN, cidr: "10.71.0.0/29", dhcp: { enabled: true, rangeStart: "10.71.0.2", rangeEnd: "10.71.0.3" } } });
    const first = await Promise.all([ports.createPort({ spec: { networkId: n.id } }), ports.createPort({ spec: { networkId: n.id } })]);
    assert.deepEqual(first.map((p) => p.spec!.fixedIps[0]).sort(), ["10.71.0.2", "10.71.0.3"]);
    const full = await rejection(ports.createPort({ spec: { networkId: n.id } }));
    assert.equal(full.code, Code.ResourceExhausted, full.message);
    assert.match(full.message, /subnet 10\.71\.0\.0\/29 \(DHCP range 10\.71\.0\.2-10\.71\.0\.3\)/);
    assert.match(full.message, /add a subnet with UpdateVirtualNetwork spec\.additional_subnets/);

    // Grown: a subnet with a pool of three addresses.
    const grown = await nets.updateVirtualNetwork({
      id: n.id,
      spec: { additionalSubnets: [{ cidr: "10.71.1.0/24", allocationPools: [{ start: "10.71.1.10", end: "10.71.1.12" }] }] },
      updateMask: { paths: ["spec.additional_subnets"] },
    });
    assert.equal(grown.spec!.additionalSubnets[0]!.gatewayIp, "10.71.1.1");
    // 5 + 253 assignable, 2 gateways, 2 addresses held.
    assert.deepEqual([grown.status!.allocatedIpCount, grown.status!.availableIpCount], [4, 256]);
    const more = await Promise.all([1, 2, 3].map(() => ports.createPort({ spec: { networkId: n.id } })));
    assert.deepEqual(more.map((p) => p.spec!.fixedIps[0]).sort(), ["10.71.1.10", "10.71.1.11", "10.71.1.12"]);
    const both = await rejection(ports.createPort({ spec: { networkId: n.id } }));
    assert.equal(both.code, Code.ResourceExhausted);
    assert.match(both.message, /subnet 10\.71\.0\.0\/29 .*subnet 10\.71\.1\.0\/24 \(pool 10\.71\.1\.10-10\.71\.1\.12\)/);
    // A fixed address outside the pool, inside the second subnet.
    const outside = await ports.createPort({ spec: { networkId: n.id, fixedIps: ["10.71.1.200"] } });

    // The second subnet is in use: removing it is refused, naming the ports; nothing changes.
    const busy = await rejection(nets.updateVirtualNetwork({ id: n.id, spec: { additionalSubnets: [] }, updateMask: { paths: ["spec.additional_subnets"] } }));
    assert.equal(busy.code, Code.FailedPrecondition, busy.message);
    assert.match(busy.message, new RegExp(outside.id));
    assert.match(busy.message, new RegExp(more[0]!.id));
    // A pool shrunk below the addresses taken from it is refused too.
    const shrink = await rejection(
      nets.updateVirtualNetwork({ id: n.id, spec: { additionalSubnets: [{ cidr: "10.71.1.0/24", allocationPools: [{ start: "10.71.1.10", end: "10.71.1.10" }] }] }, updateMask: { paths: ["spec.additional_subnets"] } }),
    );
    assert.equal(shrink.code, Code.FailedPrecondition, shrink.message);
    assert.equal((await nets.getVirtualNetwork({ id: n.id })).spec!.additionalSubnets.length, 1);

    // Once its ports are gone it goes, and the counts follow.
    for (const p of [...more, outside]) await ports.deletePort({ id: p.id });
    const shrunk = await nets.updateVirtualNetwork({ id: n.id, spec: { additionalSubnets: [] }, updateMask: { paths: ["spec.additional_subnets"] } });
    assert.deepEqual([shrunk.status!.portCount, shrunk.status!.allocatedIpCount, shrunk.status!.availableIpCount], [2, 3, 3]);
    assert.equal((await rejection(ports.createPort({ spec: { networkId: n.id, fixedIps: ["10.71.1.200"] } }))).code, Code.InvalidArgument);
  });

  it("refuses bad subnets with each field's path, writing nothing", async () => {
    const before = (await nets.listVirtualNetworks({})).totalCount;
    const bad = await rejection(
      nets.createVirtualNetwork({
        name: "bad-subnets",
        spec: {
          type: NetworkType.VXLAN,
          cidr: "10.72.0.0/16",
          additionalSubnets: [
            { cidr: "10.72.5.0/24" },
            { cidr: "10.73.0.0/24", gatewayIp: "10.74.0.1" },
            { cidr: "10.75.0.1/24" },
            { cidr: "10.76.0.0/24", allocationPools: [{ start: "10.76.0.1", end: "10.76.0.9" }, { start: "10.76.0.20", end: "10.76.0.10" }] },
            { cidr: "10.77.0.0/24", allocationPools: [{ start: "10.77.0.10", end: "10.77.0.20" }, { start: "10.77.0.15", end: "10.77.0.30" }, { start: "10.78.0.1", end: "10.78.0.2" }] },
            { cidr: "10.79.0.0/24", dnsServers: ["not-an-ip"] },
            { cidr: "" },
          ],
        },
      }),
    );
    assert.equal(bad.code, Code.InvalidArgument, bad.message);
    assert.deepEqual(fields(bad), [
      "spec.additional_subnets[0].cidr",
      "spec.additional_subnets[1].gateway_ip",
      "spec.additional_subnets[2].cidr",
      "spec.additional_subnets[3].allocation_pools[0].start",
      "spec.additional_subnets[3].allocation_pools[1].end",
      "spec.additional_subnets[4].allocation_pools[1].start",
      "spec.additional_subnets[4].allocation_pools[2].start",
      "spec.additional_subnets[4].allocation_pools[2].end",
      "spec.additional_subnets[5].dns_servers[0]",
      "spec.additional_subnets[6].cidr",
    ]);
    assert.match(bad.message, /10\.72\.5\.0\/24 overlaps 10\.72\.0\.0\/16 \(spec\.cidr\)/);
    assert.match(bad.message, /contains the subnet's gateway 10\.76\.0\.1/);
    const many = await rejection(
      nets.createVirtualNetwork({ name: "many", spec: { type: NetworkType.VXLAN, cidr: "10.80.0.0/24", additionalSubnets: Array.from({ length: 8 }, (_, i) => ({ cidr: `10.80.${i + 1}.0/24` })) } }),
    );
    assert.deepEqual(fields(many), ["spec.additional_subnets"]);
    // A host route's next hop may be in any of the subnets, not outside them.
    const routes = await nets.createVirtualNetwork({
      name: "routes",
      spec: { type: NetworkType.VXLAN, cidr: "10.81.0.0/24", additionalSubnets: [{ cidr: "10.81.1.0/24" }], dhcp: { enabled: true, hostRoutes: [{ destinationCidr: "192.168.0.0/16", nextHopIp: "10.81.1.254" }] } },
    });
    assert.equal(routes.spec!.dhcp!.hostRoutes[0]!.nextHopIp, "10.81.1.254");
    const hop = await rejection(nets.updateVirtualNetwork({ id: routes.id, spec: { dhcp: { enabled: true, hostRoutes: [{ destinationCidr: "192.168.0.0/16", nextHopIp: "10.82.0.1" }] } }, updateMask: { paths: ["spec.dhcp"] } }));
    assert.deepEqual(fields(hop), ["spec.dhcp.host_routes[0].next_hop_ip"]);
    assert.equal((await nets.listVirtualNetworks({})).totalCount, before + 1);
  });

  it("routed networks may not overlap in any of their subnets", async () => {
    await nets.createVirtualNetwork({ name: "routed-a", spec: { type: NetworkType.VXLAN, cidr: "10.90.0.0/24", additionalSubnets: [{ cidr: "10.90.1.0/24" }], router: { snatEnabled: true } } });
    const e = await rejection(nets.createVirtualNetwork({ name: "routed-b", spec: { type: NetworkType.VXLAN, cidr: "10.91.0.0/24", additionalSubnets: [{ cidr: "10.90.1.128/25" }], router: { snatEnabled: true } } }));
    assert.equal(e.code, Code.InvalidArgument);
    assert.match(e.message, /10\.90\.1\.128\/25 overlaps 10\.90\.1\.0\/24/);
    const b = await nets.createVirtualNetwork({ name: "routed-b", spec: { type: NetworkType.VXLAN, cidr: "10.91.0.0/24", router: { snatEnabled: true } } });
    // Growing a routed network into another's subnet is refused the same way.
    const grow = await rejection(nets.updateVirtualNetwork({ id: b.id, spec: { additionalSubnets: [{ cidr: "10.90.0.0/23" }] }, updateMask: { paths: ["spec.additional_subnets"] } }));
    assert.equal(grow.code, Code.InvalidArgument);
    assert.match(grow.message, /overlaps 10\.90\.0\.0\/24/);
  });
});
