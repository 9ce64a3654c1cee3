import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ConditionStatus, type Condition } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import type { Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { PortDeviceOwner, PortState, PortStatusSchema, type Port } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { FloatingIpState, type FloatingIp } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_pb.js";
import { LoadBalancerState, MemberHealth, MemberStatusSchema, type LoadBalancer } from "@quantix/api/gen/Quantixkvm/network/v1/load_balancer_pb.js";
import { VpnPeerState, VpnPeerStatusSchema, VpnServiceState, type VpnService } from "@quantix/api/gen/Quantixkvm/network/v1/vpn_service_pb.js";
import { NetworkAllocationSchema } from "@quantix/api/gen/Quantixkvm/network/v1/network_allocation_pb.js";
import { NetworkNodeStatusSchema, NetworkRouterStatusSchema, NetworkType, VirtualNetworkState, type NetworkRouterStatus, type VirtualNetwork } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { PortState as AgentPortState, type NetworkStatus, type PortStatus as AgentPortStatus, type RouterStatus } from "@quantix/api/gen/vmm/v1/network_pb.js";
import {
  addressAllocationId,
  addressPlanOf,
  allOf,
  FLOATING_IP_KIND,
  LOAD_BALANCER_KIND,
  NETWORK_ALLOCATION_KIND,
  VPN_SERVICE_KIND,
  NETWORK_CONTROLLER,
  NETWORK_IPAM,
  NODE_KIND,
  PORT_KIND,
  QuantixError,
  SECURITY_GROUP_KIND,
  unusableAddress,
  VIRTUAL_NETWORK_KIND,
  VM_KIND,
  type Clock,
  type Collection,
  type IdGenerator,
  type Resource,
  type Store,
  type Timers,
  type TxOp,
} from "@quantix/core";
import type { Logger } from "@quantix/rpc";
import { Controller, watching } from "../runtime/controller.js";
import { removeCondition, setCondition } from "../controllers/conditions.js";
import { ensureDhcpPort, reshapeDhcpPort } from "./dhcp-ports.js";
import { allocationsOf, exhausted, holderOf, NETWORK_UNUSED, networkCountOp, pickFree, PORT_UNBOUND } from "../services/ipam.js";
import { portDeleteOps } from "../services/port-service.js";
import type { NodeNetwork } from "./node-network.js";
import { dhcpPorts, neededPairs, placedPorts, planNodes, type PlacedPort, type PlacedRouter, type GroupSpecInit, type NetworkSpecInit, type NodePlan, type PlanInput } from "./network-plan.js";
import { centralRouterNetworks, gatewayAddresses, placeRouters, routerInternalMac, routerSpecOf, type RouterSpecInit } from "./routers.js";
import { externalLbUuid, memberUuid, routerLoadBalancers } from "./load-balancers.js";
import { peerStatuses, routerVpnConnections } from "./vpns.js";

type P = Port & Resource;
type N = VirtualNetwork & Resource;
type F = FloatingIp & Resource;
type L = LoadBalancer & Resource;
type V = VpnService & Resource;

/** A central router as this pass saw it: where, its address, and what its node reported. */
interface RouterOutcome {
  readonly externalNetworkId: string;
  readonly nodeId: string;
  readonly externalIp: string;
  readonly status?: RouterStatus;
  /** Why it is not (wholly) in effect; empty when its node reports it Ready. */
  readonly why: string;
}

/** The node capability of an agent whose network data plane is on (VMCP_NETWORK=on). */
export const NETWORK_CAPABILITY = "network-vxlan";

/** How often routers with load balancers or VPNs are looked at again (health checks, handshakes). */
const ROUTER_OBSERVE_MS = 3_000;

/** How long a node's underlay address is trusted before it is asked again. */
const UNDERLAY_TTL_MS = 60_000;

export interface NetworkControllerDeps {
  readonly store: Store;
  readonly clock: Clock;
  readonly ids: IdGenerator;
  readonly timers?: Timers;
  readonly log: Logger;
  /** The network data plane of a node's connected agent; undefined while this replica has no connection to it. */
  readonly network: (nodeId: string) => NodeNetwork | undefined;
  /** Enqueue a pass when an agent connects (its data plane may have been wiped). */
  readonly onConnect?: (listener: () => void) => () => void;
  readonly resyncMs?: number;
}

/** What one node did in a pass: its networks' agent status, and why a network is not set up there. */
interface NodeOutcome {
  readonly statuses: Map<string, NetworkStatus>;
  readonly failed: Map<string, string>;
  /** Networks set up, but not wholly (a subnet without DHCP there), and why, by network id. */
  readonly degraded: Map<string, string>;
  /** The node holds no network its plan does not want (the pass deleted the others). */
  cleaned: boolean;
  /** Its central routers as applied, and why one could not be, by network id. */
  readonly routers: Map<string, RouterStatus>;
  readonly routerFailed: Map<string, string>;
}

/**
 * The network controller (issue 14): joins the control plane's networks, ports and
 * security groups to the nodes' data planes. Level-based, one pass for the cluster: read
 * everything, make the DHCP ports the (network, node) pairs need, compute every node's
 * plan (network-plan.ts), and per node (in parallel) apply the security groups, then the
 * networks, whose desired state changed or the agent lost, and delete what the agent
 * holds that no plan wants; then write what was observed back: each VM port's node, TAP
 * and state, each network's per-node status and state. A node that cannot be reached or
 * refuses a spec shows in the statuses with its reason; the next pass tries again.
 */
export function networkController(deps: NetworkControllerDeps): Controller {
  const applied = new Map<string, string>(); // `${node}/${kind}/${id}` → JSON of what was applied
  const underlays = new Map<string, { address: string; at: number; why: string; physicalNetworks: readonly string[] }>();
  const nets = deps.store.of(VIRTUAL_NETWORK_KIND);
  const ports = deps.store.of(PORT_KIND);
  const groups = deps.store.of(SECURITY_GROUP_KIND);
  const vms = deps.store.of(VM_KIND);
  const nodes = deps.store.of(NODE_KIND);
  const all = () => ["cluster"];

  /**
   * Applies `spec` on a node unless the node holds what was last applied there (`cur`, as
   * it reports it: then that report); what was applied is remembered under `key`, and
   * forgotten when the apply fails (the next pass tries again).
   */
  async function applyOnce<S>(key: string, spec: NetworkSpecInit | RouterSpecInit, cur: S | undefined, apply: () => Promise<S>): Promise<S> {
    const json = canon(spec);
    if (applied.get(key) === json && cur) return cur;
    try {
      const status = await apply();
      applied.set(key, json);
      return status;
    } catch (err) {
      applied.delete(key);
      throw err;
    }
  }

  async function underlayOf(node: Node, nn: NodeNetwork): Promise<{ address: string; why: string; physicalNetworks: readonly string[] }> {
    const now = deps.clock.now();
    const cached = underlays.get(node.id);
    if (cached && now - cached.at < UNDERLAY_TTL_MS && cached.address !== "") return cached;
    try {
      const caps = await nn.capabilities();
      const vx = caps.features.find((f) => f.name === NETWORK_CAPABILITY);
      const address = caps.underlayAddress;
      const why = vx && !vx.available ? `node '${node.id}' cannot carry VXLAN: ${vx.reason}` : address === "" ? `node '${node.id}' reports no underlay address for VXLAN (set VMCP_NETWORK_UNDERLAY_ADDRESS on its agent)` : "";
      const r = { address: why === "" ? address : "", at: now, why, physicalNetworks: [...caps.physicalNetworks] };
      underlays.set(node.id, r);
      return r;
    } catch (err) {
      return { address: "", why: `node '${node.id}' did not tell its network capabilities: ${String((err as Error).message ?? err)}`, physicalNetworks: [] };
    }
  }

  /** One pass; true when routers serve load balancers or VPNs, whose health and handshakes change without a write (then the pass runs again soon). */
  async function reconcile(): Promise<boolean> {
    // Ports are read before VMs: a port bound in a VM's commit is never seen without its VM.
    const input: PlanInput & { networks: N[]; ports: P[] } = { networks: await readAll(nets), ports: await readAll(ports), groups: await readAll(groups), vms: await readAll(vms) };
    const nodeList: Node[] = await readAll(nodes);
    const netById = new Map(input.networks.map((n) => [n.id, n]));

    // 0. Ports whose VM is gone or no longer names them: a VM's own port goes, another is unbound.
    if (await releasePorts(input)) input.ports = await readAll(ports);

    // 1. The DHCP ports the (network, node) pairs need; those no pair needs go once their node has dropped the network.
    const placed = placedPorts(input);
    const needed = neededPairs(placed);
    const dhcp = dhcpPorts(input.ports);
    const dhcpProblems = new Map<string, string>();
    const dhcpDegraded = new Map<string, string>();
    let made = false;
    for (const key of needed) {
      const [networkId, nodeId] = key.split("/") as [string, string];
      const net = netById.get(networkId);
      if (!net || !(net.spec?.dhcp?.enabled ?? true)) continue;
      const have = dhcp.get(key);
      // A port made, or given an address in a subnet added since (or its address in a removed one taken away).
      const why = have ? undefined : await ensureDhcpPort(deps, net, nodeId);
      const { changed, problem } = have ? await reshapeDhcpPort(deps, net, have as P) : { changed: why === undefined, problem: why };
      if (changed) made = true;
      if (problem) (have ? dhcpDegraded : dhcpProblems).set(key, problem);
    }
    if (made) input.ports = await readAll(ports);

    // 2. Each node's underlay address and plan.
    const byId = new Map(nodeList.map((n) => [n.id, n]));
    const involved = new Set<string>([...needed].map((k) => k.split("/")[1]!));
    for (const n of nodeList) if ((n.status?.hypervisor?.capabilities ?? []).includes(NETWORK_CAPABILITY) && deps.network(n.id)) involved.add(n.id);
    const underlay = new Map<string, string>();
    const unreachable = new Map<string, string>();
    const physnets = new Map<string, readonly string[]>();
    for (const id of involved) {
      const node = byId.get(id);
      const nn = deps.network(id);
      if (!node || !nn) {
        unreachable.set(id, node ? `node '${id}' has no network data plane this control plane reaches (an agent started with VMCP_NETWORK=on, connected)` : `node '${id}' does not exist`);
        continue;
      }
      const u = await underlayOf(node, nn);
      physnets.set(id, u.physicalNetworks);
      if (u.address !== "") underlay.set(id, u.address);
      else unreachable.set(id, u.why);
    }

    // 2b. Central routers: each one's node (kept while it can, else another network node) and external address.
    const central = centralRouterNetworks(input.networks);
    const candidates = nodeList.filter((n) => involved.has(n.id)).map((node) => ({ node, physicalNetworks: physnets.get(node.id) ?? [], why: unreachable.get(node.id) ?? "" }));
    const placement = placeRouters(central, new Map(central.map((c) => [c.network.id, c.network.status?.router?.nodeId ?? ""])), candidates);
    const addresses = await routerAddresses(central, input.networks);
    const placedRouters = new Map<string, PlacedRouter>();
    const routerPlans = new Map<string, Map<string, RouterSpecInit>>();
    const fips: F[] = await readAll(deps.store.of(FLOATING_IP_KIND));
    const lbs: L[] = await readAll(deps.store.of(LOAD_BALANCER_KIND));
    const vpns: V[] = await readAll(deps.store.of(VPN_SERVICE_KIND));
    const routerWhy = new Map<string, string>();
    for (const c of central) {
      const at = placement.get(c.network.id)!;
      const addr = addresses.get(c.network.id) ?? { ip: "", why: "no external address is held yet" };
      if (at.nodeId === "") routerWhy.set(c.network.id, at.why);
      else if (addr.ip === "") routerWhy.set(c.network.id, addr.why);
      if (at.nodeId === "") continue;
      placedRouters.set(c.network.id, { nodeId: at.nodeId, mac: routerInternalMac(c.network.id), addresses: gatewayAddresses(c.network) });
      const served = routerLoadBalancers(lbs.filter((l) => l.spec?.vipNetworkId === c.network.id), fips.filter((f) => f.networkId === c.network.id && f.externalNetworkId === c.external.id));
      const tunnels = routerVpnConnections(vpns.filter((v) => v.spec?.networkId === c.network.id));
      const spec = addr.ip === "" ? undefined : routerSpecOf(c.network, c.external, addr.ip, fips.filter((f) => !served.servedFips.has(f.id)), served.entries, tunnels);
      if (spec) (routerPlans.get(at.nodeId) ?? routerPlans.set(at.nodeId, new Map()).get(at.nodeId)!).set(c.network.id, spec);
      else if (addr.ip !== "") routerWhy.set(c.network.id, `the external address ${addr.ip} is no longer in external network '${c.external.id}'`);
    }
    const plans = planNodes(input, underlay, placedRouters);

    // 3. Apply, per node, in parallel.
    const outcomes = new Map<string, NodeOutcome>();
    await Promise.all(
      [...involved].map(async (nodeId) => {
        const nn = deps.network(nodeId);
        const plan = plans.get(nodeId) ?? { networks: new Map(), groups: new Map(), blocked: new Map() };
        const out: NodeOutcome = { statuses: new Map(), failed: new Map(plan.blocked), degraded: new Map(), cleaned: false, routers: new Map(), routerFailed: new Map() };
        const wantRouters = routerPlans.get(nodeId) ?? new Map<string, RouterSpecInit>();
        for (const [key, why] of dhcpProblems) if (key.endsWith(`/${nodeId}`)) out.failed.set(key.split("/")[0]!, why);
        for (const [key, why] of dhcpDegraded) if (key.endsWith(`/${nodeId}`)) out.degraded.set(key.split("/")[0]!, why);
        outcomes.set(nodeId, out);
        if (!nn || unreachable.has(nodeId)) {
          for (const id of plan.networks.keys()) out.failed.set(id, unreachable.get(nodeId) ?? `node '${nodeId}' is not reachable`);
          for (const id of wantRouters.keys()) out.routerFailed.set(id, unreachable.get(nodeId) ?? `node '${nodeId}' is not reachable`);
          return;
        }
        try {
          await applyNode(nodeId, nn, plan, out);
          await applyRouters(nodeId, nn, wantRouters, out);
        } catch (err) {
          const why = `node '${nodeId}': ${String((err as Error).message ?? err)}`;
          for (const id of plan.networks.keys()) if (!out.statuses.has(id)) out.failed.set(id, why);
          for (const id of wantRouters.keys()) if (!out.routers.has(id)) out.routerFailed.set(id, why);
          deps.log.log("warn", "could not set the node's networks up", { node_id: nodeId, error: why });
        }
      }),
    );

    // 4. DHCP ports no (network, node) needs any more, once that node dropped the network (or is gone).
    for (const [key, port] of dhcpPorts(input.ports)) {
      if (needed.has(key)) continue;
      const nodeId = port.status?.deviceId ?? "";
      if (byId.has(nodeId) && !outcomes.get(nodeId)?.cleaned) continue;
      try {
        await deps.store.commit(await portDeleteOps(deps.store, port as P, deps.clock.now()), { actor: NETWORK_IPAM });
      } catch (err) {
        ignoreGone(err);
      }
    }

    // 5. What was observed, back to the ports, networks and floating IPs.
    const routerOutcomes = new Map<string, RouterOutcome>();
    for (const c of central) {
      const nodeId = placement.get(c.network.id)?.nodeId ?? "";
      const o = outcomes.get(nodeId);
      const status = o?.routers.get(c.network.id);
      const bad = status?.conditions.filter((x) => !x.status && x.type !== "Ready").map((x) => `${x.type}: ${x.reason}: ${x.message}`) ?? [];
      const why = routerWhy.get(c.network.id) ?? o?.routerFailed.get(c.network.id) ?? (status ? (bad.length > 0 ? `node '${nodeId}': ${bad.join("; ")}` : "") : `node '${nodeId}' has not set the router up yet`);
      routerOutcomes.set(c.network.id, { externalNetworkId: c.external.id, nodeId, externalIp: addresses.get(c.network.id)?.ip ?? "", ...(status ? { status } : {}), why });
    }
    await writePortStatuses(input.ports, placed, outcomes, unreachable);
    await writeNetworkStatuses(input.networks, needed, outcomes, routerOutcomes);
    await writeFloatingIpStatuses(fips, input.ports, routerOutcomes, lbs);
    await writeLoadBalancerStatuses(lbs, routerOutcomes);
    await writeVpnStatuses(vpns, routerOutcomes);
    return [...routerPlans.values()].some((m) => [...m.values()].some((r) => (r.loadBalancers?.length ?? 0) > 0 || (r.vpnConnections?.length ?? 0) > 0));
  }

  /**
   * Each VPN service's status from its network's router: ACTIVE when the router applied
   * it and every enabled peer is UP (a handshake within 180 s), DEGRADED when some are
   * not, DOWN when disabled or none is up, ERROR with the reason when the router cannot
   * set it up, PENDING before; the peers', the router's node and external address.
   */
  async function writeVpnStatuses(all: readonly V[], routers: ReadonlyMap<string, RouterOutcome>): Promise<void> {
    const nowMs = deps.clock.now();
    for (const v of all) {
      const netId = v.spec?.networkId ?? "";
      const r = routers.get(netId);
      const seen = r?.status?.vpnConnections.find((x) => x.connectionId === v.id);
      const peers = peerStatuses(v, seen).map((p) => create(VpnPeerStatusSchema, p));
      const enabled = peers.filter((p) => p.state !== VpnPeerState.DISABLED);
      const up = enabled.filter((p) => p.state === VpnPeerState.UP).length;
      let want: { state: VpnServiceState; ready: boolean; reason: string; message: string };
      if (v.spec?.disabled) want = { state: VpnServiceState.DOWN, ready: false, reason: "Disabled", message: "spec.disabled: its tunnels are torn down" };
      else if (enabled.length === 0) want = { state: VpnServiceState.DOWN, ready: false, reason: "NoPeers", message: "no enabled peer: nothing to connect to" };
      else if (!r) want = { state: VpnServiceState.ERROR, ready: false, reason: "NoRouter", message: `network '${netId}' has no central router (spec.router.external_network_id)` };
      else if (seen && !seen.applied) want = { state: VpnServiceState.ERROR, ready: false, reason: "TunnelNotApplied", message: `the router on node '${r.nodeId}': ${seen.message}` };
      else if (!seen) want = r.why !== "" ? { state: VpnServiceState.ERROR, ready: false, reason: "RouterNotReady", message: `the router of network '${netId}': ${r.why}` } : { state: VpnServiceState.PENDING, ready: false, reason: "Pending", message: `node '${r.nodeId}' has not applied it yet` };
      else if (up === enabled.length) want = { state: VpnServiceState.ACTIVE, ready: true, reason: "Up", message: `every peer's tunnel is up, on the router on node '${r.nodeId}'` };
      else if (up > 0) want = { state: VpnServiceState.DEGRADED, ready: false, reason: "PeersDown", message: `peers without a recent handshake: ${enabled.filter((p) => p.state !== VpnPeerState.UP).map((p) => p.name).join(", ")}` };
      else want = { state: VpnServiceState.DOWN, ready: false, reason: "NoHandshake", message: "no peer has completed a handshake yet" };
      const st = v.status;
      const shape = (list: readonly { name: string; state: VpnPeerState; rxBytes: bigint; txBytes: bigint; message: string }[]) => JSON.stringify(list.map((p) => [p.name, p.state, String(p.rxBytes), String(p.txBytes), p.message]));
      const externalAddress = r?.externalIp ?? "";
      const nodeId = r?.nodeId ?? "";
      if (st && st.state === want.state && shape(st.peers) === shape(peers) && st.nodeId === nodeId && st.externalAddress === externalAddress && hasCondition(st.conditions, "Ready", want.ready, want.reason, want.message) && (!seen?.applied || st.observedGeneration === v.generation)) continue;
      await deps.store
        .of(VPN_SERVICE_KIND)
        .update(
          v.id,
          (cur: V) => {
            if (cur.generation !== v.generation) return undefined; // a new spec: the next pass reports on it
            const s = cur.status!;
            s.state = want.state;
            s.peers = peers;
            s.nodeId = nodeId;
            s.externalAddress = externalAddress;
            s.errorMessage = want.state === VpnServiceState.ERROR ? want.message : "";
            s.conditions = setCondition(s.conditions, { type: "Ready", status: want.ready, reason: want.reason, message: want.message, generation: cur.generation }, nowMs);
            if (seen?.applied) s.observedGeneration = cur.generation;
            return cur;
          },
          { actor: NETWORK_CONTROLLER },
        )
        .catch(ignoreGone);
    }
  }

  /**
   * Each load balancer's status from its network's router: ACTIVE when the router applied
   * it (this generation) and every listener has a healthy member, DEGRADED when one has
   * none, OFFLINE when disabled, ERROR with the reason when the network has no central
   * router or the router cannot be set up, PENDING while its node has not applied it;
   * each member's health as the router's checks see it; the router's node.
   */
  async function writeLoadBalancerStatuses(all: readonly L[], routers: ReadonlyMap<string, RouterOutcome>): Promise<void> {
    const nowMs = deps.clock.now();
    for (const lb of all) {
      const netId = lb.spec?.vipNetworkId ?? "";
      const r = routers.get(netId);
      const seen = r?.status?.loadBalancers.find((x) => x.loadBalancerId === lb.id);
      const byMember = new Map((seen?.listeners ?? []).flatMap((l) => l.members.map((m) => [m.memberId, m] as const)));
      const pools = new Map((lb.spec?.pools ?? []).map((p) => [p.name, p]));
      const used = new Set((lb.spec?.listeners ?? []).map((l) => l.defaultPool));
      const members = [...pools.values()]
        .filter((p) => used.has(p.name))
        .flatMap((p) =>
          p.members.map((m) => {
            const agent = byMember.get(memberUuid(lb.id, p.name, m.name));
            const health = m.disabled ? MemberHealth.DRAINING : !agent ? MemberHealth.UNSPECIFIED : !p.healthMonitor ? MemberHealth.NO_MONITOR : agent.healthy ? MemberHealth.ONLINE : MemberHealth.UNHEALTHY;
            return create(MemberStatusSchema, { poolName: p.name, memberName: m.name, address: m.address, port: m.port, health, message: agent && !agent.healthy ? agent.healthReason : "" });
          }),
        );
      const empty = (seen?.listeners ?? []).filter((l) => l.healthyMembers === 0).map((l) => `${l.protocol === 2 ? "UDP" : "TCP"} ${l.port}`);
      let want: { state: LoadBalancerState; ready: boolean; reason: string; message: string };
      if (lb.spec?.disabled) want = { state: LoadBalancerState.OFFLINE, ready: false, reason: "Disabled", message: "spec.disabled: the router does not serve it" };
      else if (!r) want = { state: LoadBalancerState.ERROR, ready: false, reason: "NoRouter", message: `network '${netId}' has no central router (spec.router.external_network_id) to serve it` };
      else if (r.why !== "" && !seen?.applied) want = { state: LoadBalancerState.ERROR, ready: false, reason: "RouterNotReady", message: `the router of network '${netId}': ${r.why}` };
      else if (!seen?.applied) want = { state: LoadBalancerState.PENDING, ready: false, reason: "Pending", message: `node '${r.nodeId}' has not applied it yet` };
      else if (empty.length > 0) want = { state: LoadBalancerState.DEGRADED, ready: false, reason: "NoHealthyMembers", message: `no healthy member behind listener(s) ${empty.join(", ")}: their connections are refused` };
      else want = { state: LoadBalancerState.ACTIVE, ready: true, reason: "Serving", message: `served by the router on node '${r.nodeId}' at ${lb.spec?.vipAddress ?? ""}` };
      const nodeIds = r && r.nodeId !== "" ? [r.nodeId] : [];
      const st = lb.status;
      const sameMembers = JSON.stringify((st?.members ?? []).map((m) => [m.poolName, m.memberName, m.health, m.message])) === JSON.stringify(members.map((m) => [m.poolName, m.memberName, m.health, m.message]));
      if (st && st.state === want.state && sameMembers && st.nodeIds.join() === nodeIds.join() && hasCondition(st.conditions, "Ready", want.ready, want.reason, want.message) && (!seen?.applied || st.observedGeneration === lb.generation)) continue;
      await deps.store
        .of(LOAD_BALANCER_KIND)
        .update(
          lb.id,
          (cur: L) => {
            // Changed meanwhile (a new spec): the next pass reports on it.
            if (cur.generation !== lb.generation) return undefined;
            const s = cur.status!;
            s.state = want.state;
            s.members = members.map((m) => ({ ...m, ...(m.health === MemberHealth.ONLINE || m.health === MemberHealth.UNHEALTHY ? { checkedAt: timestampFromMs(nowMs) } : {}) }));
            s.nodeIds = nodeIds;
            s.errorMessage = want.ready || want.state === LoadBalancerState.PENDING ? "" : want.message;
            s.conditions = setCondition(s.conditions, { type: "Ready", status: want.ready, reason: want.reason, message: want.message, generation: cur.generation }, nowMs);
            if (seen?.applied) s.observedGeneration = cur.generation;
            return cur;
          },
          { actor: NETWORK_CONTROLLER },
        )
        .catch(ignoreGone);
    }
  }

  /**
   * The external address of each central router: the one it holds (a NetworkAllocation of
   * its external network naming it in router_network_id), else the one spec.router.external_ip
   * asks for, else a free one of the external network's pools, claimed here (one commit
   * with the external network's counts). Claims no router wants any more (its network
   * gone, moved to another external network, another address asked for) are released.
   */
  async function routerAddresses(central: readonly { network: VirtualNetwork; external: VirtualNetwork }[], networks: readonly N[]): Promise<Map<string, { ip: string; why: string }>> {
    const out = new Map<string, { ip: string; why: string }>();
    const wanted = new Map(central.map((c) => [c.network.id, c]));
    const nowMs = deps.clock.now();
    for (const ext of networks) {
      if (ext.spec?.type !== NetworkType.EXTERNAL) continue;
      for (const a of (await allocationsOf(deps.store, ext.id)).values()) {
        if (a.routerNetworkId === "") continue;
        const c = wanted.get(a.routerNetworkId);
        const asked = c?.network.spec?.router?.externalIp ?? "";
        if (c && c.external.id === ext.id && (asked === "" || asked === a.address) && !out.has(c.network.id)) {
          out.set(c.network.id, { ip: a.address, why: "" });
          continue;
        }
        await commitQuietly([{ op: "delete", kind: NETWORK_ALLOCATION_KIND as never, object: a }, networkCountOp(ext.id, 0, -1, [], nowMs)]);
        deps.log.log("info", "released a router's external address", { network_id: a.routerNetworkId, external_network_id: ext.id, address: a.address });
      }
    }
    for (const c of central) {
      if (out.has(c.network.id)) continue;
      const held = await allocationsOf(deps.store, c.external.id);
      const plan = addressPlanOf(c.external);
      const asked = c.network.spec?.router?.externalIp ?? "";
      const taken = asked !== "" ? held.get(asked) : undefined;
      const why = asked !== "" ? (unusableAddress(plan, asked) ?? (taken ? `spec.router.external_ip ${asked} is held by ${holderOf(taken)}` : undefined)) : undefined;
      const ip = asked !== "" ? asked : (pickFree(plan, new Set(held.keys()), Math.random) ?? "");
      if (why || ip === "") {
        out.set(c.network.id, { ip: "", why: why ?? exhausted(c.external as N, plan).message });
        continue;
      }
      const claim = create(NetworkAllocationSchema, { id: addressAllocationId(c.external.id, ip), networkId: c.external.id, address: ip, routerNetworkId: c.network.id, projectId: c.network.projectId, requested: asked !== "", createdAt: timestampFromMs(nowMs) });
      const ok = await commitQuietly([{ op: "create", kind: NETWORK_ALLOCATION_KIND as never, object: claim as never }, networkCountOp(c.external.id, 0, 1, [ip], nowMs)]);
      out.set(c.network.id, ok ? { ip, why: "" } : { ip: "", why: `the external address ${ip} was taken meanwhile; another is picked` });
    }
    return out;
  }

  /** Commits `ops` as IPAM; false when a concurrent write won (not found, taken, changed): the next pass reads again. */
  async function commitQuietly(ops: TxOp[]): Promise<boolean> {
    try {
      await deps.store.commit(ops, { actor: NETWORK_IPAM });
      return true;
    } catch (err) {
      if (err instanceof QuantixError && (err.code === "not_found" || err.code === "aborted" || err.code === "already_exists")) return false;
      throw err;
    }
  }

  /**
   * A node's central routers: each planned one applied when its spec changed or the node
   * lost it (after the node's networks, whose bridges they join), and every router the
   * node holds that no plan puts there deleted (a router moved away after its node was
   * lost is dropped when the node is back).
   */
  async function applyRouters(nodeId: string, nn: NodeNetwork, want: ReadonlyMap<string, RouterSpecInit>, out: NodeOutcome): Promise<void> {
    const have = new Map((await nn.listRouters()).map((r) => [r.routerId, r]));
    for (const [id, spec] of want) {
      const failed = out.failed.get(id);
      if (failed) {
        out.routerFailed.set(id, failed);
        continue;
      }
      try {
        out.routers.set(id, await applyOnce(`${nodeId}/router/${id}`, spec, have.get(id), () => nn.applyRouter(spec, 0n)));
      } catch (err) {
        out.routerFailed.set(id, `node '${nodeId}' refused the router: ${String((err as Error).message ?? err)}`);
      }
    }
    for (const id of have.keys()) {
      if (want.has(id)) continue;
      await nn.deleteRouter(id).catch(ignoreNotFound);
      applied.delete(`${nodeId}/router/${id}`);
    }
  }

  /**
   * Each associated floating IP's state from its router's report: ACTIVE when the node
   * reports the mapping applied; ERROR when the port's network has no router to the
   * floating IP's external network, or the router cannot be set up (the reason); DOWN
   * while the node has not applied it yet. Its vm_id follows the port's VM.
   */
  async function writeFloatingIpStatuses(fips: readonly F[], allPorts: readonly P[], routers: ReadonlyMap<string, RouterOutcome>, lbs: readonly L[]): Promise<void> {
    const lbByPort = new Map(lbs.filter((l) => l.status?.vipPortId).map((l) => [l.status!.vipPortId, l]));
    const portById = new Map(allPorts.map((p) => [p.id, p]));
    const nowMs = deps.clock.now();
    for (const f of fips) {
      if (f.portId === "") continue;
      const r = routers.get(f.networkId);
      const port = portById.get(f.portId);
      const vmId = port?.status?.deviceOwner === PortDeviceOwner.VM ? port.status.deviceId : "";
      let want: { state: FloatingIpState; error: string };
      if (!r || r.externalNetworkId !== f.externalNetworkId) want = { state: FloatingIpState.ERROR, error: `the port's network '${f.networkId}' has no router to external network '${f.externalNetworkId}' (spec.router.external_network_id)` };
      else if (r.status?.floatingIps.some((x) => x.floatingIp === f.address && x.fixedIp === f.fixedIp && x.applied)) want = { state: FloatingIpState.ACTIVE, error: "" };
      else if (lbByPort.has(f.portId) && r.status?.loadBalancers.some((x) => x.loadBalancerId === externalLbUuid(lbByPort.get(f.portId)!.id) && x.applied)) want = { state: FloatingIpState.ACTIVE, error: "" };
      else if (r.why !== "") want = { state: FloatingIpState.ERROR, error: `the router of network '${f.networkId}': ${r.why}` };
      else want = { state: FloatingIpState.DOWN, error: `node '${r.nodeId}' has not applied the mapping yet` };
      if (f.state === want.state && f.errorMessage === want.error && f.vmId === vmId) continue;
      await deps.store
        .of(FLOATING_IP_KIND)
        .update(
          f.id,
          (cur: F) => {
            if (cur.portId !== f.portId || cur.fixedIp !== f.fixedIp) return undefined; // moved meanwhile: the next pass
            if (cur.state === want.state && cur.errorMessage === want.error && cur.vmId === vmId) return undefined;
            Object.assign(cur, { state: want.state, errorMessage: want.error, vmId, updatedAt: timestampFromMs(nowMs) });
            return cur;
          },
          { actor: NETWORK_CONTROLLER },
        )
        .catch(ignoreGone);
    }
  }

  async function releasePorts(input: { ports: P[]; vms: PlanInput["vms"] }): Promise<boolean> {
    const vmById = new Map(input.vms.map((v) => [v.id, v]));
    let changed = false;
    for (const port of input.ports) {
      if (port.status?.deviceOwner !== PortDeviceOwner.VM) continue;
      const vmId = port.status.deviceId;
      const vm = vmById.get(vmId);
      if (vm && vm.spec?.nics.some((n) => n.portId === port.id)) continue;
      // A NIC removed from a VM whose node still has it (a running guest's, being unplugged) keeps its port until the node let it go.
      if (vm && vm.status?.nics.some((n) => n.portId === port.id)) continue;
      try {
        if ((port.spec?.ownerVmId ?? "") !== "") {
          await deps.store.commit(await portDeleteOps(deps.store, port, deps.clock.now()), { actor: NETWORK_IPAM });
          deps.log.log("info", "deleted a port whose VM is gone", { port_id: port.id, vm_id: vmId });
        } else {
          const nowMs = deps.clock.now();
          await ports.update(
            port.id,
            (cur: P) => {
              if (cur.status?.deviceId !== vmId) return undefined;
              cur.status = create(PortStatusSchema, {
                state: PortState.DOWN,
                conditions: setCondition([], { type: "Ready", status: false, ...PORT_UNBOUND, generation: cur.generation }, nowMs),
                observedGeneration: cur.generation,
              });
              return cur;
            },
            { actor: NETWORK_CONTROLLER },
          );
          deps.log.log("info", "released a port its VM no longer uses", { port_id: port.id, vm_id: vmId });
        }
        changed = true;
      } catch (err) {
        ignoreGone(err);
      }
    }
    return changed;
  }

  async function applyNode(nodeId: string, nn: NodeNetwork, plan: NodePlan, out: NodeOutcome): Promise<void> {
    const have = new Map((await nn.listNetworks()).map((s) => [s.networkId, s]));
    const haveGroups = new Set((await nn.listSecurityGroups()).map((g) => g.securityGroupId));
    // Groups first: the networks' ports jump to their chains.
    for (const [id, spec] of plan.groups) {
      const key = `${nodeId}/sg/${id}`;
      const json = canon(spec);
      if (applied.get(key) === json && haveGroups.has(id)) continue;
      const before = applied.get(key);
      try {
        const prev = before === undefined ? undefined : (JSON.parse(before) as GroupSpecInit);
        if (prev && haveGroups.has(id) && canon({ ...prev, memberIps: [] }) === canon({ ...spec, memberIps: [] })) {
          // Only the members changed: a delta of set elements, no rule touched.
          const was = new Set(prev.memberIps ?? []);
          const now = new Set(spec.memberIps ?? []);
          await nn.updateSecurityGroupMembers(id, [...now].filter((a) => !was.has(a)), [...was].filter((a) => !now.has(a)));
        } else {
          await nn.applySecurityGroup(spec, 0n);
        }
        applied.set(key, json);
      } catch (err) {
        applied.delete(key);
        const why = `security group '${id}' on node '${nodeId}': ${String((err as Error).message ?? err)}`;
        for (const [netId, ns] of plan.networks) if ((ns.ports ?? []).some((p) => (p.securityGroupIds ?? []).includes(id))) out.failed.set(netId, why);
      }
    }
    for (const [id, spec] of plan.networks) {
      if (out.failed.has(id)) continue;
      try {
        out.statuses.set(id, await applyOnce(`${nodeId}/net/${id}`, spec, have.get(id), () => nn.applyNetwork(spec, 0n)));
      } catch (err) {
        out.failed.set(id, `node '${nodeId}' refused the network: ${String((err as Error).message ?? err)}`);
      }
    }
    // What the node holds that no plan wants: networks, then groups.
    for (const id of have.keys()) {
      if (plan.networks.has(id) || plan.blocked.has(id)) continue;
      await nn.deleteNetwork(id).catch(ignoreNotFound);
      applied.delete(`${nodeId}/net/${id}`);
    }
    for (const id of haveGroups) {
      if (plan.groups.has(id)) continue;
      await nn.deleteSecurityGroup(id).catch(ignoreNotFound);
      applied.delete(`${nodeId}/sg/${id}`);
    }
    out.cleaned = true;
  }

  async function writePortStatuses(all: readonly P[], placedList: readonly PlacedPort[], outcomes: Map<string, NodeOutcome>, unreachable: Map<string, string>): Promise<void> {
    const placed = new Map(placedList.map((p) => [p.port.id, p]));
    const nowMs = deps.clock.now();
    for (const port of all) {
      const owner = port.status?.deviceOwner ?? PortDeviceOwner.UNSPECIFIED;
      const networkId = port.spec?.networkId ?? "";
      let want: { state: PortState; nodeId: string; tap: string; ready: boolean; reason: string; message: string };
      if (owner === PortDeviceOwner.DHCP) {
        const nodeId = port.status?.deviceId ?? "";
        const o = outcomes.get(nodeId);
        const s = o?.statuses.get(networkId);
        const failed = o?.failed.get(networkId) ?? unreachable.get(nodeId);
        want = s
          ? { state: PortState.ACTIVE, nodeId, tap: s.bridge, ready: true, reason: "Serving", message: `node '${nodeId}' answers DHCP and DNS here (dnsmasq pid ${s.dnsmasqPid})` }
          : { state: failed ? PortState.ERROR : PortState.BUILD, nodeId, tap: "", ready: false, reason: failed ? "NodeFailed" : "Pending", message: failed ?? `node '${nodeId}' has not set the network up yet` };
      } else {
        const p = placed.get(port.id);
        if (!p) {
          if (owner !== PortDeviceOwner.UNSPECIFIED && owner !== PortDeviceOwner.VM) continue;
          const bound = (port.status?.deviceId ?? "") !== "";
          want = { state: PortState.DOWN, nodeId: "", tap: "", ready: false, reason: bound ? "WaitingForNode" : PORT_UNBOUND.reason, message: bound ? `VM '${port.status?.deviceId}' uses this port; it is set up on the VM's node once the VM is placed` : PORT_UNBOUND.message };
        } else {
          const o = outcomes.get(p.nodeId);
          const s = o?.statuses.get(networkId)?.ports.find((x) => x.portId === port.id);
          const failed = o?.failed.get(networkId) ?? unreachable.get(p.nodeId);
          want = s ? fromAgent(s, p.nodeId) : { state: failed ? PortState.ERROR : PortState.BUILD, nodeId: p.nodeId, tap: "", ready: false, reason: failed ? "NodeFailed" : "Pending", message: failed ?? `node '${p.nodeId}' is setting the port up` };
        }
      }
      const st = port.status;
      if (st && st.state === want.state && st.nodeId === want.nodeId && st.tapDevice === want.tap && hasCondition(st.conditions, "Ready", want.ready, want.reason, want.message)) continue;
      await ports
        .update(
          port.id,
          (cur: P) => {
            if ((cur.status?.deviceId ?? "") !== (port.status?.deviceId ?? "")) return undefined; // bound or released meanwhile: the next pass
            const s = cur.status ?? create(PortStatusSchema);
            s.state = want.state;
            s.nodeId = want.nodeId;
            s.tapDevice = want.tap;
            s.errorMessage = want.ready ? "" : want.state === PortState.ERROR ? want.message : "";
            s.conditions = setCondition(s.conditions, { type: "Ready", status: want.ready, reason: want.reason, message: want.message, generation: cur.generation }, nowMs);
            s.observedGeneration = cur.generation;
            cur.status = s;
            return cur;
          },
          { actor: NETWORK_CONTROLLER },
        )
        .catch(ignoreGone);
    }
  }

  async function writeNetworkStatuses(networks: N[], needed: Set<string>, outcomes: Map<string, NodeOutcome>, routers: ReadonlyMap<string, RouterOutcome>): Promise<void> {
    const nowMs = deps.clock.now();
    for (const net of networks) {
      const nodeIds = [...needed].filter((k) => k.startsWith(`${net.id}/`)).map((k) => k.slice(net.id.length + 1)).sort();
      const entries = nodeIds.map((nodeId) => {
        const o = outcomes.get(nodeId);
        const s = o?.statuses.get(net.id);
        const failed = o?.failed.get(net.id);
        const partial = o?.degraded.get(net.id);
        const ready = !!s && !failed && !partial && s.conditions.every((c) => c.status || c.type === "Ready");
        const bad = s?.conditions.filter((c) => !c.status && c.type !== "Ready").map((c) => `${c.type}: ${c.reason}: ${c.message}`) ?? [];
        if (partial) bad.push(partial);
        const message = ready ? "" : (failed ?? (bad.length > 0 ? bad.join("; ") : `node '${nodeId}' has not set the network up yet`));
        const gw = s?.conditions.find((c) => c.type === "GatewayReady");
        const gateway = failed ? { ready: false, message: failed } : gw ? { ready: gw.status && gw.reason !== "NoGateway", message: `${gw.reason}: ${gw.message}` } : undefined;
        return { nodeId, ready, message, gateway };
      });
      const central = routers.get(net.id);
      const gateway = central ? centralGatewayCondition(central, net.spec?.router?.snatEnabled ?? false) : net.spec?.router ? gatewayCondition(entries, net.spec.router.snatEnabled) : undefined;
      const prevRouter = net.status?.router;
      const router = central
        ? create(NetworkRouterStatusSchema, {
            externalNetworkId: central.externalNetworkId,
            nodeId: central.nodeId,
            externalIp: central.externalIp,
            ready: central.why === "",
            message: central.why,
            ...(prevRouter?.placedAt && prevRouter.nodeId === central.nodeId ? { placedAt: prevRouter.placedAt } : central.nodeId !== "" ? { placedAt: timestampFromMs(nowMs) } : {}),
          })
        : undefined;
      const sameRouter = sameRouterStatus(prevRouter, router);
      const readyAll = entries.length > 0 && entries.every((e) => e.ready);
      const state = entries.length === 0 ? VirtualNetworkState.PENDING : readyAll ? VirtualNetworkState.ACTIVE : entries.some((e) => e.ready) ? VirtualNetworkState.DEGRADED : VirtualNetworkState.PENDING;
      const problems = entries.filter((e) => !e.ready).map((e) => e.message);
      const cond =
        entries.length === 0
          ? { ready: false, ...NETWORK_UNUSED }
          : readyAll
            ? { ready: true, reason: "Realized", message: `set up on ${entries.length} node(s): ${entries.map((e) => `'${e.nodeId}'`).join(", ")}` }
            : { ready: false, reason: "NodeNotReady", message: problems.join("; ") };
      const st = net.status;
      const sameNodes = (st?.nodes.length ?? 0) === entries.length && entries.every((e, i) => st!.nodes[i]!.nodeId === e.nodeId && st!.nodes[i]!.ready === e.ready && st!.nodes[i]!.message === e.message);
      const sameGw = gateway ? hasCondition(st?.conditions ?? [], "GatewayReady", gateway.ready, gateway.reason, gateway.message) : !st?.conditions.some((c) => c.type === "GatewayReady");
      if (st && st.state === state && sameNodes && sameGw && sameRouter && hasCondition(st.conditions, "Ready", cond.ready, cond.reason, cond.message)) continue;
      await nets
        .update(
          net.id,
          (cur: N) => {
            const s = cur.status!;
            s.state = state;
            s.nodes = entries.map((e) => create(NetworkNodeStatusSchema, { nodeId: e.nodeId, ready: e.ready, message: e.message, reportedAt: timestampFromMs(nowMs) }));
            s.errorMessage = cond.ready || entries.length === 0 ? "" : cond.message;
            const ready = setCondition(s.conditions, { type: "Ready", status: cond.ready, reason: cond.reason, message: cond.message, generation: cur.generation }, nowMs);
            s.conditions = gateway ? setCondition(ready, { type: "GatewayReady", status: gateway.ready, reason: gateway.reason, message: gateway.message, generation: cur.generation }, nowMs) : removeCondition(ready, "GatewayReady");
            if (router) s.router = router;
            else delete s.router;
            s.observedGeneration = cur.generation;
            return cur;
          },
          { actor: NETWORK_CONTROLLER },
        )
        .catch(ignoreGone);
    }
  }

  return new Controller(
    {
      name: NETWORK_CONTROLLER,
      watches: [watching(nets, all), watching(ports, all), watching(deps.store.of(VPN_SERVICE_KIND), (e) => (e.type !== "MODIFIED" || String(e.object.generation) !== String(e.previous?.generation) ? ["cluster"] : [])), watching(deps.store.of(LOAD_BALANCER_KIND), (e) => (e.type !== "MODIFIED" || lbShape(e.object) !== lbShape(e.previous) ? ["cluster"] : [])), watching(deps.store.of(FLOATING_IP_KIND), (e) => (e.type !== "MODIFIED" || fipShape(e.object) !== fipShape(e.previous) ? ["cluster"] : [])), watching(groups, all), watching(vms, (e) => ((networkRelevant(e.object) || (e.previous && networkRelevant(e.previous))) && (e.type !== "MODIFIED" || vmShape(e.object) !== vmShape(e.previous)) ? ["cluster"] : [])), watching(nodes, (e) => (e.type !== "MODIFIED" || nodeShape(e.object) !== nodeShape(e.previous) ? ["cluster"] : []))],
      ...(deps.onConnect ? { events: [(enqueue: (key: string) => void) => deps.onConnect!(() => enqueue("cluster"))] } : {}),
      keys: async function* () {
        yield "cluster";
      },
      reconcile: async () => {
        // Members' health and tunnels' handshakes are observed, not written: looked at again every few seconds while there are any.
        return (await reconcile()) ? { requeueAfterMs: ROUTER_OBSERVE_MS } : undefined;
      },
      resyncMs: deps.resyncMs ?? 30_000,
      concurrency: 1,
    },
    { clock: deps.clock, ...(deps.timers ? { timers: deps.timers } : {}), log: deps.log, revision: () => deps.store.revision() },
  );
}

/**
 * A network's GatewayReady from its nodes' agents: true when every node with the network
 * answers on the gateway (the agents' GatewayReady); false naming the nodes that do not,
 * or while no node has the network.
 */
function gatewayCondition(entries: readonly { nodeId: string; gateway?: { ready: boolean; message: string } | undefined }[], nat: boolean): { ready: boolean; reason: string; message: string } {
  if (entries.length === 0) return { ready: false, reason: "NoPorts", message: "the gateway is set up with the network, on the nodes of the VMs that use it" };
  const bad = entries.filter((e) => !e.gateway?.ready);
  if (bad.length === 0) return { ready: true, reason: nat ? "Nat" : "Routed", message: `every node with the network (${entries.map((e) => `'${e.nodeId}'`).join(", ")}) is the gateway of its own guests${nat ? ", masquerading their traffic behind its address" : ""}` };
  return { ready: false, reason: "NodeNotReady", message: bad.map((e) => `node '${e.nodeId}': ${e.gateway?.message ?? "has not reported the gateway yet"}`).join("; ") };
}

/** A central router's GatewayReady: true when its node reports it Ready, else why not. */
function centralGatewayCondition(r: RouterOutcome, snat: boolean): { ready: boolean; reason: string; message: string } {
  if (r.why === "") return { ready: true, reason: "RouterReady", message: `the router on node '${r.nodeId}' is the gateway, uplinked to external network '${r.externalNetworkId}' as ${r.externalIp}${snat ? " (guests' traffic leaves as that address)" : ""}` };
  return { ready: false, reason: r.nodeId === "" ? "NoNetworkNode" : r.externalIp === "" ? "NoExternalAddress" : "RouterNotReady", message: r.why };
}

/** Whether two router statuses say the same (placed_at aside when the node is the same). */
function sameRouterStatus(a: NetworkRouterStatus | undefined, b: NetworkRouterStatus | undefined): boolean {
  if (!a || !b) return !a && !b;
  return a.externalNetworkId === b.externalNetworkId && a.nodeId === b.nodeId && a.externalIp === b.externalIp && a.ready === b.ready && a.message === b.message && (a.placedAt !== undefined) === (b.placedAt !== undefined);
}

/** What of a node the networks depend on (not its heartbeats): phase, capabilities, agent endpoint. */
function nodeShape(n: Node | undefined): string {
  return JSON.stringify([n?.status?.phase ?? 0, n?.status?.hypervisor?.capabilities ?? [], n?.spec?.agentEndpoint ?? ""]);
}

/** What of a VM the networks depend on (not its power state or metrics): its node, a migration's target, its name, its NICs' ports. */
function vmShape(vm: { name: string; status?: { nodeId: string; migrationTargetNodeId: string; nics: { portId: string }[] } | undefined; spec?: { nics: { portId: string }[] } | undefined } | undefined): string {
  return JSON.stringify([vm?.name, vm?.status?.nodeId ?? "", vm?.status?.migrationTargetNodeId ?? "", (vm?.spec?.nics ?? []).map((n) => n.portId), (vm?.status?.nics ?? []).map((n) => n.portId)]);
}

/** What of a load balancer the routers depend on (its spec and VIP port, not the status this controller writes). */
function lbShape(l: LoadBalancer | undefined): string {
  return JSON.stringify([String(l?.generation ?? 0), l?.status?.vipPortId ?? ""]);
}

/** What of a floating IP the routers depend on (not the state this controller writes). */
function fipShape(f: FloatingIp | undefined): string {
  return JSON.stringify([f?.portId ?? "", f?.fixedIp ?? "", f?.networkId ?? "", f?.address ?? ""]);
}

/** A write that lost to a concurrent one (its object gone or changed meanwhile): the next pass reads again. */
function ignoreGone(err: unknown): void {
  if (!(err instanceof QuantixError && (err.code === "not_found" || err.code === "aborted"))) throw err;
}

/** A delete of what is already gone. */
function ignoreNotFound(err: unknown): void {
  if (!(err instanceof QuantixError && err.code === "not_found")) throw err;
}

/** Every object of a collection. */
async function readAll<T extends Resource>(coll: Collection<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of allOf(coll)) out.push(x);
  return out;
}

