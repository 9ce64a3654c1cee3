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
}

/** A WireGuard connection's device in its router's namespace (and its UAPI socket name, host-wide). */
export const vpnInterfaceName = (connectionId: string): string => `qw${shortId(connectionId)}`;
/** Names of VPN devices the router code owns. */
export const OWNED_VPN_LINK = /^qw[0-9a-f]{12}$/;
