import { create } from "@bufbuild/protobuf";
import { EmptySchema } from "@bufbuild/protobuf/wkt";
import { VirtualNetworkService } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import { PortService } from "@quantix/api/gen/Quantixkvm/network/v1/port_service_pb.js";
import { SecurityGroupService } from "@quantix/api/gen/Quantixkvm/network/v1/security_group_service_pb.js";
import { FloatingIpService } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_service_pb.js";
import { VpnServiceManager } from "@quantix/api/gen/Quantixkvm/network/v1/vpn_service_manager_pb.js";
import { LoadBalancerService } from "@quantix/api/gen/Quantixkvm/network/v1/load_balancer_service_pb.js";
import { FLOATING_IP_KIND, VPN_SERVICE_KIND, invalidArgument, LOAD_BALANCER_KIND, notFound, PORT_KIND, SECURITY_GROUP_KIND, VIRTUAL_NETWORK_KIND, type Clock, type IdGenerator, type Store } from "@quantix/core";
import type { Route } from "@quantix/rpc";
import { resourceRoute } from "../resources/resource-routes.js";
import type { QuotaLedger } from "../quota/quota-ledger.js";
import { VirtualNetworkService as Networks } from "../services/network-service.js";
import { PortService as Ports, randomFraction } from "../services/port-service.js";
import { SecurityGroupService as Groups } from "../services/security-group-service.js";
import { FloatingIpService as FloatingIps } from "../services/floating-ip-service.js";
import { VpnServiceService as Vpns } from "../services/vpn-service.js";
import { LoadBalancerService as LoadBalancers, type LoadBalancerStatsSource } from "../services/load-balancer-service.js";
import { budgetOf } from "./budget.js";
import { callerOf } from "../identity/principals.js";
import { featureSupport } from "../network/node-features.js";
import type { NodeNetwork } from "../network/node-network.js";

/**
 * Quantixkvm.network.v1.VirtualNetworkService: Get, List and Watch are the network kind's
 * generic reads; Create, Update and Delete have the network's rules. Networks are stored
 * and their addresses managed; no node sets them up yet (status says so).
 */
export function virtualNetworkServiceRoute(store: Store, networks: Networks): Route {
  return resourceRoute(VirtualNetworkService, VIRTUAL_NETWORK_KIND as never, store, {
    impl: {
      createVirtualNetwork: (req, ctx) => networks.create(req, callerOf(ctx).systemAdmin),
      updateVirtualNetwork: (req) => networks.update(req),
      deleteVirtualNetwork: async (req) => {
        await networks.delete(req);
        return create(EmptySchema);
      },
    },
    // No network is shared yet (spec.shared is refused): there are no other projects' networks to leave out.
    filters: { exclude_shared: () => ({}) },
  });
}

/** Quantixkvm.network.v1.PortService: generic reads (ListPorts' ip_address matches a port's first fixed IP); writes with IPAM. */
export function portServiceRoute(store: Store, ports: Ports): Route {
  return resourceRoute(PortService, PORT_KIND as never, store, {
    impl: {
      createPort: (req) => ports.create(req),
      updatePort: (req) => ports.update(req),
      deletePort: async (req) => {
        await ports.delete(req);
        return create(EmptySchema);
      },
    },
    filters: {
      // Unspecified: any device, or none.
      device_owner: (value) => (value === 0 ? {} : { device_owner: value as number }),
    },
  });
}

/**
 * Quantixkvm.network.v1.SecurityGroupService: generic reads (ListSecurityGroups' port_id
 * lists the groups of that port's spec.security_group_ids); writes and rule changes with
 * the group's rules.
 */
export function securityGroupServiceRoute(store: Store, groups: Groups, defaultDeadlineMs: number): Route {
  return resourceRoute(SecurityGroupService, SECURITY_GROUP_KIND as never, store, {
    impl: {
      createSecurityGroup: (req) => groups.create(req),
      updateSecurityGroup: (req) => groups.update(req),
      deleteSecurityGroup: async (req, ctx) => {
        await groups.delete(req, budgetOf(ctx, defaultDeadlineMs));
        return create(EmptySchema);
      },
      addSecurityGroupRules: (req) => groups.addRules(req),
      removeSecurityGroupRules: (req) => groups.removeRules(req),
    },
    filters: {
      port_id: {
        // The groups the port uses. A port the List does not cover (another project's, or
        // none) is NOT_FOUND in the words GetPort uses for a missing one: nothing is told.
        lookup: async (value, scope) => {
          const id = value as string;
          const port = await store.of(PORT_KIND).get(id);
          if (!port || (scope.projects && !scope.projects.includes(port.projectId))) throw notFound(PORT_KIND.name, id);
          return { id: [...new Set(port.spec?.securityGroupIds ?? [])].sort() };
        },
      },
    },
  });
}

