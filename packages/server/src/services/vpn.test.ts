import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { NetworkType, type VirtualNetwork } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { CreateVirtualNetworkRequestSchema, VirtualNetworkService } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { VpnServiceState, VpnType } from "@quantix/api/gen/Quantixkvm/network/v1/vpn_service_pb.js";
import { VpnServiceManager } from "@quantix/api/gen/Quantixkvm/network/v1/vpn_service_manager_pb.js";
import { randomIds, systemClock, VPN_SERVICE_KIND, wireguardPublicKey } from "@quantix/core";
import { rejection, startTestServer, type TestServer } from "@quantix/testing";
import { VirtualNetworkService as Networks } from "./network-service.js";

// VpnServiceManager over the real API (memory store): services on a network's central
// router, secrets generated, kept and never read back, every bad field named, and the
// network's other services respected (remote subnets, ports).

const fields = (e: ConnectError) => e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));
const keyPair = () => {
  const jwk = generateKeyPairSync("x25519").privateKey.export({ format: "jwk" });
  return { priv: Buffer.from(jwk.d!, "base64url").toString("base64"), pub: Buffer.from(jwk.x!, "base64url").toString("base64") };
};
const peer = (name: string, remote: string[], extra: { endpoint?: string; publicKey?: string; presharedKey?: string; persistentKeepaliveSeconds?: number } = {}) => ({ name, endpoint: "203.0.113.77:51820", remoteSubnets: remote, publicKey: keyPair().pub, ...extra });

