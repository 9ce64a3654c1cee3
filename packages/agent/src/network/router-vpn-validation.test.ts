import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { generateKeyPairSync } from "node:crypto";
import { test } from "node:test";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { RouterSpecSchema, RouterVpnType } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { parseSas } from "./router-ipsec.js";
import { routerRuleset } from "./router-ruleset.js";
import { checkRouterSpec } from "./router-validation.js";
import { wireguardPublicKey } from "@quantix/core";

// The pure half of routers' VPN connections: validation, the nft chain, the public key
// of a private key, the reading of swanctl's SA list. Real tunnels: router-vpn.test.ts.

const ROUTER = "7b000000-0000-4000-8000-000000000001";
const NET = "0a000000-0000-4000-8000-000000000001";
const CONN = "c0000000-0000-4000-8000-000000000001";
const keys = () => {
  const { privateKey, publicKey } = generateKeyPairSync("x25519");
  return { priv: privateKey.export({ format: "der", type: "pkcs8" }).subarray(-32).toString("base64"), pub: publicKey.export({ format: "der", type: "spki" }).subarray(-32).toString("base64") };
};
const K = keys();
const PEER = keys();
type Conn = NonNullable<MessageInitShape<typeof RouterSpecSchema>["vpnConnections"]>[number];
const wg = (over: Partial<Conn> = {}): Conn =>
  ({
    connectionId: CONN,
    type: RouterVpnType.WIREGUARD,
    localSubnets: ["10.1.0.0/24"],
    listenPort: 51820,
    privateKey: K.priv,
    peers: [{ peerId: "site-b", endpoint: "198.51.100.7:51820", remoteSubnets: ["10.20.0.0/16"], publicKey: PEER.pub, persistentKeepaliveSeconds: 25 }],
    ...over,
  }) as Conn;
const spec = (...conns: Conn[]) =>
  create(RouterSpecSchema, {
    routerId: ROUTER,
    external: { physicalNetwork: "ext", address: "203.0.113.5/24", gatewayIp: "203.0.113.1", macAddress: "02:aa:00:00:00:05" },
    interfaces: [{ networkId: NET, macAddress: "02:aa:00:00:01:01", addresses: ["10.1.0.1/24"] }],
    snatEnabled: true,
    vpnConnections: conns,
  });
const violations = (s: ReturnType<typeof spec>) => {
  const c = checkRouterSpec(s);
  assert.equal(c.ok, false);
  return c.ok ? [] : c.violations;
};

test("a good WireGuard connection comes back canonical", () => {
  const c = checkRouterSpec(spec(wg({ peers: [{ peerId: "b", endpoint: "198.51.100.7:51820", remoteSubnets: ["10.20.0.0/16"], publicKey: PEER.pub }] })));
  assert.ok(c.ok, JSON.stringify(!c.ok && c.violations));
  const v = c.value.vpnConnections![0]!;
  assert.equal(v.type, "wireguard");
  assert.equal(v.peers[0]!.endpoint, "198.51.100.7:51820");
  assert.deepEqual(v.localSubnets, ["10.1.0.0/24"]);
});

