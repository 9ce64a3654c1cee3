import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { GatewayMode, NetworkSpecSchema, RuleDirection, RuleProtocol, SecurityGroupSpecSchema } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { hostRuleset, memberDelta } from "./nft-ruleset.js";
import { dhcpHosts, dhcpOpts, dnsmasqArgs } from "./dnsmasq-config.js";
import { checkNetworkSpec, checkSecurityGroupSpec } from "./validation.js";

// The pure half: validation into canonical values, and what the nft script and dnsmasq
// files say. The real kernel and dnsmasq are exercised in network-service.test.ts.

const NET = "0a000000-0000-4000-8000-000000000001";
const PORT = "c1000000-0000-4000-8000-000000000001";
const SG = "5a000000-0000-4000-8000-000000000001";
const good = () =>
  create(NetworkSpecSchema, {
    networkId: NET,
    vni: 7,
    localUnderlayAddress: "192.0.2.1",
    peerUnderlayAddresses: ["192.0.2.2"],
    subnets: [{ cidr: "10.1.0.0/24", gatewayIp: "10.1.0.1", dhcpEnabled: true, serviceAddress: "10.1.0.2" }],
    ports: [{ portId: PORT, macAddress: "02:AA:00:00:00:01", fixedIps: ["10.1.0.10"], securityGroupIds: [SG], hostname: "Web1", allowedAddressPairs: [{ ipPrefix: "10.1.0.128/25" }] }],
  });

test("a good spec comes back canonical, with the defaults filled in", () => {
  const c = checkNetworkSpec(good());
  assert.ok(c.ok);
  assert.equal(c.value.mtu, 1450);
  assert.equal(c.value.ports[0]!.mac, "02:aa:00:00:00:01");
  assert.equal(c.value.ports[0]!.hostname, "web1");
  assert.deepEqual(c.value.ports[0]!.pairs, [{ ipPrefix: "10.1.0.128/25", mac: "02:aa:00:00:00:01" }]);
  assert.equal(c.value.subnets[0]!.leaseSeconds, 43200);
});

test("every bad field is named; shell and nft metacharacters never pass", () => {
  const s = good();
  s.vni = 0;
  s.localUnderlayAddress = "192.0.2.01";
  s.subnets.push({ ...s.subnets[0]!, cidr: "10.1.0.0/16" });
  s.subnets[0]!.gatewayIp = "10.2.0.1";
  s.ports[0]!.hostname = "web1; reboot";
  s.ports[0]!.macAddress = "03:00:00:00:00:01";
  s.ports[0]!.fixedIps = ["10.9.0.1", "10.1.0.10\n"];
  s.dnsDomain = 'a"}; flush ruleset';
  const c = checkNetworkSpec(s);
  assert.ok(!c.ok);
  const fields = c.violations.map((v) => v.field).sort();
  assert.deepEqual(fields, [
    "spec.dns_domain",
    "spec.local_underlay_address",
    "spec.ports[0].fixed_ips[0]",
    "spec.ports[0].fixed_ips[1]",
    "spec.ports[0].hostname",
    "spec.ports[0].mac_address",
    "spec.subnets[0].gateway_ip",
    "spec.subnets[1].cidr",
    "spec.vni",
  ]);
});

test("security group rules: ranges, ICMP, remote prefix xor remote group", () => {
  const bad = checkSecurityGroupSpec(
    create(SecurityGroupSpecSchema, {
      securityGroupId: SG,
      rules: [
        { direction: RuleDirection.INGRESS, protocol: RuleProtocol.TCP, portRangeMin: 100, portRangeMax: 10 },
        { direction: RuleDirection.UNSPECIFIED },
        { direction: RuleDirection.EGRESS, protocol: RuleProtocol.UDP, icmpType: 8 },
        { direction: RuleDirection.INGRESS, remoteIpPrefix: "10.0.0.1/8", remoteGroupId: SG },
      ],
      memberIps: ["10.0.0.1", "x"],
    }),
  );
  assert.ok(!bad.ok);
  assert.deepEqual(bad.violations.map((v) => v.field).sort(), ["spec.member_ips[1]", "spec.rules[0].port_range_max", "spec.rules[1].direction", "spec.rules[2].icmp_type", "spec.rules[3].remote_group_id", "spec.rules[3].remote_ip_prefix"]);
});

test("the nft script: one transaction replacing both tables; ports keyed by TAP and by bridge . ip", () => {
  const n = checkNetworkSpec(good());
  const g = checkSecurityGroupSpec(create(SecurityGroupSpecSchema, { securityGroupId: SG, rules: [{ direction: RuleDirection.INGRESS, protocol: RuleProtocol.TCP, portRangeMin: 22 }], memberIps: ["10.1.0.10"] }));
  assert.ok(n.ok && g.ok);
  const script = hostRuleset({ networks: { [NET]: { spec: n.value, generation: "1" } }, securityGroups: { [SG]: { spec: g.value, generation: "1" } } });
  assert.match(script, /^table bridge quantix_l2 \{\}\ndelete table bridge quantix_l2\n/);
  assert.ok(script.includes('"qtc10000000000" . 02:aa:00:00:00:01'));
  assert.ok(script.includes('"qtc10000000000" . 10.1.0.128/25'));
  assert.ok(script.includes('"qb0a0000000000" . 10.1.0.10/32 : jump port_c10000000000_in'));
  assert.ok(script.includes("tcp dport 22 accept"));
  assert.equal(memberDelta(SG, ["10.1.0.11"], []), "add element inet quantix sgm_5a0000000000 { 10.1.0.11 }\n");
});

