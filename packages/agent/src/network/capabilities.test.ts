import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { after, before, test } from "node:test";
import { ensureDebianPackages } from "@quantix/testing";
import { probeNetworkCapabilities, probeNetworkFeatures } from "./capabilities.js";

// The underlay address a host reports, probed in a namespace of its own: none, the first
// global-scope IPv4 address, or the configured one (which must be on the host).

const NS = `qxa${(process.pid & 0xffff).toString(16)}c`;
const sh = (args: string[]) => execFileSync(args[0]!, args.slice(1), { stdio: ["ignore", "pipe", "pipe"], timeout: 15_000 }).toString();
const vxlan = (p: Awaited<ReturnType<typeof probeNetworkCapabilities>>) => p.features.find((f) => f.name === "network-vxlan")!;

before(async () => {
  await ensureDebianPackages(["iproute2", "nftables", "dnsmasq-base"]);
  sh(["ip", "netns", "add", NS]);
  sh(["ip", "-n", NS, "link", "set", "lo", "up"]);
});

after(() => {
  try {
    sh(["ip", "netns", "del", NS]);
  } catch {
    // already gone
  }
});

test("no global IPv4 address: underlay empty, network-vxlan unavailable saying so, the rest still probed", async () => {
  const p = await probeNetworkCapabilities(NS);
  assert.equal(p.underlayAddress, "");
  assert.equal(vxlan(p).available, false);
  assert.match(vxlan(p).reason, /no underlay address/);
  assert.equal(p.features.find((f) => f.name === "network-dhcp")?.available, true);
});

test("the first global-scope IPv4 address by default; a configured one wins if the host has it", async () => {
  // A veth pair inside the namespace (this kernel has no dummy module).
  sh(["ip", "-n", NS, "link", "add", `${NS}d`, "type", "veth", "peer", "name", `${NS}e`]);
  sh(["ip", "-n", NS, "addr", "add", "198.51.100.7/24", "dev", `${NS}d`]);
  sh(["ip", "-n", NS, "addr", "add", "198.51.100.8/24", "dev", `${NS}d`]);
  sh(["ip", "-n", NS, "addr", "add", "127.0.0.2/8", "dev", "lo"]); // host scope: never an underlay
  for (const l of [`${NS}d`, `${NS}e`]) sh(["ip", "-n", NS, "link", "set", l, "up"]);
  const auto = await probeNetworkCapabilities(NS);
  assert.equal(auto.underlayAddress, "198.51.100.7");
  assert.equal(vxlan(auto).available, true, vxlan(auto).reason);
  const chosen = await probeNetworkCapabilities(NS, "198.51.100.8");
  assert.equal(chosen.underlayAddress, "198.51.100.8");
  assert.equal(vxlan(chosen).available, true);
  const absent = await probeNetworkCapabilities(NS, "203.0.113.5");
  assert.equal(absent.underlayAddress, "203.0.113.5");
  assert.equal(vxlan(absent).available, false);
  assert.match(vxlan(absent).reason, /203\.0\.113\.5 .*not on any interface/);
});

test("network-uplink: unavailable without physical networks; available, naming them, when a configured interface exists", async () => {
  const uplink = (p: Awaited<ReturnType<typeof probeNetworkCapabilities>>) => p.features.find((f) => f.name === "network-uplink")!;
  const none = await probeNetworkCapabilities(NS);
  assert.equal(uplink(none).available, false);
  assert.match(uplink(none).reason, /overlay networks only/);
  assert.deepEqual(none.physicalNetworks, []);
  const missing = await probeNetworkCapabilities(NS, undefined, new Map([["ext", `${NS}x`]]));
  assert.equal(uplink(missing).available, false);
  assert.match(uplink(missing).reason, new RegExp(`no configured physical network's interface exists: ext \\(${NS}x\\)`));
  sh(["ip", "-n", NS, "link", "add", `${NS}x`, "type", "veth", "peer", "name", `${NS}y`]);
  const some = await probeNetworkCapabilities(NS, undefined, new Map([["physnet2", `${NS}z`], ["ext", `${NS}x`]]));
  assert.equal(uplink(some).available, true, uplink(some).reason);
  assert.match(uplink(some).reason, new RegExp(`ext \\(${NS}x\\) are reachable; missing: physnet2 \\(${NS}z\\)`));
  assert.deepEqual(some.physicalNetworks, ["ext"]);
});

test("probes at once in one namespace (a registration's and a GetNetworkCapabilities') each create their own devices: all find VXLAN and bridges", async () => {
  const all = await Promise.all(Array.from({ length: 4 }, () => probeNetworkFeatures(NS)));
  for (const features of all) {
    const v = features.find((f) => f.name === "network-vxlan")!;
    assert.equal(v.available, true, v.reason);
  }
});
