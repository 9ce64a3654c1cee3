import { create } from "@bufbuild/protobuf";
import { IkeVersion, IpsecConfigSchema, VpnType, WireGuardConfigSchema, type VpnServiceSpec } from "@quantix/api/gen/Quantixkvm/network/v1/vpn_service_pb.js";
import { ipv4Overlap, ipv4ToInt, parseIpv4Cidr, type Ipv4Subnet } from "./ipv4.js";
import { NAME_PATTERN, Violations } from "./violations.js";
import { WIREGUARD_KEY } from "./wireguard-keys.js";

/** Limits of a VPN service (VpnServiceSpec's comments). */
export const VPN_LIMITS = {
  localSubnetsMax: 32,
  remoteSubnetsMax: 32,
  /** The contract allows 1000 WireGuard and 50 IPsec peers; the routers serve 32 per service. */
  wireguardPeersMax: 32,
  ipsecPeersMax: 32,
  nameMax: 63,
  defaultWireguardPort: 51820,
  pskMinIpsec: 20,
  pskMaxIpsec: 128,
  idMax: 128,
} as const;

/** An IKE or ESP proposal in strongSwan syntax: algorithm names joined by '-'. */
const PROPOSAL = /^[a-z0-9]+(-[a-z0-9]+)*$/;
/** An IKE identity: an address, a FQDN ("@vpn.example.com") or a user FQDN; no spaces or quotes. */
const IKE_ID = /^[@A-Za-z0-9][A-Za-z0-9@.:_-]*$/;
/** A pre-shared key for IPsec: printable ASCII without quotes or backslashes (it is written into strongSwan's configuration quoted). */
const IPSEC_PSK = /^[\x21\x23-\x26\x28-\x5b\x5d-\x7e]+$/;

/** The defaults VpnServiceSpec's comments give, filled in (read back): the protocol block and its ports and lifetimes, the local subnets. */
export function fillVpnDefaults(spec: VpnServiceSpec, networkSubnets: readonly string[]): void {
  if (spec.localSubnets.length === 0) spec.localSubnets = [...networkSubnets];
  if (spec.type === VpnType.WIREGUARD && spec.protocolConfig.case === undefined) spec.protocolConfig = { case: "wireguard", value: create(WireGuardConfigSchema) };
  if (spec.type === VpnType.IPSEC && spec.protocolConfig.case === undefined) spec.protocolConfig = { case: "ipsec", value: create(IpsecConfigSchema) };
  const pc = spec.protocolConfig;
  if (pc.case === "wireguard" && pc.value.listenPort === 0) pc.value.listenPort = VPN_LIMITS.defaultWireguardPort;
  if (pc.case === "ipsec") {
    const c = pc.value;
    if (c.ikeVersion === IkeVersion.UNSPECIFIED) c.ikeVersion = IkeVersion.IKEV2;
    if (c.ikeLifetimeSeconds === 0) c.ikeLifetimeSeconds = 14_400;
    if (c.ipsecLifetimeSeconds === 0) c.ipsecLifetimeSeconds = 3_600;
    if (c.dpdIntervalSeconds === 0) c.dpdIntervalSeconds = 30;
  }
}

/** "a.b.c.d" or "a.b.c.d:port" (1-65535); host names are not resolved. */
function parseEndpoint(s: string): { address: string; port: number } | undefined {
  const m = /^([0-9.]+)(?::([0-9]{1,5}))?$/.exec(s);
  if (!m || ipv4ToInt(m[1]!) === undefined) return undefined;
  const port = m[2] === undefined ? 0 : Number(m[2]);
  if (m[2] !== undefined && (port < 1 || port > 65_535)) return undefined;
  return { address: m[1]!, port };
}

/**
 * Checks a VPN service's spec with its defaults filled in (fillVpnDefaults), given the
 * network's subnets: every violation named by its field path. Secrets are checked for
 * form only (a stored one kept by an update is already valid). IPv4 only: the networks
 * have IPv4 subnets.
 */
