import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { FloatingIpState } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_pb.js";
import { FloatingIpService } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_service_pb.js";
import { PortService } from "@quantix/api/gen/Quantixkvm/network/v1/port_service_pb.js";
import { NetworkType, type VirtualNetwork } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { CreateVirtualNetworkRequestSchema, VirtualNetworkService } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { ProjectService } from "@quantix/api/gen/Quantixkvm/identity/v1/project_service_pb.js";
import { QuotaService } from "@quantix/api/gen/Quantixkvm/quota/v1/quota_service_pb.js";
import { randomIds, systemClock } from "@quantix/core";
import { rejection, startTestServer, until, type TestServer } from "@quantix/testing";
import { VirtualNetworkService as Networks } from "./network-service.js";

// Floating IPs and EXTERNAL networks over the real API (memory store): an EXTERNAL network
// only where a node maps a physical network (this server has no node, so one made here
// goes through the service with the nodes' support given), addresses from its pool never
// given twice, the project's floating_ips quota, and associations checked field by field,
// made through a network's central router (which no node here can host: the floating IP
// and the network say so), moved, and dropped with their port.

const fields = (e: ConnectError) => e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));

describe("floating IPs and EXTERNAL networks", () => {
  let s: TestServer;
  let nets: Client<typeof VirtualNetworkService>;
  let fips: Client<typeof FloatingIpService>;
  let ports: Client<typeof PortService>;
  let ext: VirtualNetwork;

  before(async () => {
    s = await startTestServer({ demo: false });
    nets = createClient(VirtualNetworkService, s.transport);
    fips = createClient(FloatingIpService, s.transport);
    ports = createClient(PortService, s.transport);
    // As if a node mapped physical network "ext": the same service the API runs, with the nodes' support answered.
    const withUplink = new Networks({ store: s.cp.store, clock: systemClock, ids: randomIds, featureSupport: async () => ({ supported: ["node-x"], reasons: [] }) });
    ext = await withUplink.create(create(CreateVirtualNetworkRequestSchema, { name: "public", spec: { type: NetworkType.EXTERNAL, cidr: "203.0.113.0/24", physicalNetwork: "ext", dhcp: { rangeStart: "203.0.113.10", rangeEnd: "203.0.113.12" } } }));
  });
  after(async () => s?.close());

  it("an EXTERNAL network needs a node with a physical network, a physical_network name, no VNI, router or DHCP", async () => {
    const none = await rejection(nets.createVirtualNetwork({ name: "public2", spec: { type: NetworkType.EXTERNAL, cidr: "198.51.100.0/24", physicalNetwork: "ext" } }));
    assert.equal(none.code, Code.InvalidArgument);
    assert.deepEqual(fields(none), ["spec.physical_network"]);
    assert.match(none.message, /no node maps physical network 'ext' \(network-uplink: a physical network mapped to a host interface\): the cluster has no nodes yet/);
    const bad = await rejection(nets.createVirtualNetwork({ name: "public3", spec: { type: NetworkType.EXTERNAL, cidr: "198.51.100.0/24", physicalNetwork: "Ext!", vni: 5, dhcp: { enabled: true }, router: { snatEnabled: true } } }));
    assert.deepEqual(fields(bad).sort(), ["spec.dhcp.enabled", "spec.physical_network", "spec.router", "spec.vni"]);
    assert.deepEqual(fields(await rejection(nets.createVirtualNetwork({ name: "public4", spec: { type: NetworkType.EXTERNAL, cidr: "198.51.100.0/24" } }))), ["spec.physical_network"]);
    // What the one made has: MTU 1500, DHCP off, no VNI; no port may be put on it.
    assert.deepEqual([ext.spec!.mtu, ext.spec!.dhcp!.enabled, ext.spec!.vni, ext.spec!.gatewayIp], [1500, false, 0, "203.0.113.1"]);
    const port = await rejection(ports.createPort({ spec: { networkId: ext.id } }));
    assert.equal(port.code, Code.FailedPrecondition);
    assert.match(port.message, /is EXTERNAL: it carries routers' and floating IPs' addresses, not ports/);
    // Only a system administrator makes one.
    const asMember = new Networks({ store: s.cp.store, clock: systemClock, ids: randomIds, featureSupport: async () => ({ supported: ["node-x"], reasons: [] }) });
    await assert.rejects(asMember.create(create(CreateVirtualNetworkRequestSchema, { name: "mine", spec: { type: NetworkType.EXTERNAL, cidr: "198.51.100.0/24", physicalNetwork: "ext" } }), false), /needs the system administrator role/);
  });

  it("allocates addresses from the pool, never one twice, then says the pool is full; a given address is taken as asked", async () => {
    const made = await Promise.allSettled(Array.from({ length: 6 }, () => fips.createFloatingIp({ externalNetworkId: ext.id, description: "web" })));
    const ok = made.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    const failed = made.flatMap((r) => (r.status === "rejected" ? [ConnectError.from(r.reason)] : []));
    assert.deepEqual(ok.map((f) => f.address).sort(), ["203.0.113.10", "203.0.113.11", "203.0.113.12"]);
    for (const e of failed) {
      assert.equal(e.code, Code.ResourceExhausted, e.message);
      assert.match(e.message, /subnet 203\.0\.113\.0\/24 \(DHCP range 203\.0\.113\.10-203\.0\.113\.12\)/);
    }
    for (const f of ok) {
      assert.equal(f.state, FloatingIpState.DOWN);
      assert.equal(f.portId, "");
      assert.equal(f.externalNetworkId, ext.id);
    }
    // A given address outside the pool (the local operator is a system administrator); taken, gateway, outside.
    const given = await fips.createFloatingIp({ externalNetworkId: ext.id, address: "203.0.113.50" });
    assert.equal(given.address, "203.0.113.50");
    const twice = await rejection(fips.createFloatingIp({ externalNetworkId: ext.id, address: "203.0.113.50" }));
    assert.equal(twice.code, Code.AlreadyExists);
    for (const [address, why] of [["203.0.113.1", /gateway/], ["198.51.100.7", /outside/], ["nope", /IPv4/]] as const) {
      const e = await rejection(fips.createFloatingIp({ externalNetworkId: ext.id, address }));
      assert.equal(e.code, Code.InvalidArgument, e.message);
      assert.deepEqual(fields(e), ["address"]);
      assert.match(e.message, why);
    }
    let net = await nets.getVirtualNetwork({ id: ext.id });
    assert.deepEqual([net.status!.allocatedIpCount, net.status!.availableIpCount], [5, 249]);
    assert.equal((await fips.listFloatingIps({ externalNetworkId: ext.id })).totalCount, 4);
    assert.equal((await fips.listFloatingIps({ address: "203.0.113.50" })).floatingIps[0]?.id, given.id);
    // Released: the address is free again, and the counts follow.
    await fips.deleteFloatingIp({ id: ok[0]!.id });
    assert.equal((await rejection(fips.getFloatingIp({ id: ok[0]!.id }))).code, Code.NotFound);
    const again = await fips.createFloatingIp({ externalNetworkId: ext.id });
    assert.equal(again.address, ok[0]!.address);
    net = await nets.getVirtualNetwork({ id: ext.id });
    assert.equal(net.status!.allocatedIpCount, 5);
    // Labels and description change; nothing else does.
    const upd = await fips.updateFloatingIp({ id: again.id, labels: { tier: "web" }, description: "front door", updateMask: { paths: ["labels", "description"] } });
    assert.deepEqual([upd.labels, upd.description, upd.address], [{ tier: "web" }, "front door", again.address]);
    for (const f of [...ok.slice(1), given, again]) await fips.deleteFloatingIp({ id: f.id });
    net = await nets.getVirtualNetwork({ id: ext.id });
    assert.equal(net.status!.allocatedIpCount, 1, "the gateway only");
  });

  it("refuses what is not an EXTERNAL network, and counts against the floating_ips quota", async () => {
    const overlay = await nets.createVirtualNetwork({ name: "inside", spec: { type: NetworkType.VXLAN, cidr: "10.120.0.0/24" } });
    const wrong = await rejection(fips.createFloatingIp({ externalNetworkId: overlay.id }));
    assert.deepEqual(fields(wrong), ["external_network_id"]);
    assert.match(wrong.message, /is VXLAN, not EXTERNAL/);
    const missing = await rejection(fips.createFloatingIp({ externalNetworkId: "0f000000-0000-4000-8000-000000000001" }));
    assert.equal(missing.code, Code.NotFound);
    assert.deepEqual(fields(await rejection(fips.createFloatingIp({}))), ["external_network_id"]);

    const project = await createClient(ProjectService, s.transport).createProject({ name: "fip-quota" });
    const quotas = createClient(QuotaService, s.transport);
    await quotas.setQuota({ projectId: project.id, limits: { floatingIps: 1n } });
    const one = await fips.createFloatingIp({ projectId: project.id, externalNetworkId: ext.id });
    const two = await rejection(fips.createFloatingIp({ projectId: project.id, externalNetworkId: ext.id }));
    assert.equal(two.code, Code.ResourceExhausted);
    assert.match(two.message, /quota floating_ips of project .* exceeded: limit 1, used 1, requested 1/);
    assert.equal((await quotas.getQuota({ projectId: project.id })).used?.floatingIps, 1n);
    await fips.deleteFloatingIp({ id: one.id });
    assert.equal((await quotas.getQuota({ projectId: project.id })).used?.floatingIps, 0n);
    await nets.deleteVirtualNetwork({ id: overlay.id });
  });

  it("an association is checked field by field, needs the port's network's router to the external network, moves in one write, and goes with the port", async () => {
    const overlay = await nets.createVirtualNetwork({ name: "apps", spec: { type: NetworkType.VXLAN, cidr: "10.121.0.0/24" } });
    const port = await ports.createPort({ spec: { networkId: overlay.id, fixedIps: ["10.121.0.5", "10.121.0.6"] } });
    const fip = await fips.createFloatingIp({ externalNetworkId: ext.id });
    const noRouter = await rejection(fips.associateFloatingIp({ id: fip.id, portId: port.id, fixedIp: "10.121.0.6" }));
    assert.equal(noRouter.code, Code.FailedPrecondition);
    assert.match(noRouter.message, new RegExp(`the port's network '${overlay.id}' has no router to external network '${ext.id}'.*set the network's spec.router.external_network_id`));
    const notMine = await rejection(fips.associateFloatingIp({ id: fip.id, portId: port.id, fixedIp: "10.121.0.7" }));
    assert.deepEqual(fields(notMine), ["fixed_ip"]);
    assert.equal((await rejection(fips.associateFloatingIp({ id: fip.id, portId: "0f000000-0000-4000-8000-000000000002" }))).code, Code.NotFound);
    assert.deepEqual(fields(await rejection(fips.associateFloatingIp({ id: fip.id }))), ["port_id"]);
    // CreateFloatingIp with a port: the same answer, and nothing allocated.
    const before = (await fips.listFloatingIps({})).totalCount;
    const atOnce = await rejection(fips.createFloatingIp({ externalNetworkId: ext.id, portId: port.id }));
    assert.equal(atOnce.code, Code.FailedPrecondition);
    assert.equal((await fips.listFloatingIps({})).totalCount, before);
    // Disassociating an unassociated address changes nothing.
    const same = await fips.disassociateFloatingIp({ id: fip.id });
    assert.equal(same.resourceVersion, fip.resourceVersion);

    // With a router to the external network, it maps (to a port without a VM too).
    await nets.updateVirtualNetwork({ id: overlay.id, spec: { router: { externalNetworkId: ext.id, snatEnabled: true } }, updateMask: { paths: ["spec.router"] } });
    const mapped = await fips.associateFloatingIp({ id: fip.id, portId: port.id, fixedIp: "10.121.0.6" });
    assert.deepEqual([mapped.portId, mapped.fixedIp, mapped.networkId, mapped.vmId], [port.id, "10.121.0.6", overlay.id, ""]);
    // No node here can host the router: the floating IP says so, and the network's router status too.
    const stuck = await until(async () => {
      const f = await fips.getFloatingIp({ id: fip.id });
      return f.state === FloatingIpState.ERROR ? f : undefined;
    }, "the floating IP in ERROR with the router's reason");
    assert.match(stuck.errorMessage, /no node can host the router to external network/);
    const routed = await until(async () => {
      const n = await nets.getVirtualNetwork({ id: overlay.id });
      return n.status?.router?.externalIp ? n : undefined;
    }, "the router's external address claimed");
    assert.equal(routed.status!.router!.externalNetworkId, ext.id);
    assert.equal(routed.status!.router!.ready, false);
    assert.match(routed.status!.router!.externalIp, /^203\.0\.113\.1[0-2]$/, "from the external network's pool");
    assert.notEqual(routed.status!.router!.externalIp, fip.address);
    const gw = routed.status!.conditions.find((c) => c.type === "GatewayReady");
    assert.equal(gw?.reason, "NoNetworkNode");

    // A second floating IP on the same fixed IP: refused; on the other one: fine. Moving one needs reassign.
    const other = await fips.createFloatingIp({ externalNetworkId: ext.id, address: "203.0.113.60" });
    const double = await rejection(fips.associateFloatingIp({ id: other.id, portId: port.id, fixedIp: "10.121.0.6" }));
    assert.equal(double.code, Code.FailedPrecondition);
    assert.match(double.message, new RegExp(`already mapped by floating IP '${fip.id}'`));
    const port2 = await ports.createPort({ spec: { networkId: overlay.id, fixedIps: ["10.121.0.9"] } });
    const taken = await rejection(fips.associateFloatingIp({ id: fip.id, portId: port2.id }));
    assert.equal(taken.code, Code.FailedPrecondition);
    assert.match(taken.message, /set reassign to move it/);
    const moved = await fips.associateFloatingIp({ id: fip.id, portId: port2.id, reassign: true });
    assert.deepEqual([moved.portId, moved.fixedIp], [port2.id, "10.121.0.9"]);
    // The router may not leave the external network while floating IPs map through it; the external network may not go either.
    const leave = await rejection(nets.updateVirtualNetwork({ id: overlay.id, spec: { router: { snatEnabled: true } }, updateMask: { paths: ["spec.router"] } }));
    assert.equal(leave.code, Code.FailedPrecondition);
    assert.match(leave.message, new RegExp(`floating IPs of external network '${ext.id}' map to ports of this network.*'${fip.id}'`));
    const inUse = await rejection(nets.deleteVirtualNetwork({ id: ext.id }));
    assert.equal(inUse.code, Code.FailedPrecondition);
    assert.match(inUse.message, new RegExp(`in use by floating IP '${fip.id}'.*the router of virtual network '${overlay.id}'`));
    // The port goes: its floating IP is disassociated in the same commit.
    await ports.deletePort({ id: port2.id });
    const freed = await fips.getFloatingIp({ id: fip.id });
    assert.deepEqual([freed.portId, freed.fixedIp, freed.networkId, freed.state], ["", "", "", FloatingIpState.DOWN]);
    // Now the router may go, and its external address is released.
    const claimed = routed.status!.router!.externalIp;
    await nets.updateVirtualNetwork({ id: overlay.id, spec: {}, updateMask: { paths: ["spec.router"] } });
    await until(async () => ((await nets.getVirtualNetwork({ id: overlay.id })).status?.router === undefined ? true : undefined), "the router's status gone");
    const again = await until(async () => {
      const f = await fips.createFloatingIp({ externalNetworkId: ext.id, address: claimed }).catch(() => undefined);
      return f;
    }, "the router's old address free again");
    for (const f of [fip, other, again]) await fips.deleteFloatingIp({ id: f.id });
    await ports.deletePort({ id: port.id });
    await nets.deleteVirtualNetwork({ id: overlay.id });
  });
});
