import { createClient, type Client, type Transport } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { NetworkService, type NetworkCapabilities, type NetworkSpecSchema, type NetworkStatus, type RouterSpecSchema, type RouterStatus, type SecurityGroupSpecSchema, type SecurityGroupStatus } from "@quantix/api/gen/vmm/v1/network_pb.js";

/**
 * One node's network data plane as the network controller drives it: the agent's
 * vmm.v1.NetworkService (declarative: a network's or a group's whole desired state per
 * call; see docs/api/network-service.md), on the node's agent connection.
 */
export interface NodeNetwork {
  applyNetwork(spec: MessageInitShape<typeof NetworkSpecSchema>, generation: bigint): Promise<NetworkStatus>;
  deleteNetwork(networkId: string): Promise<void>;
  listNetworks(): Promise<NetworkStatus[]>;
  applySecurityGroup(spec: MessageInitShape<typeof SecurityGroupSpecSchema>, generation: bigint): Promise<SecurityGroupStatus>;
  updateSecurityGroupMembers(securityGroupId: string, addIps: readonly string[], removeIps: readonly string[]): Promise<SecurityGroupStatus>;
  deleteSecurityGroup(securityGroupId: string): Promise<void>;
  listSecurityGroups(): Promise<SecurityGroupStatus[]>;
  capabilities(): Promise<NetworkCapabilities>;
  applyRouter(spec: MessageInitShape<typeof RouterSpecSchema>, generation: bigint): Promise<RouterStatus>;
  deleteRouter(routerId: string): Promise<void>;
  listRouters(): Promise<RouterStatus[]>;
}

/** NodeNetwork over a host agent's NetworkService; `wrap` refuses at once while the node is unreachable and maps the agent's errors (as its VM calls). */
export class AgentNodeNetwork implements NodeNetwork {
  private readonly client: Client<typeof NetworkService>;

  constructor(
    transport: Transport,
    private readonly wrap: <T>(fn: () => Promise<T>) => Promise<T>,
  ) {
    this.client = createClient(NetworkService, transport);
  }

  applyNetwork(spec: MessageInitShape<typeof NetworkSpecSchema>, generation: bigint): Promise<NetworkStatus> {
    return this.wrap(() => this.client.applyNetwork({ spec, generation }));
  }

  async deleteNetwork(networkId: string): Promise<void> {
    await this.wrap(() => this.client.deleteNetwork({ networkId }));
  }

  async listNetworks(): Promise<NetworkStatus[]> {
    return (await this.wrap(() => this.client.listNetworks({}))).networks;
  }

  applySecurityGroup(spec: MessageInitShape<typeof SecurityGroupSpecSchema>, generation: bigint): Promise<SecurityGroupStatus> {
    return this.wrap(() => this.client.applySecurityGroup({ spec, generation }));
  }

  updateSecurityGroupMembers(securityGroupId: string, addIps: readonly string[], removeIps: readonly string[]): Promise<SecurityGroupStatus> {
    return this.wrap(() => this.client.updateSecurityGroupMembers({ securityGroupId, addIps: [...addIps], removeIps: [...removeIps] }));
  }

  async deleteSecurityGroup(securityGroupId: string): Promise<void> {
    await this.wrap(() => this.client.deleteSecurityGroup({ securityGroupId }));
  }

  async listSecurityGroups(): Promise<SecurityGroupStatus[]> {
    return (await this.wrap(() => this.client.listSecurityGroups({}))).securityGroups;
  }

  capabilities(): Promise<NetworkCapabilities> {
    return this.wrap(() => this.client.getNetworkCapabilities({}));
  }

  applyRouter(spec: MessageInitShape<typeof RouterSpecSchema>, generation: bigint): Promise<RouterStatus> {
    return this.wrap(() => this.client.applyRouter({ spec, generation }));
  }

  async deleteRouter(routerId: string): Promise<void> {
    await this.wrap(() => this.client.deleteRouter({ routerId }));
  }

  async listRouters(): Promise<RouterStatus[]> {
    return (await this.wrap(() => this.client.listRouters({}))).routers;
  }
}
