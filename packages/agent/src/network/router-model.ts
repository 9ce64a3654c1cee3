import { createHash } from "node:crypto";
import { shortId } from "./names.js";

/**
 * A router's desired state, validated and canonical (what the router state file keeps):
 * addresses and prefixes written back by ipv4.ts, MACs lowercase, ids canonical UUIDs,
 * the physical network a configured name. Host names derive from ids only.
 */

/** The external side. */
export interface RouterExternalDesired {
  /** A configured physical network name ([a-z][a-z0-9-]{0,31}). */
  readonly physicalNetwork: string;
  /** "a.b.c.d/len", a host address with its subnet's length. */
  readonly address: string;
  readonly gatewayIp: string;
  readonly mac: string;
}

/** One internal interface. */
export interface RouterInterfaceDesired {
  readonly networkId: string;
  readonly mac: string;
  /** "a.b.c.d/len" each. */
  readonly addresses: readonly string[];
}

/** One floating IP. */
export interface FloatingIpDesired {
  readonly floatingIp: string;
  readonly fixedIp: string;
}

/** A load balancer listener's transport protocol. */
export type LbProtocol = "tcp" | "udp";
/** How a listener picks a new connection's member. */
export type LbAlgorithm = "round_robin" | "source_ip" | "source_ip_port";

/** A listener's member, defaults filled in. */
export interface LbMemberDesired {
  readonly memberId: string;
  readonly address: string;
  readonly port: number;
  readonly weight: number;
}

/** A listener's TCP health check, defaults filled in (port 0: each member's port). */
export interface LbHealthCheckDesired {
  readonly intervalSeconds: number;
  readonly timeoutSeconds: number;
  readonly rise: number;
  readonly fall: number;
  readonly port: number;
}

/** A listener. */
export interface LbListenerDesired {
  readonly protocol: LbProtocol;
  readonly port: number;
  readonly algorithm: LbAlgorithm;
  /** Ordered by member id (the order of the round robin's slots). */
  readonly members: readonly LbMemberDesired[];
  readonly healthCheck?: LbHealthCheckDesired;
}

/** A load balancer. */
export interface LoadBalancerDesired {
  readonly loadBalancerId: string;
  readonly vip: string;
  /** The internal network whose interface carries the VIP; undefined: the external side (`qre`). */
  readonly networkId?: string;
  /** Ordered by protocol, then port. */
  readonly listeners: readonly LbListenerDesired[];
}

/** A router's desired state. */
export interface RouterDesired {
  readonly routerId: string;
  readonly external: RouterExternalDesired;
  /** Ordered by network id. */
  readonly interfaces: readonly RouterInterfaceDesired[];
  readonly snat: boolean;
  /** Ordered by floating IP. */
  readonly floatingIps: readonly FloatingIpDesired[];
  /** Ordered by connection id; absent in state files written before VPNs existed. */
  readonly vpnConnections?: readonly VpnConnectionDesired[];
  /** Ordered by load balancer id. */
  readonly loadBalancers: readonly LoadBalancerDesired[];
}

/** The router state file: the desired routers, and the ids whose host objects may still exist. */
export interface RouterHostState {
  readonly routers: Readonly<Record<string, { readonly spec: RouterDesired; readonly generation: string }>>;
  /** Routers deleted whose namespace the last converge could not remove yet. */
  readonly leftovers: readonly string[];
}

/** A physical network's name in the agent's configuration. */
export const PHYSICAL_NETWORK = /^[a-z][a-z0-9-]{0,31}$/;
/** A host interface name the configuration may map a physical network to. */
export const INTERFACE_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,14}$/;

const hash12 = (text: string): string => createHash("sha256").update(text).digest("hex").slice(0, 12);

/**
 * The router's namespace: `qr<12 hex of the id>`, with `-<8 hex>` of the data plane's
 * namespace when the agent keeps its data plane in one (VMCP_NETWORK_NETNS): named
 * namespaces are the machine's, so several agents on one machine (tests, a lab) each keep
 * their own copy of a router apart.
 */
