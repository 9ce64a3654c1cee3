import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { ConditionStatus } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { NetworkType, VirtualNetworkSchema, VirtualNetworkState } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { GetVirtualNetworkRequestSchema, VirtualNetworkService } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { PortState } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { PortService } from "@quantix/api/gen/Quantixkvm/network/v1/port_service_pb.js";
import { SecurityGroupRuleDirection, SecurityGroupRuleProtocol, EtherType } from "@quantix/api/gen/Quantixkvm/network/v1/security_group_pb.js";
import { SecurityGroupService } from "@quantix/api/gen/Quantixkvm/network/v1/security_group_service_pb.js";
import { ProjectService } from "@quantix/api/gen/Quantixkvm/identity/v1/project_service_pb.js";
import { QuotaService } from "@quantix/api/gen/Quantixkvm/quota/v1/quota_service_pb.js";
import { DEFAULT_PROJECT_ID } from "@quantix/core";
import { grpcJsUnary, rejection, startTestServer, type TestServer } from "@quantix/testing";

// Networks, ports (with IPAM) and security groups through the real API on the memory
// store: defaults and honest status, addresses allocated and released with their ports,
// conflicts and exhaustion named, bad input refused with field paths and nothing written.

const fields = (e: ConnectError) => e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));

