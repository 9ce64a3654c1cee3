/**
 * The desired state of this host's networking, validated and in canonical form: what
 * the state file keeps and what the data plane is built from. Every string in it has
 * been parsed (addresses, prefixes, MACs, RFC 1123 names) or is a canonical UUID.
 */

/** An IPv4 subnet of a network. */
export interface SubnetDesired {
  /** Canonical "a.b.c.d/len". */
  readonly cidr: string;
  readonly gatewayIp?: string | undefined;
  readonly dnsServers: readonly string[];
  readonly dhcp: boolean;
  /** This host's address in the subnet (on the bridge, for dnsmasq). */
  readonly serviceAddress?: string | undefined;
  readonly leaseSeconds: number;
}

/** An extra address a port may send from. */
export interface AddressPair {
  /** Canonical "a.b.c.d/len". */
  readonly ipPrefix: string;
  /** Lowercase MAC. */
  readonly mac: string;
}

/** A port bound to this host. */
export interface PortDesired {
  readonly portId: string;
  readonly mac: string;
  readonly fixedIps: readonly string[];
  readonly pairs: readonly AddressPair[];
  readonly securityGroupIds: readonly string[];
  readonly portSecurity: boolean;
  readonly hostname?: string | undefined;
}

/** A port of the network on another host. */
export interface RemotePortDesired {
  readonly mac: string;
  readonly underlay: string;
  readonly ips: readonly string[];
  readonly hostname?: string | undefined;
}

/**
 * The network's gateway on this host: every subnet's gateway IP on the bridge, the
 * bridge's MAC derived from the network id, IPv4 forwarding, permanent neighbours for the
 * remote ports (routed to through their hosts); "nat" also masquerades the subnets'
 * traffic leaving through any interface but the bridges of networks with a gateway.
 */
export interface GatewayDesired {
  readonly mode: "routed" | "nat";
}

/** One network's desired state on this host. */
export interface NetworkDesired {
  readonly networkId: string;
  readonly vni: number;
  readonly mtu: number;
  readonly localUnderlay: string;
  readonly peers: readonly string[];
  readonly subnets: readonly SubnetDesired[];
  readonly ports: readonly PortDesired[];
  readonly remotePorts: readonly RemotePortDesired[];
  readonly dnsDomain?: string | undefined;
  /** Absent: no gateway (also in state files written before gateways existed). */
  readonly gateway?: GatewayDesired | undefined;
}

/** One allow rule of a security group. */
export interface RuleDesired {
  readonly direction: "ingress" | "egress";
  readonly protocol: "any" | "tcp" | "udp" | "icmp";
  readonly portMin?: number | undefined;
  readonly portMax?: number | undefined;
  readonly icmpType?: number | undefined;
  readonly icmpCode?: number | undefined;
  /** Canonical prefix. */
  readonly remotePrefix?: string | undefined;
  readonly remoteGroupId?: string | undefined;
}

/** One security group's desired state on this host. */
export interface SecurityGroupDesired {
  readonly securityGroupId: string;
  readonly rules: readonly RuleDesired[];
  /** Member IPv4 addresses, sorted, unique. */
  readonly members: readonly string[];
}

/** Everything the agent keeps: the state file's content. */
export interface HostNetworkState {
  readonly networks: Readonly<Record<string, { readonly spec: NetworkDesired; readonly generation: string }>>;
  readonly securityGroups: Readonly<Record<string, { readonly spec: SecurityGroupDesired; readonly generation: string }>>;
}