export const routerNetns = (routerId: string, dataPlaneNetns = ""): string => `qr${shortId(routerId)}${dataPlaneNetns === "" ? "" : `-${hash12(`netns/${dataPlaneNetns}`).slice(0, 8)}`}`;
/** The external bridge of a physical network, in the data plane's namespace. */
export const externalBridgeName = (physicalNetwork: string): string => `qe${hash12(`physnet/${physicalNetwork}`)}`;
/** The data plane's end of the router's external veth (on the external bridge). */
export const externalLegName = (routerId: string): string => `qg${shortId(routerId)}`;
/** The router's end of its external veth, in the router's namespace. */
export const ROUTER_EXTERNAL_DEVICE = "qre";
/** The data plane's end of an internal veth (on the network's bridge). */
export const internalLegName = (routerId: string, networkId: string): string => `qi${hash12(`${routerId}/${networkId}`)}`;
/** The router's end of an internal veth, in the router's namespace. */
export const routerInterfaceName = (networkId: string): string => `qn${shortId(networkId)}`;

/** Names the router code owns: in the data plane's namespace, and in a router's. */
export const OWNED_ROUTER_LINK = /^q[egi][0-9a-f]{12}$/;
export const OWNED_ROUTER_INSIDE_LINK = /^qn[0-9a-f]{12}$/;

/** One peer of a VPN connection. */
export interface VpnPeerDesired {
  readonly peerId: string;
  /** "a.b.c.d:port", or "" (WireGuard: learnt from the peer's handshake). */
  readonly endpoint: string;
  /** Canonical CIDRs, in the spec's order. */
  readonly remoteSubnets: readonly string[];
  /** WireGuard: base64 of 32 bytes; "" for IPsec. */
  readonly publicKey: string;
  /** Secret. WireGuard: base64 of 32 bytes or ""; IPsec: the PSK. */
  readonly presharedKey: string;
  readonly keepalive: number;
  readonly remoteId: string;
}

/** One VPN connection. */
export interface VpnConnectionDesired {
  readonly connectionId: string;
  readonly type: "wireguard" | "ipsec";
  /** Canonical CIDRs. */
  readonly localSubnets: readonly string[];
  readonly listenPort: number;
  /** Secret: base64 of 32 bytes ("" for IPsec). */
  readonly privateKey: string;
  readonly peers: readonly VpnPeerDesired[];
  readonly localId: string;
  /** IPsec tuning (0 / empty: defaults); absent in state files written before it existed. */
  readonly ipsec?: { readonly ikeVersion: 1 | 2; readonly ikeProposals: readonly string[]; readonly espProposals: readonly string[]; readonly ikeLifetime: number; readonly ipsecLifetime: number; readonly dpd: number };
}

/** A WireGuard connection's device in its router's namespace (and its UAPI socket name, host-wide). */
export const vpnInterfaceName = (connectionId: string): string => `qw${shortId(connectionId)}`;
/** Names of VPN devices the router code owns. */
export const OWNED_VPN_LINK = /^qw[0-9a-f]{12}$/;
/** A member's key within its router: load balancer, listener, member (the health checker's and the counters' identity). */
export const lbMemberKey = (lbId: string, l: { protocol: LbProtocol; port: number }, memberId: string): string => `${lbId}/${l.protocol}${l.port}/${memberId}`;

/** The named nftables counters of a member: new connections, and packets/bytes of its connections. */
export function lbCounterNames(lbId: string, l: { protocol: LbProtocol; port: number }, memberId: string): { connections: string; traffic: string } {
  const tail = `${lbId.replaceAll("-", "")}_${l.protocol[0]}${l.port}_${memberId.replaceAll("-", "")}`;
  return { connections: `lbn_${tail}`, traffic: `lbt_${tail}` };
}
/** Counter names the router code owns. */
export const OWNED_LB_COUNTER = /^lb[nt]_[0-9a-f]{32}_[tu][0-9]{1,5}_[0-9a-f]{32}$/;