test("dnsmasq: static DHCP for this host's ports, MTU and router options, files in the network's directory", () => {
  const n = checkNetworkSpec(good());
  assert.ok(n.ok);
  assert.equal(dhcpHosts(n.value), "02:aa:00:00:00:01,10.1.0.10,web1\n");
  assert.equal(dhcpOpts(n.value), "tag:s0,option:router,10.1.0.1\ntag:s0,option:dns-server,10.1.0.2\ntag:s0,option:mtu,1450\n");
  const args = dnsmasqArgs(n.value, "/state/network/x");
  assert.ok(args.includes("--dhcp-range=set:s0,10.1.0.0,static,255.255.255.0,43200s"));
  assert.ok(args.includes("--interface=qb0a0000000000") && args.includes("--listen-address=10.1.0.2"));
});

test("a gateway needs a mode and every subnet's gateway_ip; its MAC is the network's own", () => {
  const s = good();
  s.gateway = { $typeName: "vmm.v1.Gateway", mode: GatewayMode.UNSPECIFIED };
  s.subnets[0]!.gatewayIp = "";
  s.ports[0]!.macAddress = "02:0a:00:00:00:00";
  const c = checkNetworkSpec(s);
  assert.ok(!c.ok);
  assert.deepEqual(c.violations.map((v) => v.field).sort(), ["spec.gateway.mode", "spec.ports[0].mac_address", "spec.subnets[0].gateway_ip"]);
  const g = good();
  g.gateway = { $typeName: "vmm.v1.Gateway", mode: GatewayMode.NAT };
  const ok = checkNetworkSpec(g);
  assert.ok(ok.ok);
  assert.deepEqual(ok.value.gateway, { mode: "nat" });
  // A host's own gateway MAC (06, the id's first byte, the underlay address) is reserved too, the peer's as well.
  const h = good();
  h.gateway = { $typeName: "vmm.v1.Gateway", mode: GatewayMode.ROUTED };
  h.ports[0]!.macAddress = "06:0a:c0:00:02:01";
  h.remotePorts = [{ $typeName: "vmm.v1.RemotePort", macAddress: "06:0A:C0:00:02:02", underlayAddress: "192.0.2.2", ipAddresses: ["10.1.0.20"], hostname: "" }];
  const hc = checkNetworkSpec(h);
  assert.ok(!hc.ok);
  assert.deepEqual(hc.violations.map((v) => v.field).sort(), ["spec.ports[0].mac_address", "spec.remote_ports[0].mac_address"]);
  assert.match(hc.violations.find((v) => v.field === "spec.remote_ports[0].mac_address")!.description, /gateway MAC of the host at 192\.0\.2\.2/);
});

test("the nft script with a NAT gateway: masquerade off the bridge, gateway frames kept off the VXLAN device", () => {
  const g = good();
  g.gateway = { $typeName: "vmm.v1.Gateway", mode: GatewayMode.NAT };
  const n = checkNetworkSpec(g);
  assert.ok(n.ok);
  const script = hostRuleset({ networks: { [NET]: { spec: n.value, generation: "1" } }, securityGroups: {} });
  assert.ok(script.includes("table ip quantix_nat {}\ndelete table ip quantix_nat\n"), "the NAT table is replaced in the same transaction");
  assert.ok(script.includes('ip saddr 10.1.0.0/24 oifname != { "qb0a0000000000" } masquerade'));
  assert.ok(script.includes('set gw_mac { type ifname . ether_addr; elements = { "qv0a0000000000" . 02:0a:00:00:00:00 }; }'));
  assert.ok(script.includes('set gw_ip { type ifname . ipv4_addr; elements = { "qv0a0000000000" . 10.1.0.1 }; }'));
  // Routed frames to remote ports leave with this host's own MAC, before the gateway-MAC drop.
  assert.ok(script.includes('map gw_router { type ifname : ether_addr; elements = { "qv0a0000000000" : 06:0a:c0:00:02:01 }; }'));
  const out = script.slice(script.indexOf("chain gw_out"));
  assert.ok(out.indexOf("ether saddr set oifname map @gw_router") < out.indexOf("oifname . ether saddr @gw_mac drop"));
  const routed = checkNetworkSpec({ ...g, gateway: { $typeName: "vmm.v1.Gateway", mode: GatewayMode.ROUTED } });
  assert.ok(routed.ok);
  const r = hostRuleset({ networks: { [NET]: { spec: routed.value, generation: "1" } }, securityGroups: {} });
  assert.ok(!r.includes("masquerade") && !r.includes("table ip quantix_nat {\n"), "routed: no NAT table, only its deletion");
});