export function checkVpnSpec(v: Violations, spec: VpnServiceSpec | undefined, networkSubnets: readonly string[]): void {
  if (!spec) return v.add("spec", "REQUIRED", "is required: type and network_id");
  const wg = spec.type === VpnType.WIREGUARD;
  const ipsec = spec.type === VpnType.IPSEC;
  if (!wg && !ipsec) v.add("spec.type", "REQUIRED", "is required: VPN_TYPE_WIREGUARD or VPN_TYPE_IPSEC");
  if (spec.networkId === "") v.add("spec.network_id", "REQUIRED", "is required: the network whose central router terminates the VPN");
  const mine = networkSubnets.map((c) => parseIpv4Cidr(c)).filter((c): c is Ipv4Subnet => typeof c !== "string");
  const subnets = (field: string, list: readonly string[], max: number): (Ipv4Subnet | undefined)[] => {
    if (list.length > max) v.add(field, "TOO_MANY", `at most ${max}, got ${list.length}`);
    return list.map((c, i) => {
      if (c.includes(":")) {
        v.add(`${field}[${i}]`, "NOT_SUPPORTED", "IPv6 is not built: the networks have IPv4 subnets");
        return undefined;
      }
      const s = parseIpv4Cidr(c, 1, 32);
      if (typeof s === "string") {
        v.add(`${field}[${i}]`, "INVALID_FORMAT", s);
        return undefined;
      }
      return s;
    });
  };
  const local = subnets("spec.local_subnets", spec.localSubnets, VPN_LIMITS.localSubnetsMax);
  local.forEach((s, i) => {
    if (s && !mine.some((n) => n.network <= s.network && s.broadcast <= n.broadcast)) v.add(`spec.local_subnets[${i}]`, "OUT_OF_RANGE", `${s.cidr} is not inside the network's subnets (${networkSubnets.join(", ")})`);
  });
  const pc = spec.protocolConfig;
  if (pc.case === "wireguard" && !wg) v.add("spec.wireguard", "CONFLICT", "WireGuard settings need type VPN_TYPE_WIREGUARD");
  if (pc.case === "ipsec" && !ipsec) v.add("spec.ipsec", "CONFLICT", "IPsec settings need type VPN_TYPE_IPSEC");
  if (pc.case === "wireguard") {
    if (pc.value.listenPort > 65_535) v.add("spec.wireguard.listen_port", "OUT_OF_RANGE", "must be 1-65535 (0 means 51820)");
    if (pc.value.privateKey !== "" && !WIREGUARD_KEY.test(pc.value.privateKey)) v.add("spec.wireguard.private_key", "INVALID_FORMAT", "must be a WireGuard key: base64 of 32 bytes (as `wg genkey` prints); leave it empty to have one generated");
  }
  if (pc.case === "ipsec") {
    const c = pc.value;
    c.ikeProposals.forEach((p, i) => PROPOSAL.test(p) || v.add(`spec.ipsec.ike_proposals[${i}]`, "INVALID_FORMAT", 'must be a strongSwan proposal, algorithm names joined by "-", e.g. "aes256gcm16-prfsha384-ecp384"'));
    c.espProposals.forEach((p, i) => PROPOSAL.test(p) || v.add(`spec.ipsec.esp_proposals[${i}]`, "INVALID_FORMAT", 'must be a strongSwan proposal, algorithm names joined by "-", e.g. "aes256gcm16-ecp384"'));
    if (c.ikeLifetimeSeconds < 600 || c.ikeLifetimeSeconds > 86_400) v.add("spec.ipsec.ike_lifetime_seconds", "OUT_OF_RANGE", "must be 600-86400 (0 means 14400)");
    if (c.ipsecLifetimeSeconds < 300 || c.ipsecLifetimeSeconds > 86_400) v.add("spec.ipsec.ipsec_lifetime_seconds", "OUT_OF_RANGE", "must be 300-86400 (0 means 3600)");
    if (c.dpdIntervalSeconds < 5 || c.dpdIntervalSeconds > 3_600) v.add("spec.ipsec.dpd_interval_seconds", "OUT_OF_RANGE", "must be 5-3600 (0 means 30)");
    if (c.localId !== "" && (c.localId.length > VPN_LIMITS.idMax || !IKE_ID.test(c.localId))) v.add("spec.ipsec.local_id", "INVALID_FORMAT", `must be an IKE identity (an address or "@fqdn"), at most ${VPN_LIMITS.idMax} characters, no spaces or quotes`);
  }
  const maxPeers = ipsec ? VPN_LIMITS.ipsecPeersMax : VPN_LIMITS.wireguardPeersMax;
  if (spec.peers.length > maxPeers) v.add("spec.peers", "TOO_MANY", `at most ${maxPeers} per service (what a router serves in one connection; use another service for more), got ${spec.peers.length}`);
  const names = new Map<string, number>();
  const remote: { s: Ipv4Subnet; field: string }[] = [];
  spec.peers.forEach((peer, i) => {
    const f = `spec.peers[${i}]`;
    if (peer.name === "") v.add(`${f}.name`, "REQUIRED", "is required");
    else if (peer.name.length > VPN_LIMITS.nameMax || !NAME_PATTERN.test(peer.name)) v.add(`${f}.name`, "INVALID_FORMAT", `must match ${NAME_PATTERN.source}, at most ${VPN_LIMITS.nameMax} characters`);
    else if (names.has(peer.name)) v.add(`${f}.name`, "ALREADY_EXISTS", `peers[${names.get(peer.name)}] has the same name`);
    else names.set(peer.name, i);
    if (peer.endpoint === "") {
      if (ipsec) v.add(`${f}.endpoint`, "REQUIRED", "is required for IPSEC: where the peer is reached");
    } else if (!parseEndpoint(peer.endpoint)) v.add(`${f}.endpoint`, "INVALID_FORMAT", 'must be an IPv4 address, optionally with ":port" (1-65535); host names are not resolved');
    if (peer.remoteSubnets.length === 0) v.add(`${f}.remote_subnets`, "REQUIRED", "is required: the subnets behind the peer");
    subnets(`${f}.remote_subnets`, peer.remoteSubnets, VPN_LIMITS.remoteSubnetsMax).forEach((s, j) => {
      if (!s) return;
      const field = `${f}.remote_subnets[${j}]`;
      const ownClash = mine.find((n) => ipv4Overlap(n, s));
      if (ownClash) v.add(field, "OVERLAP", `${s.cidr} overlaps the network's own subnet ${ownClash.cidr}: the tunnel could not tell where to send`);
      const other = remote.find((r) => ipv4Overlap(r.s, s));
      if (other) v.add(field, "OVERLAP", `${s.cidr} overlaps ${other.s.cidr} (${other.field}): each remote subnet belongs to one peer`);
      remote.push({ s, field });
    });
    if (wg) {
      if (!WIREGUARD_KEY.test(peer.publicKey)) v.add(`${f}.public_key`, peer.publicKey === "" ? "REQUIRED" : "INVALID_FORMAT", "must be the peer's WireGuard public key: base64 of 32 bytes (as `wg pubkey` prints)");
      if (peer.presharedKey !== "" && !WIREGUARD_KEY.test(peer.presharedKey)) v.add(`${f}.preshared_key`, "INVALID_FORMAT", "must be base64 of 32 bytes (as `wg genpsk` prints)");
      if (peer.persistentKeepaliveSeconds > 65_535) v.add(`${f}.persistent_keepalive_seconds`, "OUT_OF_RANGE", "must be 0-65535");
      if (peer.remoteId !== "") v.add(`${f}.remote_id`, "CONFLICT", "is for IPSEC peers");
    }
    if (ipsec) {
      if (peer.presharedKey.length < VPN_LIMITS.pskMinIpsec || peer.presharedKey.length > VPN_LIMITS.pskMaxIpsec || !IPSEC_PSK.test(peer.presharedKey)) {
        v.add(`${f}.preshared_key`, peer.presharedKey === "" ? "REQUIRED" : "INVALID_FORMAT", `is required for IPSEC: ${VPN_LIMITS.pskMinIpsec}-${VPN_LIMITS.pskMaxIpsec} printable ASCII characters without quotes or backslashes`);
      }
      if (peer.publicKey !== "") v.add(`${f}.public_key`, "CONFLICT", "is for WIREGUARD peers");
      if (peer.persistentKeepaliveSeconds !== 0) v.add(`${f}.persistent_keepalive_seconds`, "CONFLICT", "is for WIREGUARD peers (IPSEC uses dpd_interval_seconds)");
      if (peer.remoteId !== "" && (peer.remoteId.length > VPN_LIMITS.idMax || !IKE_ID.test(peer.remoteId))) v.add(`${f}.remote_id`, "INVALID_FORMAT", `must be an IKE identity (an address or "@fqdn"), at most ${VPN_LIMITS.idMax} characters, no spaces or quotes`);
    }
  });
}

/** The peer's endpoint as address and port ("" and 0 for a roaming WireGuard peer; the port 0 when not given). */
export function vpnEndpoint(endpoint: string): { address: string; port: number } {
  return parseEndpoint(endpoint) ?? { address: "", port: 0 };
}