test("bad connections: every violation with its path, no secret quoted", () => {
  const secret = "secret-looking-but-not-base64-at-all!";
  const got = violations(
    spec(
      wg({ privateKey: secret, localSubnets: ["10.1.0.0/16", "10.1.0.5/24"], peers: [{ peerId: "-x", endpoint: "peer.example:1", remoteSubnets: ["10.1.0.0/25", "10.20.0.0/16"], publicKey: PEER.pub, presharedKey: secret }] }),
      wg({ connectionId: "c1000000-0000-4000-8000-000000000002", listenPort: 51820, peers: [{ peerId: "y", endpoint: "198.51.100.8:0", remoteSubnets: ["10.20.1.0/24"], publicKey: PEER.pub }] }),
    ),
  );
  const fields = got.map((v) => v.field).sort();
  assert.deepEqual(fields, [
    "spec.vpn_connections[0].local_subnets[0]",
    "spec.vpn_connections[0].local_subnets[1]",
    "spec.vpn_connections[0].peers[0].endpoint",
    "spec.vpn_connections[0].peers[0].peer_id",
    "spec.vpn_connections[0].peers[0].preshared_key",
    "spec.vpn_connections[0].peers[0].remote_subnets[0]",
    "spec.vpn_connections[0].private_key",
    "spec.vpn_connections[1].listen_port",
    "spec.vpn_connections[1].peers[0].endpoint",
    "spec.vpn_connections[1].peers[0].remote_subnets[0]",
  ]);
  assert.ok(!JSON.stringify(got).includes(secret));
  // The first 12 hex digits name the device: two connections sharing them are refused.
  const dup = violations(spec(wg(), wg({ connectionId: "c0000000-0000-4000-8000-000000000009", listenPort: 51821, peers: [{ peerId: "z", remoteSubnets: ["10.30.0.0/24"], publicKey: keys().pub }] })));
  assert.deepEqual(dup.map((v) => v.field), ["spec.vpn_connections[1].connection_id"]);
  // A key must be 32 bytes: 44 characters whose last data character carries no stray bits.
  const almost = `${PEER.pub.slice(0, 42)}B=`;
  assert.deepEqual(violations(spec(wg({ peers: [{ peerId: "b", remoteSubnets: ["10.20.0.0/16"], publicKey: almost }] }))).map((v) => v.field), ["spec.vpn_connections[0].peers[0].public_key"]);
  assert.deepEqual(violations(spec(wg({ type: RouterVpnType.UNSPECIFIED }))).map((v) => v.field), ["spec.vpn_connections[0].type"]);
});

test("IPsec connections: endpoint and PSK required, WireGuard fields refused", () => {
  const got = violations(spec({ connectionId: CONN, type: RouterVpnType.IPSEC, localSubnets: ["10.1.0.0/24"], listenPort: 500, privateKey: K.priv, peers: [{ peerId: "b", remoteSubnets: ["10.20.0.0/16"], publicKey: PEER.pub, presharedKey: 'has "quotes" in it' }] }));
  assert.deepEqual(got.map((v) => v.field).sort(), [
    "spec.vpn_connections[0].listen_port",
    "spec.vpn_connections[0].peers[0].endpoint",
    "spec.vpn_connections[0].peers[0].preshared_key",
    "spec.vpn_connections[0].peers[0].public_key",
    "spec.vpn_connections[0].private_key",
  ]);
  const ok = checkRouterSpec(spec({ connectionId: CONN, type: RouterVpnType.IPSEC, localSubnets: ["10.1.0.0/24"], ikeProposals: ["aes256-sha256-modp2048"], dpdIntervalSeconds: 30, peers: [{ peerId: "b", endpoint: "198.51.100.7:500", remoteSubnets: ["10.20.0.0/16"], presharedKey: "a long enough secret", remoteId: "gw.example" }] }));
  assert.ok(ok.ok, JSON.stringify(!ok.ok && ok.violations));
  assert.deepEqual(ok.value.vpnConnections![0]!.ipsec, { ikeVersion: 2, ikeProposals: ["aes256-sha256-modp2048"], espProposals: [], ikeLifetime: 0, ipsecLifetime: 0, dpd: 30 });
  const tuning = violations(spec({ connectionId: CONN, type: RouterVpnType.IPSEC, localSubnets: ["10.1.0.0/24"], ikeVersion: 3, ikeProposals: ["aes256 sha256"], espProposals: ["AES"], ikeLifetimeSeconds: 10, ipsecLifetimeSeconds: 100_000, dpdIntervalSeconds: 1, peers: [{ peerId: "b", endpoint: "198.51.100.7:500", remoteSubnets: ["10.20.0.0/16"], presharedKey: "a long enough secret" }] }));
  assert.deepEqual(tuning.map((v) => v.field).sort(), [
    "spec.vpn_connections[0].dpd_interval_seconds",
    "spec.vpn_connections[0].esp_proposals[0]",
    "spec.vpn_connections[0].ike_lifetime_seconds",
    "spec.vpn_connections[0].ike_proposals[0]",
    "spec.vpn_connections[0].ike_version",
    "spec.vpn_connections[0].ipsec_lifetime_seconds",
  ]);
  assert.deepEqual(violations(spec(wg({ espProposals: ["aes128-sha256"] }))).map((v) => v.field), ["spec.vpn_connections[0].esp_proposals"]);
});