/** Whether a VM change can change the networks: it has NICs on ports (in its spec, or still on its node). */
function networkRelevant(vm: { spec?: { nics: { portId: string }[] } | undefined; status?: { nics: { portId: string }[] } | undefined }): boolean {
  return [...(vm.spec?.nics ?? []), ...(vm.status?.nics ?? [])].some((n) => n.portId !== "");
}

/** A port's state as its node's agent reports it. */
function fromAgent(s: AgentPortStatus, nodeId: string): { state: PortState; nodeId: string; tap: string; ready: boolean; reason: string; message: string } {
  const bad = s.conditions.filter((c) => !c.status).map((c) => `${c.type}: ${c.reason}: ${c.message}`);
  switch (s.state) {
    case AgentPortState.ACTIVE:
      return { state: PortState.ACTIVE, nodeId, tap: s.tapDevice, ready: true, reason: "Active", message: `TAP ${s.tapDevice} on node '${nodeId}' is on the network's bridge with its filtering applied${s.carrier ? "; the VM holds it" : ""}` };
    case AgentPortState.ERROR:
      return { state: PortState.ERROR, nodeId, tap: s.tapDevice, ready: false, reason: "NodeFailed", message: bad.join("; ") || `node '${nodeId}' reports the port in error` };
    case AgentPortState.BUILD:
      return { state: PortState.BUILD, nodeId, tap: s.tapDevice, ready: false, reason: "Building", message: bad.join("; ") || `node '${nodeId}' is setting the port up` };
    default:
      return { state: PortState.DOWN, nodeId, tap: s.tapDevice, ready: false, reason: "Down", message: bad.join("; ") || `the port's TAP on node '${nodeId}' is down or not on the bridge` };
  }
}

/** Whether `list` holds condition `type` with this status, reason and message already (then nothing is written). */
function hasCondition(list: readonly Condition[], type: string, ok: boolean, reason: string, message: string): boolean {
  const c = list.find((x) => x.type === type);
  return !!c && (c.status === ConditionStatus.TRUE) === ok && c.reason === reason && c.message === message;
}

/** A stable JSON of a spec (what was applied), bigints as strings. */
function canon(x: NetworkSpecInit | GroupSpecInit | RouterSpecInit): string {
  return JSON.stringify(x, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
}
