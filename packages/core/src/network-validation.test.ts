import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { SecurityGroupRuleSchema, EtherType, SecurityGroupRuleDirection, SecurityGroupRuleProtocol } from "@quantix/api/gen/Quantixkvm/network/v1/security_group_pb.js";
import { intToIpv4, ipv4ToInt, parseIpv4Cidr } from "./ipv4.js";
import { checkMac, checkRule, macFromBytes, ruleKey } from "./network-validation.js";
import { Violations } from "./violations.js";

test("IPv4 addresses and subnets: strict dotted quads, host bits zero, network and broadcast", () => {
  assert.equal(ipv4ToInt("10.0.0.1"), 167772161);
  assert.equal(intToIpv4(167772161), "10.0.0.1");
  assert.equal(intToIpv4(ipv4ToInt("255.255.255.255")!), "255.255.255.255");
  for (const bad of ["10.0.0", "10.0.0.256", "010.0.0.1x", "", "::1", "1.2.3.4.5"]) assert.equal(ipv4ToInt(bad), undefined, bad);
  const s = parseIpv4Cidr("192.168.10.0/29");
  assert.ok(typeof s !== "string");
  assert.deepEqual([intToIpv4(s.network), intToIpv4(s.broadcast), intToIpv4(s.firstHost), intToIpv4(s.lastHost)], ["192.168.10.0", "192.168.10.7", "192.168.10.1", "192.168.10.6"]);
  assert.match(parseIpv4Cidr("10.0.0.5/24") as string, /host bits set: the subnet is "10\.0\.0\.0\/24"/);
  assert.match(parseIpv4Cidr("10.0.0.0/31", 8, 30) as string, /\/8 to \/30/);
  assert.match(parseIpv4Cidr("10.0.0.0") as string, /CIDR/);
});

test("MACs: generated ones are locally administered unicast; given ones are checked", () => {
  const mac = macFromBytes(new Uint8Array([0xab, 0x01, 0xff]));
  assert.equal(mac, "52:54:00:ab:01:ff");
  const first = parseInt(mac.slice(0, 2), 16);
  assert.equal(first & 0x01, 0, "unicast");
  assert.equal(first & 0x02, 0x02, "locally administered");
  const v = new Violations();
  checkMac(v, "m", mac);
  checkMac(v, "multicast", "01:00:5e:00:00:01");
  checkMac(v, "zero", "00:00:00:00:00:00");
  checkMac(v, "upper", "52:54:00:AB:00:01");
  assert.deepEqual(v.list.map((x) => x.field), ["multicast", "zero", "upper"]);
});

test("rules are completed (ether type, port_range_max) and equal rules have one key whatever their ids", () => {
  const r = create(SecurityGroupRuleSchema, { id: "a", direction: SecurityGroupRuleDirection.INGRESS, protocol: SecurityGroupRuleProtocol.TCP, portRangeMin: 22, remote: { case: "remoteCidr", value: "2001:db8::/32" } });
  const v = new Violations();
  checkRule(v, "rules[0]", r);
  assert.deepEqual(v.list, []);
  assert.equal(r.ethertype, EtherType.IPV6);
  assert.equal(r.portRangeMax, 22);
  const same = create(SecurityGroupRuleSchema, { ...r, id: "b", description: "other words" });
  assert.equal(ruleKey(same), ruleKey(r));
  const w = new Violations();
  checkRule(w, "rules[1]", create(SecurityGroupRuleSchema, { direction: SecurityGroupRuleDirection.INGRESS, ethertype: EtherType.IPV4, remote: { case: "remoteCidr", value: "2001:db8::/32" } }));
  checkRule(w, "rules[2]", create(SecurityGroupRuleSchema, { direction: SecurityGroupRuleDirection.EGRESS, protocol: SecurityGroupRuleProtocol.ICMPV6 }));
  assert.deepEqual(w.list.map((x) => x.field), ["rules[1].remote_cidr", "rules[2].protocol"]);
});