test("the nft script: an empty VPN chain without VPNs; with one, the tunnel only carries the local subnets and SNAT stays on qre", () => {
  const none = checkRouterSpec(spec());
  assert.ok(none.ok);
  assert.match(routerRuleset(none.value), /chain vpn_forward \{\n  \}/, "declared and empty (flushed when the last VPN goes)");
  assert.doesNotMatch(routerRuleset(none.value), /qw|ipsec0/);
  const one = checkRouterSpec(spec(wg()));
  assert.ok(one.ok);
  const script = routerRuleset(one.value);
  assert.match(script, /oifname "qwc00000000000" ip saddr != \{ 10\.1\.0\.0\/24 \} drop/);
  assert.match(script, /iifname "qwc00000000000" ip daddr != \{ 10\.1\.0\.0\/24 \} drop/);
  assert.match(script, /oifname "qre" ip saddr @internal snat to 203\.0\.113\.5/);
  assert.ok(!script.includes(K.priv), "no key in the script");
});

test("the public key of a private key is WireGuard's (as wg pubkey says)", () => {
  assert.equal(wireguardPublicKey(K.priv), K.pub);
  let fromWg: string | undefined;
  try {
    fromWg = execFileSync("wg", ["pubkey"], { input: `${K.priv}\n` }).toString().trim();
  } catch {
    // wg not installed here: node's X25519 above is the reference.
  }
  if (fromWg !== undefined) assert.equal(wireguardPublicKey(K.priv), fromWg);
});

test("swanctl --list-sas: state, establishment, endpoint and bytes; two SAs of one name add up", () => {
  const text = [
    "c0123456789abp0: #2, ESTABLISHED, IKEv2, 5ccb52712c1458e4_i aa8bfd897d4261e4_r*",
    "  local  '203.0.113.5' @ 203.0.113.5[4500]",
    "  remote '203.0.113.6' @ 203.0.113.6[4500]",
    "  AES_CBC-128/HMAC_SHA2_256_128/PRF_HMAC_SHA2_256/CURVE_25519",
    "  established 4s ago, rekeying in 13982s",
    "  net: #1, reqid 1, INSTALLED, TUNNEL-in-UDP, ESP:AES_CBC-128/HMAC_SHA2_256_128",
    "    installed 4s ago, rekeying in 3301s, expires in 3956s",
    "    in  37c5b2fd,    168 bytes,     2 packets,     0s ago",
    "    out 6f36390e,    200 bytes,     2 packets,     0s ago",
    "    local  10.61.0.0/24",
    "    remote 10.62.0.0/24",
    "c0123456789abp0: #3, ESTABLISHED, IKEv2, 1111111111111111_i 2222222222222222_r",
    "  remote '203.0.113.6' @ 203.0.113.6[4500]",
    "  established 2s ago, rekeying in 13982s",
    "  net: #2, reqid 1, INSTALLED, TUNNEL-in-UDP, ESP:AES_CBC-128/HMAC_SHA2_256_128",
    "    in  47c5b2fd,     10 bytes,     1 packets,     0s ago",
    "    out 7f36390e,      0 bytes,     0 packets",
    "c0123456789abp1: #4, CONNECTING, IKEv2, 3333333333333333_i",
    "  remote '198.51.100.9' @ 198.51.100.9[500]",
    "",
  ].join("\n");
  const sas = parseSas(text, 1000);
  assert.deepEqual(sas.get("c0123456789abp0"), { state: "ESTABLISHED", established: 998, remote: "203.0.113.6:4500", installed: true, rx: 178n, tx: 200n });
  assert.deepEqual(sas.get("c0123456789abp1"), { state: "CONNECTING", established: 0, remote: "198.51.100.9:500", installed: false, rx: 0n, tx: 0n });
});