describe("VPN services", () => {
  let s: TestServer;
  let nets: Client<typeof VirtualNetworkService>;
  let vpns: Client<typeof VpnServiceManager>;
  let ext: VirtualNetwork;
  let net: VirtualNetwork;

  before(async () => {
    s = await startTestServer({ demo: false });
    nets = createClient(VirtualNetworkService, s.transport);
    vpns = createClient(VpnServiceManager, s.transport);
    const withUplink = new Networks({ store: s.cp.store, clock: systemClock, ids: randomIds, featureSupport: async () => ({ supported: ["node-x"], reasons: [] }) });
    ext = await withUplink.create(create(CreateVirtualNetworkRequestSchema, { name: "internet", spec: { type: NetworkType.EXTERNAL, cidr: "203.0.113.0/24", physicalNetwork: "ext" } }));
    net = await nets.createVirtualNetwork({ name: "site-a", spec: { type: NetworkType.VXLAN, cidr: "10.51.0.0/24", router: { externalNetworkId: ext.id, snatEnabled: true } } });
  });
  after(async () => s?.close());

  it("a WireGuard service gets a generated key, whose public half it shows; the private key is never read back", async () => {
    const made = await vpns.createVpnService({ name: "to-b", spec: { type: VpnType.WIREGUARD, networkId: net.id, peers: [peer("site-b", ["10.52.0.0/24"])] } });
    assert.equal(made.spec!.protocolConfig.case, "wireguard");
    const wg = made.spec!.protocolConfig.value as { listenPort: number; privateKey: string };
    assert.deepEqual([wg.listenPort, wg.privateKey, made.spec!.localSubnets], [51820, "", ["10.51.0.0/24"]]);
    assert.match(made.status!.wireguardPublicKey, /^[A-Za-z0-9+/]{43}=$/);
    assert.equal(made.status!.listenPort, 51820);
    assert.equal(made.status!.state, VpnServiceState.PENDING);
    // Stored for the router, with the public key its own.
    const stored = await s.cp.store.of(VPN_SERVICE_KIND).get(made.id);
    const key = stored!.spec!.protocolConfig.case === "wireguard" ? stored!.spec!.protocolConfig.value.privateKey : "";
    assert.equal(wireguardPublicKey(key), made.status!.wireguardPublicKey);
    // Not in any read.
    const got = await vpns.getVpnService({ id: made.id });
    assert.equal(got.spec!.protocolConfig.case === "wireguard" ? got.spec!.protocolConfig.value.privateKey : "x", "");
    const listed = (await vpns.listVpnServices({ networkId: net.id })).vpnServices;
    assert.equal(listed.length, 1);
    assert.ok(!JSON.stringify(listed, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v)).includes(key));
    const ac = new AbortController();
    for await (const u of vpns.watchVpnServices({}, { signal: ac.signal })) {
      if (u.vpnService) assert.ok(!JSON.stringify(u.vpnService, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v)).includes(key));
      ac.abort();
      break;
    }
    // An update that leaves the key empty keeps it; a new one replaces it (and its public half).
    const kept = await vpns.updateVpnService({ id: made.id, spec: { peers: [peer("site-b", ["10.52.0.0/24"]), peer("site-c", ["10.53.0.0/24"])] }, updateMask: { paths: ["spec.peers"] } });
    assert.equal(kept.status!.wireguardPublicKey, made.status!.wireguardPublicKey);
    assert.equal(kept.spec!.peers.length, 2);
    const fresh = keyPair();
    const rekeyed = await vpns.updateVpnService({ id: made.id, spec: { protocolConfig: { case: "wireguard", value: { listenPort: 51820, privateKey: fresh.priv } } }, updateMask: { paths: ["spec.wireguard"] } });
    assert.equal(rekeyed.status!.wireguardPublicKey, fresh.pub, "the public key of the key given");
    // Type and network are fixed.
    const fixed = await rejection(vpns.updateVpnService({ id: made.id, spec: { type: VpnType.IPSEC }, updateMask: { paths: ["spec.type"] } }));
    assert.equal(fixed.code, Code.InvalidArgument);
    // Peers by name: added, replaced, removed (an unknown name changes nothing).
    const added = await vpns.addVpnPeer({ id: made.id, peer: peer("site-d", ["10.54.0.0/24"], { persistentKeepaliveSeconds: 25 }) });
    assert.deepEqual(added.spec!.peers.map((p) => p.name), ["site-b", "site-c", "site-d"]);
    const replaced = await vpns.addVpnPeer({ id: made.id, peer: peer("site-d", ["10.55.0.0/24"]) });
    assert.deepEqual(replaced.spec!.peers.find((p) => p.name === "site-d")?.remoteSubnets, ["10.55.0.0/24"]);
    const removed = await vpns.removeVpnPeer({ id: made.id, peerName: "site-c" });
    assert.deepEqual(removed.spec!.peers.map((p) => p.name), ["site-b", "site-d"]);
    // (The network controller writes the status meanwhile: the spec's generation is what must not move.)
    assert.equal((await vpns.removeVpnPeer({ id: made.id, peerName: "nobody" })).generation, removed.generation);
    await vpns.deleteVpnService({ id: made.id });
  });

  it("bad input is named field by field and makes nothing", async () => {
    const before = (await vpns.listVpnServices({})).totalCount;
    const bad = await rejection(
      vpns.createVpnService({
        name: "bad",
        spec: {
          type: VpnType.WIREGUARD,
          networkId: net.id,
          localSubnets: ["10.99.0.0/24", "fd00::/64"],
          protocolConfig: { case: "wireguard", value: { listenPort: 70_000, privateKey: "not-a-key" } },
          peers: [
            peer("b", ["10.52.0.0/16"]),
            peer("c", ["10.52.1.0/24", "10.51.0.128/25"], { endpoint: "vpn.example.com:51820", publicKey: "short" }),
            peer("b", [], { presharedKey: "x" }),
          ],
        },
      }),
    );
    assert.equal(bad.code, Code.InvalidArgument);
    assert.deepEqual(fields(bad).sort(), [
      "spec.local_subnets[0]",
      "spec.local_subnets[1]",
      "spec.peers[1].endpoint",
      "spec.peers[1].public_key",
      "spec.peers[1].remote_subnets[0]",
      "spec.peers[1].remote_subnets[1]",
      "spec.peers[2].name",
      "spec.peers[2].preshared_key",
      "spec.peers[2].remote_subnets",
      "spec.wireguard.listen_port",
      "spec.wireguard.private_key",
    ]);
    const why = (f: string) => bad.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations).find((v) => v.field === f)?.description ?? "";
    assert.match(why("spec.peers[1].remote_subnets[0]"), /10\.52\.1\.0\/24 overlaps 10\.52\.0\.0\/16 \(spec\.peers\[0\]\.remote_subnets\[0\]\)/);
    assert.match(why("spec.peers[1].remote_subnets[1]"), /overlaps the network's own subnet 10\.51\.0\.0\/24/);
    const ipsec = await rejection(vpns.createVpnService({ name: "bad2", spec: { type: VpnType.IPSEC, networkId: net.id, protocolConfig: { case: "wireguard", value: {} }, peers: [{ name: "x", remoteSubnets: ["10.60.0.0/24"], remoteId: "a b" }] } }));
    assert.deepEqual(fields(ipsec).sort(), ["spec.peers[0].endpoint", "spec.peers[0].preshared_key", "spec.peers[0].remote_id", "spec.wireguard"]);
    assert.deepEqual(fields(await rejection(vpns.createVpnService({ name: "bad3", spec: { networkId: net.id } }))), ["spec.type"]);
    // The network: unknown, EXTERNAL, or without a central router.
    assert.equal((await rejection(vpns.createVpnService({ name: "x", spec: { type: VpnType.WIREGUARD, networkId: "0d000000-0000-4000-8000-000000000009" } }))).code, Code.NotFound);
    assert.deepEqual(fields(await rejection(vpns.createVpnService({ name: "x", spec: { type: VpnType.WIREGUARD, networkId: ext.id } }))), ["spec.network_id"]);
    const plain = await nets.createVirtualNetwork({ name: "no-router", spec: { type: NetworkType.VXLAN, cidr: "10.59.0.0/24" } });
    const noRouter = await rejection(vpns.createVpnService({ name: "x", spec: { type: VpnType.WIREGUARD, networkId: plain.id } }));
    assert.equal(noRouter.code, Code.FailedPrecondition);
    assert.match(noRouter.message, /has no router to an external network.*spec\.router\.external_network_id/);
    assert.equal((await vpns.listVpnServices({})).totalCount, before, "nothing made");
    await nets.deleteVirtualNetwork({ id: plain.id });
  });

  it("services of one network share its router: their remote subnets may not overlap, WireGuard ports differ; IPsec takes its defaults", async () => {
    const one = await vpns.createVpnService({ name: "one", spec: { type: VpnType.WIREGUARD, networkId: net.id, peers: [peer("p", ["10.70.0.0/24"])] } });
    const port = await rejection(vpns.createVpnService({ name: "two", spec: { type: VpnType.WIREGUARD, networkId: net.id, peers: [peer("q", ["10.71.0.0/24"])] } }));
    assert.equal(port.code, Code.AlreadyExists);
    assert.match(port.message, /51820 is used by VPN service/);
    const overlap = await rejection(vpns.createVpnService({ name: "two", spec: { type: VpnType.WIREGUARD, networkId: net.id, protocolConfig: { case: "wireguard", value: { listenPort: 51821 } }, peers: [peer("q", ["10.70.0.128/25"])] } }));
    assert.deepEqual(fields(overlap), ["spec.peers[0].remote_subnets[0]"]);
    assert.match(overlap.message, new RegExp(`peer 'p' of VPN service '${one.id}'`));
    const ipsec = await vpns.createVpnService({ name: "ike", spec: { type: VpnType.IPSEC, networkId: net.id, peers: [{ name: "hq", endpoint: "198.51.100.9", remoteSubnets: ["10.80.0.0/16"], presharedKey: "a-long-enough-shared-secret" }] } });
    const cfg = ipsec.spec!.protocolConfig;
    assert.equal(cfg.case, "ipsec");
    assert.deepEqual(cfg.case === "ipsec" ? [cfg.value.ikeLifetimeSeconds, cfg.value.ipsecLifetimeSeconds, cfg.value.dpdIntervalSeconds] : [], [14_400, 3_600, 30]);
    assert.equal(ipsec.spec!.peers[0]!.presharedKey, "", "the pre-shared key is write-only");
    for (const v of [one, ipsec]) await vpns.deleteVpnService({ id: v.id });
  });
});