describe("virtual networks, ports and security groups over the API", () => {
  let s: TestServer;
  let nets: Client<typeof VirtualNetworkService>;
  let ports: Client<typeof PortService>;
  let groups: Client<typeof SecurityGroupService>;

  before(async () => {
    s = await startTestServer({ demo: false });
    nets = createClient(VirtualNetworkService, s.transport);
    ports = createClient(PortService, s.transport);
    groups = createClient(SecurityGroupService, s.transport);
  });
  after(async () => s?.close());

  it("creates a network with its defaults filled in, an honest PENDING status and the project's default group", async () => {
    const n = await nets.createVirtualNetwork({ name: "lab", spec: { type: NetworkType.VXLAN, cidr: "10.1.0.0/24" } });
    assert.equal(n.projectId, DEFAULT_PROJECT_ID);
    assert.equal(n.spec!.gatewayIp, "10.1.0.1");
    assert.equal(n.spec!.dhcp!.enabled, true);
    assert.equal(n.spec!.dhcp!.rangeStart, "10.1.0.2");
    assert.equal(n.spec!.dhcp!.rangeEnd, "10.1.0.254");
    assert.equal(n.spec!.dhcp!.leaseSeconds, 86400);
    assert.equal(n.spec!.mtu, 1450);
    assert.equal(n.spec!.dnsDomain, "lab.quantix.internal");
    assert.ok(n.spec!.vni >= 1 && n.spec!.vni <= 16_777_215);
    assert.equal(n.status!.state, VirtualNetworkState.PENDING);
    const ready = n.status!.conditions.find((c) => c.type === "Ready");
    assert.equal(ready?.status, ConditionStatus.FALSE);
    assert.equal(ready?.reason, "NoPorts");
    assert.match(ready!.message, /no VM uses a port of this network yet/);
    assert.equal(n.status!.allocatedIpCount, 1, "the gateway");
    assert.equal(n.status!.availableIpCount, 253);
    const dflt = (await groups.listSecurityGroups({ projectId: DEFAULT_PROJECT_ID })).securityGroups.filter((g) => g.name === "default");
    assert.equal(dflt.length, 1);
    assert.equal(dflt[0]!.rules.filter((r) => r.direction === SecurityGroupRuleDirection.INGRESS && r.remote.case === "remoteGroupId" && r.remote.value === dflt[0]!.id).length, 2);
    // A grpc-js client reads it too.
    const got = await grpcJsUnary(new URL(s.url).host, grpc.credentials.createInsecure(), "/Quantixkvm.network.v1.VirtualNetworkService/GetVirtualNetwork", GetVirtualNetworkRequestSchema, VirtualNetworkSchema, { id: n.id });
    assert.equal(got.spec?.cidr, "10.1.0.0/24");
    // A taken name, and a taken VNI.
    assert.equal((await rejection(nets.createVirtualNetwork({ name: "lab", spec: { type: NetworkType.VXLAN, cidr: "10.2.0.0/24" } }))).code, Code.AlreadyExists);
    const e = await rejection(nets.createVirtualNetwork({ name: "lab2", spec: { type: NetworkType.VXLAN, cidr: "10.2.0.0/24", vni: n.spec!.vni } }));
    assert.equal(e.code, Code.InvalidArgument);
    assert.deepEqual(fields(e), ["spec.vni"]);
    assert.match(e.message, new RegExp(n.id));
  });

  it("refuses bad networks with every field path and creates nothing", async () => {
    const before = (await nets.listVirtualNetworks({})).totalCount;
    const bad = [
      { spec: { type: NetworkType.VXLAN, cidr: "10.0.0.5/24" }, field: "spec.cidr" },
      { spec: { type: NetworkType.VXLAN, cidr: "10.0.0.0/31" }, field: "spec.cidr" },
      { spec: { type: NetworkType.VXLAN, cidr: "10.0.0.0/7" }, field: "spec.cidr" },
      { spec: { type: NetworkType.VXLAN, cidr: "10.0.0.0/24", gatewayIp: "10.0.1.1" }, field: "spec.gateway_ip" },
      { spec: { type: NetworkType.VXLAN, cidr: "10.0.0.0/24", gatewayIp: "10.0.0.255" }, field: "spec.gateway_ip" },
      { spec: { type: NetworkType.VXLAN, cidr: "10.0.0.0/24", dhcp: { enabled: true, rangeStart: "10.0.0.10", rangeEnd: "10.0.1.20" } }, field: "spec.dhcp.range_end" },
      { spec: { type: NetworkType.VXLAN, cidr: "10.0.0.0/24", dhcp: { enabled: true, rangeStart: "10.0.0.1", rangeEnd: "10.0.0.20" } }, field: "spec.dhcp.range_start" },
      { spec: { type: NetworkType.VXLAN, cidr: "10.0.0.0/24", dhcp: { enabled: true, rangeStart: "10.0.0.30", rangeEnd: "10.0.0.20" } }, field: "spec.dhcp.range_end" },
      { spec: { type: NetworkType.VXLAN, cidr: "10.0.0.0/24", dnsServers: ["8.8.8.300"] }, field: "spec.dns_servers[0]" },
      { spec: { type: NetworkType.VXLAN, cidr: "10.0.0.0/24", dnsServers: ["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4", "1.1.1.5", "1.1.1.6"] }, field: "spec.dns_servers" },
      { spec: { type: NetworkType.VXLAN, cidr: "10.0.0.0/24", mtu: 100 }, field: "spec.mtu" },
      { spec: { type: NetworkType.BRIDGE, cidr: "10.0.0.0/24" }, field: "spec.type" },
      { spec: { type: NetworkType.UNSPECIFIED, cidr: "10.0.0.0/24" }, field: "spec.type" },
      { spec: { type: NetworkType.VXLAN }, field: "spec.cidr" },
    ];
    for (const [i, b] of bad.entries()) {
      const e = await rejection(nets.createVirtualNetwork({ name: `bad${i}`, spec: b.spec }));
      assert.equal(e.code, Code.InvalidArgument, `${b.field}: ${e.message}`);
      assert.ok(fields(e).includes(b.field), `${b.field} in ${fields(e).join(", ")}: ${e.message}`);
    }
    // A type no node supports says so (this cluster has no nodes; the e2e test shows the nodes' own reasons).
    const vlan = await rejection(nets.createVirtualNetwork({ name: "vlan", spec: { type: NetworkType.VLAN, cidr: "10.0.0.0/24" } }));
    assert.deepEqual(fields(vlan), ["spec.type"]);
    assert.match(vlan.message, /no node supports VLAN networks \(network-vlan\): the cluster has no nodes yet/);
    // Several at once: all reported.
    const e = await rejection(nets.createVirtualNetwork({ name: "1bad", labels: { "": "x" }, spec: { type: NetworkType.VXLAN, cidr: "10.0.0.0/24", gatewayIp: "x", mtu: 10 } }));
    assert.deepEqual(fields(e).sort(), ["labels[\"\"]", "name", "spec.gateway_ip", "spec.mtu"].sort());
    assert.equal((await nets.listVirtualNetworks({})).totalCount, before);
  });

  it("accepts a router uplinked to the nodes' own stack (NAT or routed) and refuses what is not built, naming the fields", async () => {
    const n = await nets.createVirtualNetwork({ name: "natted", spec: { type: NetworkType.VXLAN, cidr: "10.60.0.0/24", router: { snatEnabled: true } } });
    assert.equal(n.spec!.router?.snatEnabled, true);
    assert.equal(n.spec!.gatewayIp, "10.60.0.1", "the gateway the nodes answer on");
    assert.equal((await nets.getVirtualNetwork({ id: n.id })).spec!.router?.snatEnabled, true);
    // Routed instead, then no router: both are updates of spec.router.
    const routed = await nets.updateVirtualNetwork({ id: n.id, spec: { router: { snatEnabled: false } }, updateMask: { paths: ["spec.router"] } });
    assert.equal(routed.spec!.router?.snatEnabled, false);
    const none = await nets.updateVirtualNetwork({ id: n.id, spec: {}, updateMask: { paths: ["spec.router"] } });
    assert.equal(none.spec!.router, undefined);
    const before = (await nets.listVirtualNetworks({})).totalCount;
    const e = await rejection(
      nets.createVirtualNetwork({ name: "external", spec: { type: NetworkType.VXLAN, cidr: "10.61.0.0/24", router: { externalNetworkId: "0d000000-0000-4000-8000-000000000001", snatEnabled: true, routes: [{ destinationCidr: "192.168.0.0/16", nextHopIp: "10.61.0.5" }], externalIp: "203.0.113.5" } } }),
    );
    assert.equal(e.code, Code.InvalidArgument);
    assert.deepEqual(fields(e), ["spec.router.routes"], "static routes are not built; the uplink's fields are well formed");
    assert.match(e.message, /NOT_SUPPORTED|not built/);
    const malformed = await rejection(nets.createVirtualNetwork({ name: "external", spec: { type: NetworkType.VXLAN, cidr: "10.61.0.0/24", router: { externalNetworkId: "public net!", externalIp: "203.0.113" } } }));
    assert.deepEqual(fields(malformed).sort(), ["spec.router.external_ip", "spec.router.external_network_id"]);
    // A well-formed external network that does not exist, or is no EXTERNAL network: named.
    const missing = await rejection(nets.createVirtualNetwork({ name: "external", spec: { type: NetworkType.VXLAN, cidr: "10.61.0.0/24", router: { externalNetworkId: "0d000000-0000-4000-8000-000000000001" } } }));
    assert.equal(missing.code, Code.NotFound);
    assert.match(missing.message, /spec\.router\.external_network_id: virtual network '0d000000-0000-4000-8000-000000000001' not found/);
    const overlay = await rejection(nets.createVirtualNetwork({ name: "external", spec: { type: NetworkType.VXLAN, cidr: "10.61.0.0/24", router: { externalNetworkId: n.id } } }));
    assert.deepEqual(fields(overlay), ["spec.router.external_network_id"]);
    assert.match(overlay.message, /is VXLAN, not EXTERNAL/);
    assert.equal((await nets.listVirtualNetworks({})).totalCount, before, "nothing created");
    const u = await rejection(nets.updateVirtualNetwork({ id: n.id, spec: { router: { externalIp: "203.0.113.5" } }, updateMask: { paths: ["spec.router"] } }));
    assert.deepEqual(fields(u), ["spec.router.external_ip"]);
    // Routed networks share the nodes' routing tables: their subnets may not overlap (unrouted ones may).
    await nets.updateVirtualNetwork({ id: n.id, spec: { router: { snatEnabled: true } }, updateMask: { paths: ["spec.router"] } });
    const overlap = await rejection(nets.createVirtualNetwork({ name: "natted2", spec: { type: NetworkType.VXLAN, cidr: "10.60.0.128/25", router: {} } }));
    assert.deepEqual(fields(overlap), ["spec.router"]);
    assert.match(overlap.message, new RegExp(n.id));
    const plain = await nets.createVirtualNetwork({ name: "natted3", spec: { type: NetworkType.VXLAN, cidr: "10.60.0.0/24" } });
    assert.deepEqual(fields(await rejection(nets.updateVirtualNetwork({ id: plain.id, spec: { router: {} }, updateMask: { paths: ["spec.router"] } }))), ["spec.router"]);
    await nets.deleteVirtualNetwork({ id: plain.id });
    await nets.deleteVirtualNetwork({ id: n.id });
  });

  it("allocates each port an address atomically, refuses taken and unusable ones naming them, and releases them on delete", async () => {
    const n = await nets.createVirtualNetwork({ name: "ipam", spec: { type: NetworkType.ISOLATED, cidr: "192.168.10.0/29" } });
    // /29: hosts .1-.6, gateway .1, range .2-.6: five addresses.
    const made = await Promise.allSettled(Array.from({ length: 8 }, () => ports.createPort({ spec: { networkId: n.id } })));
    const ok = made.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    const failed = made.flatMap((r) => (r.status === "rejected" ? [ConnectError.from(r.reason)] : []));
    assert.equal(ok.length, 5);
    assert.deepEqual(ok.map((p) => p.spec!.fixedIps[0]).sort(), ["192.168.10.2", "192.168.10.3", "192.168.10.4", "192.168.10.5", "192.168.10.6"]);
    for (const e of failed) {
      assert.equal(e.code, Code.ResourceExhausted, e.message);
      assert.match(e.message, /subnet 192\.168\.10\.0\/29/);
    }
    for (const p of ok) {
      assert.match(p.spec!.macAddress, /^52:54:00(:[0-9a-f]{2}){3}$/);
      assert.equal(p.status!.state, PortState.DOWN);
      assert.equal(p.status!.conditions[0]?.reason, "NotBound");
      assert.equal(p.spec!.securityGroupIds.length, 1, "the project's default group");
    }
    assert.equal(new Set(ok.map((p) => p.spec!.macAddress)).size, 5);
    let net = await nets.getVirtualNetwork({ id: n.id });
    assert.deepEqual([net.status!.portCount, net.status!.allocatedIpCount, net.status!.availableIpCount], [5, 6, 0]);

    // Release on delete, then reuse.
    const gone = ok[2]!;
    await ports.deletePort({ id: gone.id });
    assert.equal((await rejection(ports.getPort({ id: gone.id }))).code, Code.NotFound);
    net = await nets.getVirtualNetwork({ id: n.id });
    assert.deepEqual([net.status!.portCount, net.status!.allocatedIpCount, net.status!.availableIpCount], [4, 5, 1]);
    // A taken MAC (an address is free now: the MAC is what fails).
    const mac = await rejection(ports.createPort({ spec: { networkId: n.id, macAddress: ok[0]!.spec!.macAddress } }));
    assert.equal(mac.code, Code.AlreadyExists, mac.message);
    assert.match(mac.message, /MAC address/);
    const again = await ports.createPort({ name: "again", spec: { networkId: n.id } });
    assert.deepEqual(again.spec!.fixedIps, gone.spec!.fixedIps);

    // A requested address another port holds, the gateway, outside the subnet.
    const holder = ok[0]!;
    const taken = await rejection(ports.createPort({ spec: { networkId: n.id, fixedIps: [holder.spec!.fixedIps[0]!] } }));
    assert.equal(taken.code, Code.AlreadyExists);
    assert.match(taken.message, new RegExp(`${holder.spec!.fixedIps[0]!.replace(/\./g, "\\.")}.*${holder.id}`));
    for (const [ip, why] of [["192.168.10.1", /gateway/], ["192.168.10.7", /broadcast/], ["10.9.9.9", /outside/], ["fe80::1", /IPv6/]] as const) {
      const e = await rejection(ports.createPort({ spec: { networkId: n.id, fixedIps: [ip] } }));
      assert.equal(e.code, Code.InvalidArgument, e.message);
      assert.deepEqual(fields(e), ["spec.fixed_ips[0]"]);
      assert.match(e.message, why);
    }
    // A taken name on the network, a multicast MAC, an unknown network.
    assert.equal((await rejection(ports.createPort({ name: "again", spec: { networkId: n.id } }))).code, Code.AlreadyExists);
    assert.deepEqual(fields(await rejection(ports.createPort({ spec: { networkId: n.id, macAddress: "53:54:00:00:00:01" } }))), ["spec.mac_address"]);
    assert.equal((await rejection(ports.createPort({ spec: { networkId: "no-such-network" } }))).code, Code.NotFound);
    // What the data plane does not apply yet is refused, not stored and ignored.
    assert.deepEqual(fields(await rejection(ports.createPort({ spec: { networkId: n.id, disabled: true, maxIngressMbps: 100, maxEgressMbps: 10 } }))), ["spec.disabled", "spec.max_ingress_mbps", "spec.max_egress_mbps"]);
    // None of the refusals wrote anything.
    net = await nets.getVirtualNetwork({ id: n.id });
    assert.deepEqual([net.status!.portCount, net.status!.allocatedIpCount], [5, 6]);
    assert.equal((await ports.listPorts({ networkId: n.id })).totalCount, 5);
    assert.equal((await ports.listPorts({ ipAddress: holder.spec!.fixedIps[0]! })).ports[0]?.id, holder.id);

    // A network with ports is not deleted; the error names them.
    const busy = await rejection(nets.deleteVirtualNetwork({ id: n.id }));
    assert.equal(busy.code, Code.FailedPrecondition);
    assert.match(busy.message, new RegExp(holder.id));
    for (const p of (await ports.listPorts({ networkId: n.id })).ports) await ports.deletePort({ id: p.id });
    net = await nets.getVirtualNetwork({ id: n.id });
    assert.deepEqual([net.status!.portCount, net.status!.allocatedIpCount, net.status!.availableIpCount], [0, 1, 5]);
    await nets.deleteVirtualNetwork({ id: n.id });
    assert.equal((await rejection(nets.getVirtualNetwork({ id: n.id }))).code, Code.NotFound);
  });

  it("a port name is unique on its network, claimed in the commit that gives it: creates and renames race for it, a rename or a delete frees it", async () => {
    const n = await nets.createVirtualNetwork({ name: "names", spec: { type: NetworkType.VXLAN, cidr: "10.8.0.0/24" } });
    const n2 = await nets.createVirtualNetwork({ name: "names2", spec: { type: NetworkType.VXLAN, cidr: "10.9.0.0/24" } });
    const taken = (name: string, holder: string) => `a port named '${name}' already exists on virtual network '${n.id}' (port '${holder}')`;
    const refusedFor = async (p: Promise<unknown>, name: string, holder: string) => {
      const e = await rejection(p);
      assert.deepEqual([e.code, e.rawMessage], [Code.AlreadyExists, taken(name, holder)]);
    };
    // Ten creates of one name at once: one port has it.
    const raced = await Promise.allSettled(Array.from({ length: 10 }, () => ports.createPort({ name: "web", spec: { networkId: n.id } })));
    const won = raced.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    assert.equal(won.length, 1, `${won.length} creates won`);
    const web = won[0]!;
    for (const r of raced) if (r.status === "rejected") assert.equal(ConnectError.from(r.reason).rawMessage, taken("web", web.id));
    // Another network's names are its own.
    assert.equal((await ports.createPort({ name: "web", spec: { networkId: n2.id } })).name, "web");
    // A rename to a taken name is refused naming the holder, and changes nothing.
    const db = await ports.createPort({ name: "db", spec: { networkId: n.id } });
    await refusedFor(ports.updatePort({ id: db.id, name: "web", updateMask: { paths: ["name"] } }), "web", web.id);
    await refusedFor(ports.updatePort({ id: db.id, name: "web" }), "web", web.id);
    assert.equal((await ports.getPort({ id: db.id })).name, "db");
    // Renames at once to one free name: one wins.
    const spare = await Promise.all(Array.from({ length: 5 }, () => ports.createPort({ spec: { networkId: n.id } })));
    const renames = await Promise.allSettled(spare.map((p) => ports.updatePort({ id: p.id, name: "front", updateMask: { paths: ["name"] } })));
    assert.equal(renames.filter((r) => r.status === "fulfilled").length, 1);
    const front = (renames.find((r) => r.status === "fulfilled") as PromiseFulfilledResult<{ id: string }>).value;
    await refusedFor(ports.createPort({ name: "front", spec: { networkId: n.id } }), "front", front.id);
    // A rename frees the old name; a rename to the empty name too; keeping one's own name is no conflict.
    await ports.updatePort({ id: web.id, name: "web-old", updateMask: { paths: ["name"] } });
    const web2 = await ports.createPort({ name: "web", spec: { networkId: n.id } });
    await ports.updatePort({ id: front.id, name: "", updateMask: { paths: ["name"] } });
    assert.equal((await ports.getPort({ id: front.id })).name, "");
    const front2 = await ports.createPort({ name: "front", spec: { networkId: n.id } });
    assert.equal((await ports.updatePort({ id: front2.id, name: "front", description: "kept", updateMask: { paths: ["name", "description"] } })).description, "kept");
    await refusedFor(ports.updatePort({ id: db.id, name: "web-old" }), "web-old", web.id);
    // A delete frees the name, and the network's counts hold only addresses.
    await ports.deletePort({ id: web2.id });
    const web3 = await ports.createPort({ name: "web", spec: { networkId: n.id } });
    const count = (await ports.listPorts({ networkId: n.id })).totalCount;
    const net = (await nets.getVirtualNetwork({ id: n.id })).status!;
    assert.deepEqual([net.portCount, net.allocatedIpCount], [count, count + 1]);
    for (const p of (await ports.listPorts({ networkId: n.id, pageSize: 100 })).ports) await ports.deletePort({ id: p.id });
    assert.deepEqual([(await nets.getVirtualNetwork({ id: n.id })).status!.allocatedIpCount], [1]);
    assert.equal((await ports.createPort({ name: "web", spec: { networkId: n.id } })).name, "web", `free again after ${web3.id} went`);
  });

  it("a fixed address outside the DHCP range is allowed, and a range shrink that would leave out allocated addresses is refused", async () => {
    const n = await nets.createVirtualNetwork({ name: "fixed", spec: { type: NetworkType.VXLAN, cidr: "10.3.0.0/24", dhcp: { enabled: true, rangeStart: "10.3.0.100", rangeEnd: "10.3.0.200" } } });
    const fixed = await ports.createPort({ spec: { networkId: n.id, fixedIps: ["10.3.0.5"] } });
    assert.deepEqual(fixed.spec!.fixedIps, ["10.3.0.5"]);
    const pooled = await ports.createPort({ spec: { networkId: n.id } });
    const a = Number(pooled.spec!.fixedIps[0]!.split(".")[3]);
    assert.ok(a >= 100 && a <= 200, pooled.spec!.fixedIps[0]);
    const shrink = await rejection(nets.updateVirtualNetwork({ id: n.id, spec: { dhcp: { enabled: true, rangeStart: a === 100 ? "10.3.0.101" : "10.3.0.100", rangeEnd: a === 100 ? "10.3.0.200" : `10.3.0.${a - 1}` } }, updateMask: { paths: ["spec.dhcp"] } }));
    assert.equal(shrink.code, Code.FailedPrecondition, shrink.message);
    assert.match(shrink.message, new RegExp(pooled.id));
    const gw = await rejection(nets.updateVirtualNetwork({ id: n.id, spec: { gatewayIp: "10.3.0.5" }, updateMask: { paths: ["spec.gateway_ip"] } }));
    assert.equal(gw.code, Code.FailedPrecondition);
    assert.match(gw.message, new RegExp(fixed.id));
    const fixedField = await rejection(nets.updateVirtualNetwork({ id: n.id, spec: { type: NetworkType.VXLAN, cidr: "10.4.0.0/24" }, updateMask: { paths: ["spec.cidr"] } }));
    assert.equal(fixedField.code, Code.InvalidArgument);
    assert.deepEqual(fields(fixedField), ["update_mask.paths[0]"]);
    const ok = await nets.updateVirtualNetwork({ id: n.id, spec: { mtu: 1400 }, updateMask: { paths: ["spec.mtu"] } });
    assert.equal(ok.spec!.mtu, 1400);
    assert.equal(ok.generation, 2n);
  });

  it("a range shrink racing port creates never strands an address: it is refused, or every address from the range is inside the new one", async () => {
    const n = await nets.createVirtualNetwork({ name: "shrink-race", spec: { type: NetworkType.VXLAN, cidr: "10.8.0.0/24" } });
    const creates = Promise.allSettled(Array.from({ length: 30 }, () => ports.createPort({ spec: { networkId: n.id } })));
    const shrink = nets.updateVirtualNetwork({ id: n.id, spec: { dhcp: { enabled: true, rangeStart: "10.8.0.2", rangeEnd: "10.8.0.40" } }, updateMask: { paths: ["spec.dhcp"] } }).then(
      () => "applied" as const,
      (e: unknown) => ConnectError.from(e),
    );
    await creates;
    const outcome = await shrink;
    const end = (await nets.getVirtualNetwork({ id: n.id })).spec!.dhcp!.rangeEnd;
    const addresses = (await ports.listPorts({ networkId: n.id, pageSize: 100 })).ports.map((p) => Number(p.spec!.fixedIps[0]!.split(".")[3]));
    if (outcome === "applied") {
      assert.equal(end, "10.8.0.40");
      assert.ok(addresses.every((a) => a >= 2 && a <= 40), `addresses outside the new range: ${addresses.filter((a) => a > 40).join(", ")}`);
    } else {
      assert.ok(outcome instanceof ConnectError);
      assert.equal(outcome.code, Code.FailedPrecondition, outcome.message);
      assert.equal(end, "10.8.0.254");
    }
  });

  it("networks count against the project's networks quota, returned on delete", async () => {
    const project = await createClient(ProjectService, s.transport).createProject({ name: "net-quota" });
    const quotas = createClient(QuotaService, s.transport);
    await quotas.setQuota({ projectId: project.id, limits: { networks: 1n } });
    const first = await nets.createVirtualNetwork({ name: "one", projectId: project.id, spec: { type: NetworkType.VXLAN, cidr: "10.6.0.0/24" } });
    const e = await rejection(nets.createVirtualNetwork({ name: "two", projectId: project.id, spec: { type: NetworkType.VXLAN, cidr: "10.7.0.0/24" } }));
    assert.equal(e.code, Code.ResourceExhausted);
    assert.match(e.message, /quota networks of project .* exceeded: limit 1, used 1, requested 1/);
    assert.equal((await quotas.getQuota({ projectId: project.id })).used?.networks, 1n);
    await nets.deleteVirtualNetwork({ id: first.id });
    assert.equal((await quotas.getQuota({ projectId: project.id })).used?.networks, 0n);
    const two = await nets.createVirtualNetwork({ name: "two", projectId: project.id, spec: { type: NetworkType.VXLAN, cidr: "10.7.0.0/24" } });
    // DeleteProject is refused while the project holds networks, naming them; its default group goes with it.
    const projects = createClient(ProjectService, s.transport);
    const held = await rejection(projects.deleteProject({ id: project.id }));
    assert.equal(held.code, Code.FailedPrecondition, held.message);
    assert.match(held.rawMessage, /still holds 1 virtual network: delete them first/);
    const defaultGroup = (await groups.listSecurityGroups({ projectId: project.id })).securityGroups.find((x) => x.name === "default")!;
    await nets.deleteVirtualNetwork({ id: two.id });
    await projects.deleteProject({ id: project.id });
    assert.equal((await rejection(groups.getSecurityGroup({ id: defaultGroup.id }))).code, Code.NotFound);
  });

  it("security groups: default rules, added and removed rules, bad rules with field paths, and no delete while ports use them", async () => {
    const g = await groups.createSecurityGroup({ name: "web" });
    assert.deepEqual(g.rules.map((r) => [r.direction, r.ethertype]), [[SecurityGroupRuleDirection.EGRESS, EtherType.IPV4], [SecurityGroupRuleDirection.EGRESS, EtherType.IPV6]]);
    assert.ok(g.rules.every((r) => r.id !== ""));
    const ssh = { direction: SecurityGroupRuleDirection.INGRESS, protocol: SecurityGroupRuleProtocol.TCP, portRangeMin: 22, remote: { case: "remoteGroupId" as const, value: g.id } };
    const added = await groups.addSecurityGroupRules({ securityGroupId: g.id, rules: [ssh, { direction: SecurityGroupRuleDirection.INGRESS, protocol: SecurityGroupRuleProtocol.ICMP, icmpType: 8, remote: { case: "remoteCidr", value: "203.0.113.0/24" } }] });
    assert.equal(added.rules.length, 4);
    const sshRule = added.rules.find((r) => r.portRangeMin === 22)!;
    assert.equal(sshRule.portRangeMax, 22);
    assert.equal(sshRule.ethertype, EtherType.IPV4);
    // Idempotent: the same rule again adds nothing.
    assert.equal((await groups.addSecurityGroupRules({ securityGroupId: g.id, rules: [ssh] })).rules.length, 4);
    const bad = [
      [{ direction: SecurityGroupRuleDirection.INGRESS, protocol: SecurityGroupRuleProtocol.ICMP, portRangeMin: 22 }, "rules[0].port_range_min"],
      [{ direction: SecurityGroupRuleDirection.INGRESS, protocol: SecurityGroupRuleProtocol.TCP, portRangeMin: 100, portRangeMax: 20 }, "rules[0].port_range_max"],
      [{ direction: SecurityGroupRuleDirection.INGRESS, protocol: SecurityGroupRuleProtocol.TCP, icmpType: 3 }, "rules[0].icmp_type"],
      [{ direction: SecurityGroupRuleDirection.INGRESS, protocol: SecurityGroupRuleProtocol.ICMP, icmpCode: 3 }, "rules[0].icmp_code"],
      [{ direction: SecurityGroupRuleDirection.INGRESS, remote: { case: "remoteCidr", value: "10.0.0.1/8" } }, "rules[0].remote_cidr"],
      [{ direction: SecurityGroupRuleDirection.INGRESS, remote: { case: "remoteGroupId", value: "no-such-group" } }, "rules[0].remote_group_id"],
      [{ protocol: SecurityGroupRuleProtocol.UDP }, "rules[0].direction"],
    ] as const;
    for (const [rule, field] of bad) {
      const e = await rejection(groups.addSecurityGroupRules({ securityGroupId: g.id, rules: [rule as never] }));
      assert.equal(e.code, Code.InvalidArgument, `${field}: ${e.message}`);
      assert.deepEqual(fields(e), [field], e.message);
    }
    const dup = await rejection(groups.createSecurityGroup({ name: "dup", rules: [ssh, ssh].map((r) => ({ ...r, remote: { case: "remoteCidr" as const, value: "0.0.0.0/0" } })) }));
    assert.deepEqual(fields(dup), ["rules[1]"]);
    assert.equal((await groups.listSecurityGroups({})).securityGroups.filter((x) => x.name === "dup").length, 0);
    assert.equal((await groups.getSecurityGroup({ id: g.id })).rules.length, 4, "nothing changed");
    const removed = await groups.removeSecurityGroupRules({ securityGroupId: g.id, ruleIds: [sshRule.id, "not-a-rule"] });
    assert.equal(removed.rules.length, 3);

    // In use by a port: not deleted, the port named; taken off the port: deleted.
    const n = await nets.createVirtualNetwork({ name: "sg", spec: { type: NetworkType.VXLAN, cidr: "10.5.0.0/24" } });
    const p = await ports.createPort({ spec: { networkId: n.id, securityGroupIds: [g.id] } });
    assert.equal((await groups.getSecurityGroup({ id: g.id })).portCount, 1);
    const inUse = await rejection(groups.deleteSecurityGroup({ id: g.id }));
    assert.equal(inUse.code, Code.FailedPrecondition);
    assert.match(inUse.message, new RegExp(p.id));
    const dflt = (await groups.listSecurityGroups({ projectId: DEFAULT_PROJECT_ID })).securityGroups.find((x) => x.name === "default")!;
    const moved = await ports.updatePort({ id: p.id, name: "renamed", spec: { securityGroupIds: [dflt.id] }, updateMask: { paths: ["name", "spec.security_group_ids"] } });
    assert.equal(moved.name, "renamed");
    assert.deepEqual(moved.spec!.securityGroupIds, [dflt.id]);
    assert.equal((await groups.getSecurityGroup({ id: g.id })).portCount, 0);
    assert.deepEqual(fields(await rejection(ports.updatePort({ id: p.id, spec: { securityGroupIds: ["no-such-group"] }, updateMask: { paths: ["spec.security_group_ids"] } }))), ["spec.security_group_ids[0]"]);
    // Fixed IPs change atomically: the new address claimed, the old one released, the counts kept.
    const oldIp = p.spec!.fixedIps[0]!;
    const readdressed = await ports.updatePort({ id: p.id, spec: { fixedIps: ["10.5.0.77"] }, updateMask: { paths: ["spec.fixed_ips"] } });
    assert.deepEqual(readdressed.spec!.fixedIps, ["10.5.0.77"]);
    const other = await ports.createPort({ spec: { networkId: n.id, fixedIps: [oldIp] } });
    assert.deepEqual(other.spec!.fixedIps, [oldIp], "the old address was released");
    const held = await rejection(ports.updatePort({ id: p.id, spec: { fixedIps: [oldIp] }, updateMask: { paths: ["spec.fixed_ips"] } }));
    assert.equal(held.code, Code.AlreadyExists, held.message);
    assert.match(held.message, new RegExp(other.id));
    assert.deepEqual(fields(await rejection(ports.updatePort({ id: p.id, spec: { fixedIps: ["10.5.0.1"] }, updateMask: { paths: ["spec.fixed_ips"] } }))), ["spec.fixed_ips[0]"]);
    assert.deepEqual((await ports.getPort({ id: p.id })).spec!.fixedIps, ["10.5.0.77"]);
    const counts = (await nets.getVirtualNetwork({ id: n.id })).status!;
    assert.deepEqual([counts.portCount, counts.allocatedIpCount], [2, 3]);
    await ports.deletePort({ id: other.id });
    await groups.deleteSecurityGroup({ id: g.id });
    assert.equal((await rejection(groups.getSecurityGroup({ id: g.id }))).code, Code.NotFound);
    // The project's default group stays.
    assert.equal((await rejection(groups.deleteSecurityGroup({ id: dflt.id }))).code, Code.FailedPrecondition);
  });
});
