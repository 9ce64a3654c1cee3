import { RouterVpnType, type RouterVpnConnection } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { WIREGUARD_KEY, type Violations } from "@quantix/core";
import { contains4, formatIp4, formatPrefix4, overlaps4, parseIp4, parsePrefix4, type Prefix4 } from "./ipv4.js";
import { shortId } from "./names.js";
import type { VpnConnectionDesired, VpnPeerDesired } from "./router-model.js";
import { uuid } from "./validation.js";

/**
 * Validation of a router's VPN connections (pure). Secrets (private and preshared keys)
 * are checked for shape only: no description ever quotes a value of theirs.
 */

/** Base64 of exactly 32 bytes (a WireGuard key). */
/** A peer's id: a name or a UUID. */
const PEER_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
/** An IKE identity: printable, no spaces or quotes (it goes into a config file). */
const IKE_ID = /^[A-Za-z0-9@._:=,+-]{1,128}$/;
/** An IPsec PSK: printable ASCII without quotes or backslashes. */
const PSK = /^[\x20-\x21\x23-\x5b\x5d-\x7e]{8,128}$/;

const MAX_CONNECTIONS = 16;
const MAX_PEERS = 32;
const MAX_SUBNETS = 32;
const MAX_PROPOSALS = 8;
/** A strongSwan proposal: algorithm names joined by '-'. */
const PROPOSAL = /^[a-z0-9]+(-[a-z0-9]+)*$/;

/** "a.b.c.d:port" canonical, or undefined (a violation added). */
function endpoint(v: Violations, field: string, value: string): string | undefined {
  const m = /^([0-9.]+):([0-9]{1,5})$/.exec(value);
  const addr = m ? parseIp4(m[1]!) : undefined;
  const port = m ? Number(m[2]) : 0;
  if (addr === undefined || port < 1 || port > 65535) {
    v.add(field, "INVALID_FORMAT", 'must be an IPv4 address and a port, "a.b.c.d:port" (no host names), port 1 to 65535');
    return undefined;
  }
  return `${formatIp4(addr)}:${port}`;
}

/** A list of 1 to 16 CIDRs (network addresses), canonical. */
function cidrs(v: Violations, field: string, values: readonly string[]): { text: string; pre: Prefix4; field: string }[] {
  if (values.length === 0) v.add(field, "REQUIRED", "at least one IPv4 CIDR");
  if (values.length > MAX_SUBNETS) v.add(field, "TOO_MANY", `at most ${MAX_SUBNETS}, got ${values.length}`);
  const out: { text: string; pre: Prefix4; field: string }[] = [];
  values.forEach((c, i) => {
    const pre = parsePrefix4(c, { strict: true });
    if (!pre) v.add(`${field}[${i}]`, "INVALID_FORMAT", "must be an IPv4 CIDR with no host bits set, e.g. 10.1.0.0/24");
    else out.push({ text: formatPrefix4(pre), pre, field: `${field}[${i}]` });
  });
  return out;
}

/**
 * Checks `spec.vpn_connections` (at `p`). `internal`: the router's internal subnets (local
 * subnets must lie inside one); `claimed`: every subnet of the router with its field (no
 * remote subnet may overlap one).
 */