/**
 * Quantixkvm.network.v1.FloatingIpService: generic reads (filters by external network,
 * port, VM and address); allocation with IPAM on the external network; associations are
 * checked and refused while routers to external networks are not built.
 */
export function floatingIpServiceRoute(store: Store, fips: FloatingIps): Route {
  return resourceRoute(FloatingIpService, FLOATING_IP_KIND as never, store, {
    impl: {
      createFloatingIp: (req, ctx) => fips.create(req, callerOf(ctx).systemAdmin),
      updateFloatingIp: (req) => fips.update(req),
      deleteFloatingIp: async (req) => {
        await fips.delete(req);
        return create(EmptySchema);
      },
      associateFloatingIp: (req) => fips.associate(req),
      disassociateFloatingIp: (req) => fips.disassociate(req),
    },
  });
}

/**
 * Quantixkvm.network.v1.VpnServiceManager: generic reads (filters by network, type and
 * state; secrets emptied by the kind), writes through the VPN service's rules.
 */
export function vpnServiceManagerRoute(store: Store, vpns: Vpns, defaultDeadlineMs = 30_000): Route {
  return resourceRoute(VpnServiceManager, VPN_SERVICE_KIND as never, store, {
    impl: {
      createVpnService: (req) => vpns.create(req),
      updateVpnService: (req) => vpns.update(req),
      deleteVpnService: async (req, ctx) => {
        await vpns.delete(req, budgetOf(ctx, defaultDeadlineMs));
        return create(EmptySchema);
      },
      addVpnPeer: (req) => vpns.addPeer(req),
      removeVpnPeer: (req) => vpns.removePeer(req),
    },
  });
}

/**
 * Quantixkvm.network.v1.LoadBalancerService: generic reads (filters by project, labels,
 * VIP network and states; member_vm_id is refused NOT_SUPPORTED: members live inside the
 * load balancer's record, which no column indexes); writes with their VIP port.
 */
export function loadBalancerServiceRoute(store: Store, lbs: LoadBalancers): Route {
  return resourceRoute(LoadBalancerService, LOAD_BALANCER_KIND as never, store, {
    filters: {
      member_vm_id: (value) => {
        if (value !== "" && value !== undefined) {
          throw invalidArgument([{ field: "member_vm_id", reason: "NOT_SUPPORTED", description: "filtering by a member's VM is not built yet: list the project's load balancers and look at spec.pools[].members[].vm_id" }]);
        }
        return {};
      },
    },
    impl: {
      createLoadBalancer: (req) => lbs.create(req),
      updateLoadBalancer: (req) => lbs.update(req),
      deleteLoadBalancer: async (req) => {
        await lbs.delete(req);
        return create(EmptySchema);
      },
      addPoolMembers: (req) => lbs.addPoolMembers(req),
      removePoolMembers: (req) => lbs.removePoolMembers(req),
      getLoadBalancerStats: (req) => lbs.getStats(req),
    },
  });
}

/**
 * The network services' routes, their services built over `store` (one call in the
 * composition root): networks charge the `networks` quota through `ledger`; every
 * project's "default" security group is made with its first network, port or group.
 */
export function networkRoutes(deps: { store: Store; clock: Clock; ids: IdGenerator; ledger: QuotaLedger; defaultDeadlineMs: number; network?: (nodeId: string) => NodeNetwork | undefined; loadBalancerStats?: LoadBalancerStatsSource }): Route[] {
  const { store, clock, ids, ledger } = deps;
  const groups = new Groups({ store, clock, ids });
  const ensureDefaultGroup = (projectId: string) => groups.ensureDefault(projectId);
  const network = deps.network ?? (() => undefined);
  const networks = new Networks({ store, clock, ids, ledger, ensureDefaultGroup, featureSupport: (feature, physicalNetwork) => featureSupport(store, network, feature, physicalNetwork) });
  const ports = new Ports({ store, clock, ids, ensureDefaultGroup, random: randomFraction });
  const fips = new FloatingIps({ store, clock, ids, ledger });
  const vpns = new Vpns({ store, clock, ids });
  const lbs = new LoadBalancers({ store, clock, ids, random: randomFraction, ...(deps.loadBalancerStats ? { stats: deps.loadBalancerStats } : {}) });
  return [
    virtualNetworkServiceRoute(store, networks),
    portServiceRoute(store, ports),
    securityGroupServiceRoute(store, groups, deps.defaultDeadlineMs),
    floatingIpServiceRoute(store, fips),
    vpnServiceManagerRoute(store, vpns, deps.defaultDeadlineMs),
    loadBalancerServiceRoute(store, lbs),
  ];
}
