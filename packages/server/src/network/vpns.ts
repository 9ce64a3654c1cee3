import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { IkeVersion, VpnPeerState, VpnType, type VpnPeerStatusSchema, type VpnService } from "@quantix/api/gen/Quantixkvm/network/v1/vpn_service_pb.js";
import { RouterVpnPeerState, RouterVpnType, type RouterVpnConnectionSchema, type RouterVpnStatus } from "@quantix/api/gen/vmm/v1/network_pb.js";
import { vpnEndpoint } from "@quantix/core";

/**
 * VPN services on central routers (issue 15): each enabled service of a network with an
 * enabled peer is one RouterVpnConnection of the network's router (its id the service's;
 * the peers by name; an endpoint without a port gets the protocol's, 51820 or 500), and
 * its status is read back from the router's. Pure.
 */

export type RouterVpnInit = MessageInitShape<typeof RouterVpnConnectionSchema>;

/** The router's VPN connections of one network's services. */
export function routerVpnConnections(vpns: readonly VpnService[]): RouterVpnInit[] {
  const out: RouterVpnInit[] = [];
  for (const v of [...vpns].sort((a, b) => a.id.localeCompare(b.id))) {
    const spec = v.spec;
    if (!spec || spec.disabled) continue;
    const wg = spec.type === VpnType.WIREGUARD;
    const peers = spec.peers.filter((p) => !p.disabled);
    if (peers.length === 0) continue;
    const pc = spec.protocolConfig;
    const defaultPort = wg ? 51820 : 500;
    out.push({
      connectionId: v.id,
      type: wg ? RouterVpnType.WIREGUARD : RouterVpnType.IPSEC,
      localSubnets: [...spec.localSubnets],
      listenPort: pc.case === "wireguard" ? pc.value.listenPort : 0,
      privateKey: pc.case === "wireguard" ? pc.value.privateKey : "",
      peers: peers.map((p) => {
        const e = vpnEndpoint(p.endpoint);
        return {
          peerId: p.name,
          endpoint: e.address === "" ? "" : `${e.address}:${e.port || defaultPort}`,
          remoteSubnets: [...p.remoteSubnets],
          publicKey: p.publicKey,
          presharedKey: p.presharedKey,
          persistentKeepaliveSeconds: p.persistentKeepaliveSeconds,
          remoteId: p.remoteId,
        };
      }),
      ...(pc.case === "ipsec"
        ? {
            localId: pc.value.localId,
            ikeVersion: pc.value.ikeVersion === IkeVersion.IKEV1 ? 1 : 2,
            ikeProposals: [...pc.value.ikeProposals],
            espProposals: [...pc.value.espProposals],
            ikeLifetimeSeconds: pc.value.ikeLifetimeSeconds,
            ipsecLifetimeSeconds: pc.value.ipsecLifetimeSeconds,
            dpdIntervalSeconds: pc.value.dpdIntervalSeconds,
          }
        : {}),
    });
  }
  return out;
}

const PEER_STATE: Record<RouterVpnPeerState, VpnPeerState> = {
  [RouterVpnPeerState.UNSPECIFIED]: VpnPeerState.UNSPECIFIED,
  [RouterVpnPeerState.CONNECTING]: VpnPeerState.CONNECTING,
  [RouterVpnPeerState.UP]: VpnPeerState.UP,
  [RouterVpnPeerState.DOWN]: VpnPeerState.DOWN,
};

/** Each peer of a service as its router reports it (a disabled peer DISABLED; one the router has not reported CONNECTING). */
export function peerStatuses(v: VpnService, seen: RouterVpnStatus | undefined): MessageInitShape<typeof VpnPeerStatusSchema>[] {
  return (v.spec?.peers ?? []).map((p): MessageInitShape<typeof VpnPeerStatusSchema> => {
    if (p.disabled || v.spec?.disabled) return { name: p.name, state: VpnPeerState.DISABLED, message: v.spec?.disabled ? "the service is disabled" : "the peer is disabled" };
    const s = seen?.peers.find((x) => x.peerId === p.name);
    if (!s) return { name: p.name, state: VpnPeerState.CONNECTING, message: "the router has not reported this peer yet" };
    return {
      name: p.name,
      state: PEER_STATE[s.state] ?? VpnPeerState.UNSPECIFIED,
      observedEndpoint: s.endpoint,
      ...(s.lastHandshakeUnix > 0n ? { lastHandshakeAt: timestampFromMs(Number(s.lastHandshakeUnix) * 1000) } : {}),
      rxBytes: s.rxBytes,
      txBytes: s.txBytes,
      message: s.state === RouterVpnPeerState.UP ? "" : s.state === RouterVpnPeerState.DOWN ? "no handshake for 180 s" : "no handshake yet",
    };
  });
}