export function checkVpnConnections(v: Violations, p: string, conns: readonly RouterVpnConnection[], internal: readonly Prefix4[], claimed: readonly { pre: Prefix4; field: string }[]): VpnConnectionDesired[] {
  if (conns.length > MAX_CONNECTIONS) v.add(p, "TOO_MANY", `at most ${MAX_CONNECTIONS}, got ${conns.length}`);
  const ids = new Map<string, string>();
  const ports = new Map<number, string>();
  const remote: { pre: Prefix4; field: string }[] = [];
  const out: VpnConnectionDesired[] = [];
  conns.forEach((c, i) => {
    const f = `${p}[${i}]`;
    const before = v.list.length;
    if (uuid(v, `${f}.connection_id`, c.connectionId)) {
      const clash = ids.get(shortId(c.connectionId));
      if (clash) v.add(`${f}.connection_id`, "DUPLICATE", `shares its first 12 hex digits (its device's name) with ${clash}`);
      ids.set(shortId(c.connectionId), `${f}.connection_id`);
    }
    const type = c.type === RouterVpnType.WIREGUARD ? "wireguard" : c.type === RouterVpnType.IPSEC ? "ipsec" : undefined;
    if (!type) v.add(`${f}.type`, "REQUIRED", "must be WIREGUARD or IPSEC");
    const local = cidrs(v, `${f}.local_subnets`, c.localSubnets);
    for (const l of local) {
      if (!internal.some((s) => s.len <= l.pre.len && contains4(s, l.pre.net))) v.add(l.field, "OUT_OF_RANGE", `${l.text} is not inside one of the router's internal subnets (${internal.map(formatPrefix4).join(", ") || "none"})`);
    }
    if (type === "wireguard") {
      if (c.listenPort < 1 || c.listenPort > 65535) v.add(`${f}.listen_port`, "OUT_OF_RANGE", "must be a UDP port, 1 to 65535");
      else if (ports.has(c.listenPort)) v.add(`${f}.listen_port`, "DUPLICATE", `is ${ports.get(c.listenPort)!}'s port already`);
      else ports.set(c.listenPort, `${f}.listen_port`);
      if (v.required(`${f}.private_key`, c.privateKey !== "")) v.pattern(`${f}.private_key`, c.privateKey, WIREGUARD_KEY, "must be a WireGuard key: base64 of 32 bytes (44 characters ending in '=')");
      if (c.localId !== "") v.add(`${f}.local_id`, "INVALID_VALUE", "is for IPSEC connections only");
      const ipsecOnly = [["ike_version", c.ikeVersion !== 0], ["ike_proposals", c.ikeProposals.length > 0], ["esp_proposals", c.espProposals.length > 0], ["ike_lifetime_seconds", c.ikeLifetimeSeconds !== 0], ["ipsec_lifetime_seconds", c.ipsecLifetimeSeconds !== 0], ["dpd_interval_seconds", c.dpdIntervalSeconds !== 0]] as const;
      for (const [name, set] of ipsecOnly) if (set) v.add(`${f}.${name}`, "INVALID_VALUE", "is for IPSEC connections only");
    } else if (type === "ipsec") {
      if (c.ikeVersion > 2) v.add(`${f}.ike_version`, "OUT_OF_RANGE", "must be 1 or 2 (0 means 2)");
      for (const [name, list] of [["ike_proposals", c.ikeProposals], ["esp_proposals", c.espProposals]] as const) {
        if (list.length > MAX_PROPOSALS) v.add(`${f}.${name}`, "TOO_MANY", `at most ${MAX_PROPOSALS}, got ${list.length}`);
        list.forEach((x, k) => v.pattern(`${f}.${name}[${k}]`, x, PROPOSAL, 'must be a strongSwan proposal: algorithm names joined by "-", e.g. "aes256-sha256-modp2048"'));
      }
      if (c.ikeLifetimeSeconds !== 0 && (c.ikeLifetimeSeconds < 600 || c.ikeLifetimeSeconds > 86_400)) v.add(`${f}.ike_lifetime_seconds`, "OUT_OF_RANGE", "must be 600-86400 (0: strongSwan's default)");
      if (c.ipsecLifetimeSeconds !== 0 && (c.ipsecLifetimeSeconds < 300 || c.ipsecLifetimeSeconds > 86_400)) v.add(`${f}.ipsec_lifetime_seconds`, "OUT_OF_RANGE", "must be 300-86400 (0: strongSwan's default)");
      if (c.dpdIntervalSeconds !== 0 && (c.dpdIntervalSeconds < 5 || c.dpdIntervalSeconds > 3_600)) v.add(`${f}.dpd_interval_seconds`, "OUT_OF_RANGE", "must be 5-3600 (0 means 10)");
      if (c.listenPort !== 0) v.add(`${f}.listen_port`, "INVALID_VALUE", "is for WIREGUARD connections only (IKE uses UDP 500 and 4500)");
      if (c.privateKey !== "") v.add(`${f}.private_key`, "INVALID_VALUE", "is for WIREGUARD connections only");
      if (c.localId !== "") v.pattern(`${f}.local_id`, c.localId, IKE_ID, "must be 1 to 128 of letters, digits and @._:=,+-");
    }
    if (c.peers.length === 0) v.add(`${f}.peers`, "REQUIRED", "at least one peer");
    if (c.peers.length > MAX_PEERS) v.add(`${f}.peers`, "TOO_MANY", `at most ${MAX_PEERS}, got ${c.peers.length}`);
    const peerIds = new Map<string, string>();
    const keys = new Map<string, string>();
    const peers: VpnPeerDesired[] = [];
    c.peers.forEach((x, j) => {
      const fp = `${f}.peers[${j}]`;
      if (v.required(`${fp}.peer_id`, x.peerId !== "") && v.pattern(`${fp}.peer_id`, x.peerId, PEER_ID, "must be 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit")) {
        if (peerIds.has(x.peerId)) v.add(`${fp}.peer_id`, "DUPLICATE", `is ${peerIds.get(x.peerId)!}'s id already`);
        peerIds.set(x.peerId, `${fp}.peer_id`);
      }
      let ep = "";
      if (x.endpoint !== "") ep = endpoint(v, `${fp}.endpoint`, x.endpoint) ?? "";
      else if (type === "ipsec") v.add(`${fp}.endpoint`, "REQUIRED", "an IPsec peer needs its address and port");
      const subnets = cidrs(v, `${fp}.remote_subnets`, x.remoteSubnets);
      for (const s of subnets) {
        const own = claimed.find((o) => overlaps4(o.pre, s.pre));
        if (own) v.add(s.field, "OVERLAP", `${s.text} overlaps the router's own subnet at ${own.field}`);
        const other = remote.find((o) => overlaps4(o.pre, s.pre));
        if (other) v.add(s.field, "OVERLAP", `${s.text} overlaps ${other.field}`);
        remote.push(s);
      }
      if (type === "wireguard") {
        if (v.required(`${fp}.public_key`, x.publicKey !== "") && v.pattern(`${fp}.public_key`, x.publicKey, WIREGUARD_KEY, "must be a WireGuard key: base64 of 32 bytes (44 characters ending in '=')")) {
          if (keys.has(x.publicKey)) v.add(`${fp}.public_key`, "DUPLICATE", `is ${keys.get(x.publicKey)!}'s key already`);
          keys.set(x.publicKey, `${fp}.public_key`);
        }
        if (x.presharedKey !== "") v.pattern(`${fp}.preshared_key`, x.presharedKey, WIREGUARD_KEY, "must be a WireGuard key: base64 of 32 bytes (44 characters ending in '=')");
        if (x.persistentKeepaliveSeconds > 65535) v.add(`${fp}.persistent_keepalive_seconds`, "OUT_OF_RANGE", "at most 65535");
        if (x.remoteId !== "") v.add(`${fp}.remote_id`, "INVALID_VALUE", "is for IPSEC connections only");
      } else if (type === "ipsec") {
        if (x.publicKey !== "") v.add(`${fp}.public_key`, "INVALID_VALUE", "is for WIREGUARD connections only");
        if (v.required(`${fp}.preshared_key`, x.presharedKey !== "", "an IPsec peer authenticates with a PSK")) v.pattern(`${fp}.preshared_key`, x.presharedKey, PSK, "must be 8 to 128 printable ASCII characters without quotes or backslashes");
        if (x.remoteId !== "") v.pattern(`${fp}.remote_id`, x.remoteId, IKE_ID, "must be 1 to 128 of letters, digits and @._:=,+-");
        if (x.persistentKeepaliveSeconds !== 0) v.add(`${fp}.persistent_keepalive_seconds`, "INVALID_VALUE", "is for WIREGUARD connections only");
      }
      peers.push({ peerId: x.peerId, endpoint: ep, remoteSubnets: subnets.map((s) => s.text), publicKey: x.publicKey, presharedKey: x.presharedKey, keepalive: x.persistentKeepaliveSeconds, remoteId: x.remoteId });
    });
    if (v.list.length === before && type) {
      const ipsec = type === "ipsec" ? { ipsec: { ikeVersion: c.ikeVersion === 1 ? (1 as const) : (2 as const), ikeProposals: [...c.ikeProposals], espProposals: [...c.espProposals], ikeLifetime: c.ikeLifetimeSeconds, ipsecLifetime: c.ipsecLifetimeSeconds, dpd: c.dpdIntervalSeconds } } : {};
      out.push({ connectionId: c.connectionId, type, localSubnets: local.map((l) => l.text), listenPort: c.listenPort, privateKey: c.privateKey, peers, localId: c.localId, ...ipsec });
    }
  });
  return out.sort((a, b) => a.connectionId.localeCompare(b.connectionId));
}
