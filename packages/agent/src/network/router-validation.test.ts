import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { FloatingIpMappingSchema, RouterInterfaceSchema, RouterSpecSchema } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { routerRuleset } from "./router-ruleset.js";
import { checkRouterSpec } from "./router-validation.js";

// The pure half of routers: validation into canonical values, and the nft script. The
// kernel and real traffic are exercised in router.test.ts.

const ROUTER = "7b000000-0000-4000-8000-000000000001";
const NET = "0a000000-0000-4000-8000-000000000001";
const NET2 = "0b000000-0000-4000-8000-000000000002";
const good = () =>
  create(RouterSpecSchema, {
    routerId: ROUTER,
    external: { physicalNetwork: "ext", address: "203.0.113.5/24", gatewayIp: "203.0.113.1", macAddress: "02:AA:00:00:00:05" },
    interfaces: [
      { networkId: NET2, macAddress: "02:aa:00:00:01:02", addresses: ["10.2.0.1/24"] },
      { networkId: NET, macAddress: "02:aa:00:00:01:01", addresses: ["10.1.0.1/24", "10.9.0.1/16"] },
    ],
    snatEnabled: true,
    floatingIps: [
      { floatingIp: "203.0.113.20", fixedIp: "10.2.0.5" },
      { floatingIp: "203.0.113.10", fixedIp: "10.1.0.5" },
    ],
  });

test("a good router spec comes back canonical and ordered", () => {
  const c = checkRouterSpec(good());
  assert.ok(c.ok);
  assert.equal(c.value.external.mac, "02:aa:00:00:00:05");
  assert.deepEqual(c.value.interfaces.map((i) => i.networkId), [NET, NET2]);
  assert.deepEqual(c.value.floatingIps.map((f) => f.floatingIp), ["203.0.113.10", "203.0.113.20"]);
});

test("every bad router field is named; metacharacters never pass", () => {
  const s = good();
  s.routerId = "7B000000-0000-4000-8000-000000000001";
  s.external!.physicalNetwork = "ext;reboot";
  s.external!.gatewayIp = "203.0.113.5";
  s.interfaces[0]!.addresses = ["10.1.0.200/25"];
  s.interfaces[1]!.macAddress = "02:aa:00:00:00:05";
  s.interfaces.push(create(RouterInterfaceSchema, { networkId: NET, macAddress: "02:aa:00:00:01:09", addresses: [] }));
  const fip = (floatingIp: string, fixedIp: string) => create(FloatingIpMappingSchema, { floatingIp, fixedIp });
  s.floatingIps.push(fip("203.0.113.10", "10.1.0.5"), fip("203.0.113.255", "10.1.0.1"), fip("203.0.113.30", "1.2.3.4\n"));
  const c = checkRouterSpec(s);
  assert.ok(!c.ok);
  assert.deepEqual(c.violations.map((v) => v.field).sort(), [
    "spec.external.gateway_ip",
    "spec.external.physical_network",
    "spec.floating_ips[0].fixed_ip",
    "spec.floating_ips[2].fixed_ip",
    "spec.floating_ips[2].floating_ip",
    "spec.floating_ips[3].fixed_ip",
    "spec.floating_ips[3].floating_ip",
    "spec.floating_ips[4].fixed_ip",
    "spec.interfaces[1].addresses[0]",
    "spec.interfaces[1].mac_address",
    "spec.interfaces[2].addresses",
    "spec.interfaces[2].network_id",
    "spec.router_id",
  ]);
  assert.equal(checkRouterSpec(undefined).ok, false);
  assert.deepEqual((checkRouterSpec(create(RouterSpecSchema, { routerId: ROUTER })) as { violations: { field: string }[] }).violations.map((v) => v.field), ["spec.external"]);
});

test("the nft script: maps both ways, SNAT and hairpin scoped by the external interface", () => {
  const c = checkRouterSpec(good());
  assert.ok(c.ok);
  const script = routerRuleset(c.value);
  assert.match(script, /map fip_dnat \{ type ipv4_addr : ipv4_addr; elements = \{ 203\.0\.113\.10 : 10\.1\.0\.5, 203\.0\.113\.20 : 10\.2\.0\.5 \}; \}/);
  assert.match(script, /map fip_snat \{ type ipv4_addr : ipv4_addr; elements = \{ 10\.1\.0\.5 : 203\.0\.113\.10, 10\.2\.0\.5 : 203\.0\.113\.20 \}; \}/);
  assert.match(script, /set internal \{ type ipv4_addr; flags interval; elements = \{ 10\.1\.0\.0\/24, 10\.2\.0\.0\/24, 10\.9\.0\.0\/16 \}; \}/);
  assert.match(script, /oifname "qre" ip saddr @internal snat to 203\.0\.113\.5\n/);
  assert.match(script, /oifname != "qre" ct status dnat ip saddr @internal masquerade/);
  assert.doesNotMatch(routerRuleset({ ...c.value, snat: false }), /snat to 203\.0\.113\.5/);
});
