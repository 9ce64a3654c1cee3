import { AsyncLocalStorage } from "node:async_hooks";
import { randomInt } from "node:crypto";
import { clone, create } from "@bufbuild/protobuf";
import { NetworkType, VirtualNetworkSpecSchema, type RouterConfig, VirtualNetworkState, VirtualNetworkStatusSchema, type VirtualNetwork } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { NetworkAllocationSchema } from "@quantix/api/gen/Quantixkvm/network/v1/network_allocation_pb.js";
import { PortDeviceOwner } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { UpdateVirtualNetworkRequestSchema, type CreateVirtualNetworkRequest, type DeleteVirtualNetworkRequest, type UpdateVirtualNetworkRequest } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_service_pb.js";
import {
  addressPlanOf,
  allOf,
  cidrList,
  gatewayCount,
  inPools,
  intToIpv4,
  ipv4ToInt,
  subnetContaining,
  type Ipv4Subnet,
  checkVirtualNetwork,
  commonViolations,
  DEFAULT_PROJECT_ID,
  FLOATING_IP_KIND,
  LOAD_BALANCER_KIND,
  invalidArgument,
  ipv4Overlap,
  NETWORK_ALLOCATION_KIND,
  NETWORK_IPAM,
  NETWORK_LIMITS,
  NETWORK_TYPE_FEATURE,
  NO_USAGE,
  notFound,
  parseIpv4Cidr,
  PORT_KIND,
  PROJECT_KIND,
  QuantixError,
  throwIfViolations,
  unusableAddress,
  usageDelta,
  VIRTUAL_NETWORK_KIND,
  Violations,
  vniAllocationId,
  type Clock,
  type FieldViolation,
  type IdGenerator,
  type Resource,
  type Store,
  type TxOp,
  type Usage,
} from "@quantix/core";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { QuotaLedger, type Charging } from "../quota/quota-ledger.js";
import { ResourceWriter } from "../resources/resource-writer.js";
import { requireWellFormedId } from "../resources/resource-service.js";
import { addressCounts, allocationsOf, exhausted, holderOf, notRealized, pickFree } from "./ipam.js";

type N = VirtualNetwork & Resource;

/** The addresses the network's ports hold, by address, and which ports are the system's DHCP ports. */
interface Held {
  readonly addresses: ReadonlyMap<string, { portId: string; requested: boolean }>;
  readonly system: ReadonlySet<string>;
}

/** Every IPv4 subnet of a network's spec, the first one first. */
function subnetCidrs(spec: { cidr: string; additionalSubnets: readonly { cidr: string }[] }): string[] {
  return [spec.cidr, ...spec.additionalSubnets.map((a) => a.cidr)];
}

/** The spec fields an update may change (type, subnet and segment are fixed). */
const MUTABLE_SPEC = ["gateway_ip", "dhcp", "dns_servers", "mtu", "dns_domain", "router", "shared", "additional_subnets"] as const;
const MUTABLE_LOCAL = ["gatewayIp", "dhcp", "dnsServers", "mtu", "dnsDomain", "router", "shared", "additionalSubnets"] as const;

/** Attempts at a claim that lost to a concurrent one (a random VNI taken meanwhile, a network changed). */
const ATTEMPTS = 8;

/** Why an update is tried again: ports took or released addresses between its read of them and its commit. */
const HELD_CHANGED = "the network's ports changed while it was being updated; retry";

/** What a network counts against its project's quota: one network, until it is removed. */
export function networkUsage(n: N | undefined): Usage {
  return n ? { ...NO_USAGE, networks: 1 } : NO_USAGE;
}

/** How networks count against the `networks` quota. */
export function networkCharging(ledger: QuotaLedger): Charging<N> {
  return { ledger, usage: networkUsage, projectOf: (n) => n.projectId };
}

/**
 * VirtualNetworkService's writes: an IPv4 subnet on an overlay (VXLAN or ISOLATED) in a
 * project, its gateway, DHCP range, DNS and MTU checked and completed, a VNI claimed in the
 * same commit (a NetworkAllocation whose id is the VNI), the project's `networks` quota
 * charged. Status is honest: PENDING with Ready=False (NoPorts) until the network controller
 * sets it up on the nodes of the VMs that use it; the address counts are kept by the ports' commits.
 */
export class VirtualNetworkService {
  private readonly writer: ResourceWriter<N>;
  private readonly charging: Charging<N>;
  /** The addresses the network an update changes holds, read just before it (its check uses them), per call. */
  private readonly held = new AsyncLocalStorage<Held>();

  constructor(
    private readonly deps: {
      store: Store;
      clock: Clock;
      ids: IdGenerator;
      ledger?: QuotaLedger;
      ensureDefaultGroup?: (projectId: string) => Promise<unknown>;
      /** Which nodes have a network feature, and why the others lack it (network/node-features.ts). */
      featureSupport?: (feature: string, physicalNetwork?: string) => Promise<{ supported: string[]; reasons: string[] }>;
    },
  ) {
    this.charging = networkCharging(deps.ledger ?? new QuotaLedger({ store: deps.store, clock: deps.clock, defaults: {} }));
    this.writer = new ResourceWriter(VIRTUAL_NETWORK_KIND, deps.store, deps.clock, deps.ids, {
      writable: ["name", "labels", "description", ...MUTABLE_SPEC.map((f) => `spec.${f}`)],
      unmasked: (draft, req) => {
        const r = req as unknown as UpdateVirtualNetworkRequest;
        if (r.name !== "") draft["name"] = r.name;
        if (Object.keys(r.labels).length > 0) draft["labels"] = { ...r.labels };
        if (r.description !== "") draft["description"] = r.description;
        if (r.spec) {
          const spec = (draft["spec"] ??= create(VirtualNetworkSpecSchema)) as Record<string, unknown>;
          const given = clone(VirtualNetworkSpecSchema, r.spec) as unknown as Record<string, unknown>;
          for (const f of MUTABLE_LOCAL) spec[f] = given[f];
        }
      },
      check: (next, cur) => {
        const v = new Violations();
        checkVirtualNetwork(v, next, cur);
        throwIfViolations(v.list);
        const held = cur && this.held.getStore();
        if (held) {
          // The addresses were read before this commit: a port created or deleted since changed the count in its own commit.
          if ((cur.status?.allocatedIpCount ?? 0) !== held.addresses.size + gatewayCount(addressPlanOf(cur))) throw new QuantixError("aborted", HELD_CHANGED);
          VirtualNetworkService.checkHeld(next, held);
          // Subnets added or removed change the counts (this commit is written as IPAM, their writer).
          if (next.status) Object.assign(next.status, addressCounts(addressPlanOf(next), held.addresses.size));
        }
      },
      charging: this.charging,
    });
  }

  /** CreateVirtualNetwork; `systemAdmin`: whether the caller is one (EXTERNAL networks need it). */
  async create(req: CreateVirtualNetworkRequest, systemAdmin = true): Promise<VirtualNetwork> {
    const projectId = req.projectId || DEFAULT_PROJECT_ID;
    const draft = create(VirtualNetworkStatusSchema);
    const n = { name: req.name, projectId, labels: req.labels, description: req.description, spec: req.spec ? clone(VirtualNetworkSpecSchema, req.spec) : undefined } as unknown as N;
    const v = new Violations();
    checkVirtualNetwork(v, n);
    throwIfViolations(await this.withNodeReasons([...v.list, ...commonViolations(req)], n.spec?.type ?? NetworkType.UNSPECIFIED, n.spec?.physicalNetwork ?? ""));
    const spec = n.spec!;
    const external = spec.type === NetworkType.EXTERNAL;
    if (external && !systemAdmin) throw new QuantixError("permission_denied", "creating an EXTERNAL network needs the system administrator role");
    if (!(await this.deps.store.of(PROJECT_KIND).get(projectId))) throw notFound("project", projectId);
    if (spec.router?.externalNetworkId) await this.checkUplink(spec.router, undefined);
    else if (spec.router) await this.checkRoutedOverlap(subnetCidrs(spec), "");
    const given = spec.vni;
    const nowMs = this.deps.clock.now();
    Object.assign(draft, { state: VirtualNetworkState.PENDING, conditions: [notRealized("network", nowMs)], ...addressCounts(addressPlanOf(n), 0) });
    if (external) {
      // No overlay: no VNI to claim.
      return this.writer.create({ name: req.name, projectId, labels: req.labels, description: req.description, spec, status: draft });
    }
    for (let attempt = 1; ; attempt++) {
      const vni = given !== 0 ? given : randomInt(1, NETWORK_LIMITS.vniMax + 1);
      const s = clone(VirtualNetworkSpecSchema, spec);
      s.vni = vni;
      try {
        const created = await this.writer.create(
          { name: req.name, projectId, labels: req.labels, description: req.description, spec: s, status: draft },
          { ops: (o) => [{ op: "create", kind: NETWORK_ALLOCATION_KIND as never, object: create(NetworkAllocationSchema, { id: vniAllocationId(vni), networkId: o.id, vni, projectId, createdAt: timestampFromMs(nowMs) }) as never }], actor: "api" },
        );
        await this.deps.ensureDefaultGroup?.(projectId);
        return created;
      } catch (err) {
        if (!(err instanceof QuantixError && err.code === "already_exists") || !(await this.deps.store.of(NETWORK_ALLOCATION_KIND).get(vniAllocationId(vni)))) throw err;
        const holder = (await this.deps.store.of(NETWORK_ALLOCATION_KIND).get(vniAllocationId(vni)))?.networkId ?? "";
        if (given !== 0) throw invalidArgument([{ field: "spec.vni", reason: "ALREADY_EXISTS", description: `VNI ${vni} is taken by virtual network '${holder}': leave it 0 to allocate one` }]);
        if (attempt >= ATTEMPTS) throw new QuantixError("aborted", `no free VNI found in ${ATTEMPTS} attempts; retry`);
      }
    }
  }

  /**
   * A type this control plane does not build is refused naming spec.type; with the
   * nodes' network features known (`featureSupport`), the refusal says what each node's
   * probe found, e.g. "node 'h1': the kernel can create VLAN devices, but this data plane
   * has no VLAN networks yet".
   */
  private async withNodeReasons(list: FieldViolation[], type: NetworkType, physicalNetwork: string): Promise<FieldViolation[]> {
    const feature = NETWORK_TYPE_FEATURE[type];
    if (!this.deps.featureSupport || !feature) return list;
    if (type === NetworkType.EXTERNAL) {
      // Built where a node maps a physical network: refused only when no node can.
      if (list.some((x) => x.field.startsWith("spec."))) return list;
      const { supported, reasons } = await this.deps.featureSupport(feature, physicalNetwork);
      if (supported.length > 0) return list;
      const why = reasons.length > 0 ? reasons.join("; ") : "the cluster has no nodes yet";
      return [...list, { field: "spec.physical_network", reason: "NOT_SUPPORTED", description: `no node maps physical network '${physicalNetwork}' (${feature}: a physical network mapped to a host interface): ${why}` }];
    }
    const i = list.findIndex((x) => x.field === "spec.type" && x.reason === "NOT_SUPPORTED");
    if (i < 0) return list;
    const { supported, reasons } = await this.deps.featureSupport(feature);
    const name = NetworkType[type];
    const description =
      supported.length > 0
        ? `${supported.length} node(s) report ${feature}, but this control plane does not build ${name} networks yet: use VXLAN or ISOLATED`
        : reasons.length > 0
          ? `no node supports ${name} networks (${feature}): ${reasons.join("; ")}. Use VXLAN or ISOLATED`
          : `no node supports ${name} networks (${feature}): the cluster has no nodes yet. Use VXLAN or ISOLATED`;
    return list.map((x, j) => (j === i ? { ...x, description } : x));
  }

  /**
   * UpdateVirtualNetwork: name, labels, description and the mutable spec fields. A
   * gateway that a port holds, or a DHCP range that leaves out addresses ports took from
   * it, is refused with FAILED_PRECONDITION naming them.
   */
  async update(req: UpdateVirtualNetworkRequest): Promise<VirtualNetwork> {
    requireWellFormedId("id", req.id);
    const paths = req.updateMask?.paths ?? [];
    const touches = (f: string) => req.spec !== undefined && (paths.length === 0 || paths.includes(f) || paths.includes("spec"));
    if (touches("spec.router") || touches("spec.additional_subnets")) {
      const cur = await this.deps.store.of(VIRTUAL_NETWORK_KIND).get(req.id);
      if (cur?.spec) {
        const router = touches("spec.router") ? req.spec!.router : cur.spec.router;
        const additional = touches("spec.additional_subnets") ? req.spec!.additionalSubnets : cur.spec.additionalSubnets;
        if (touches("spec.router")) await this.checkUplinkChange(cur, router);
        if (router?.externalNetworkId && touches("spec.router")) await this.checkUplink(router, cur);
        else if (router && !router.externalNetworkId) await this.checkRoutedOverlap([cur.spec.cidr, ...additional.map((a) => a.cidr)], cur.id);
      }
    }
    for (let attempt = 1; ; attempt++) {
      const addresses = await allocationsOf(this.deps.store, req.id);
      const system = new Set<string>();
      for await (const p of allOf(this.deps.store.of(PORT_KIND), { where: { network_id: req.id, device_owner: PortDeviceOwner.DHCP } })) system.add(p.id);
      try {
        return await this.held.run({ addresses, system }, () => this.writer.update(req.id, UpdateVirtualNetworkRequestSchema, req, { actor: NETWORK_IPAM }));
      } catch (err) {
        if (!(err instanceof QuantixError && err.code === "aborted" && err.message === HELD_CHANGED) || attempt >= ATTEMPTS) throw err;
      }
    }
  }

  /**
   * A central router's uplink, checked before the write: the external network exists
   * (NOT_FOUND naming the field) and is EXTERNAL; a requested external_ip is a usable
   * address of it that nothing else holds; without one, the external network has a free
   * address (RESOURCE_EXHAUSTED naming its pools otherwise). The router controller claims
   * the address (a NetworkAllocation of the external network) when it places the router.
   */
  private async checkUplink(router: RouterConfig, cur: N | undefined): Promise<void> {
    const field = "spec.router.external_network_id";
    const ext = await this.deps.store.of(VIRTUAL_NETWORK_KIND).get(router.externalNetworkId);
    if (!ext) throw new QuantixError("not_found", `${field}: virtual network '${router.externalNetworkId}' not found`);
    if (ext.spec?.type !== NetworkType.EXTERNAL) {
      throw invalidArgument([{ field, reason: "INVALID_VALUE", description: `virtual network '${ext.id}' is ${NetworkType[ext.spec?.type ?? 0]}, not EXTERNAL: a router uplinks to an EXTERNAL network` }]);
    }
    const plan = addressPlanOf(ext);
    const held = await allocationsOf(this.deps.store, ext.id);
    const mine = (a: { routerNetworkId: string }) => cur !== undefined && a.routerNetworkId === cur.id;
    if (router.externalIp !== "") {
      const why = unusableAddress(plan, router.externalIp);
      if (why) throw invalidArgument([{ field: "spec.router.external_ip", reason: "OUT_OF_RANGE", description: why }]);
      const h = held.get(router.externalIp);
      if (h && !mine(h)) {
        throw new QuantixError("already_exists", `spec.router.external_ip: ${router.externalIp} of external network '${ext.id}' is held by ${holderOf(h)}`);
      }
      return;
    }
    if ([...held.values()].some(mine)) return;
    if (pickFree(plan, new Set(held.keys()), () => 0) === undefined) throw exhausted(ext, plan);
  }

  /**
   * A central router may move to another external network, or go, only while no floating
   * IP maps to a port of the network through it (FAILED_PRECONDITION naming them):
   * Neutron refuses to clear a gateway in use the same way.
   */
  private async checkUplinkChange(cur: N, next: RouterConfig | undefined): Promise<void> {
    const was = cur.spec?.router?.externalNetworkId ?? "";
    if (was === "" || next?.externalNetworkId === was) return;
    if ((next?.externalNetworkId ?? "") === "") {
      // Moving to another external network keeps the router; going leaves its load balancers without a host.
      const lbs: string[] = [];
      for await (const l of allOf(this.deps.store.of(LOAD_BALANCER_KIND), { where: { vip_network_id: cur.id } })) lbs.push(`'${l.id}' (${l.name})`);
      if (lbs.length > 0) throw new QuantixError("failed_precondition", `load balancers on this network are hosted by its router: ${lbs.slice(0, 20).join(", ")}${lbs.length > 20 ? ", ..." : ""}; delete them first`);
    }
    const mapped: string[] = [];
    for await (const f of allOf(this.deps.store.of(FLOATING_IP_KIND), { where: { external_network_id: was } })) if (f.networkId === cur.id) mapped.push(`'${f.id}' (${f.address} to ${f.fixedIp})`);
    if (mapped.length > 0) {
      throw new QuantixError("failed_precondition", `floating IPs of external network '${was}' map to ports of this network through its router: ${mapped.slice(0, 20).join(", ")}${mapped.length > 20 ? ", ..." : ""}; disassociate them first`);
    }
  }

  /** An EXTERNAL network stays while floating IPs are allocated from it or routers uplink to it (FAILED_PRECONDITION naming them). */
  private async refuseUplinkInUse(ext: N): Promise<void> {
    const users: string[] = [];
    for await (const f of allOf(this.deps.store.of(FLOATING_IP_KIND), { where: { external_network_id: ext.id } })) users.push(`floating IP '${f.id}' (${f.address})`);
    for await (const n of allOf(this.deps.store.of(VIRTUAL_NETWORK_KIND))) if (n.spec?.router?.externalNetworkId === ext.id) users.push(`the router of virtual network '${n.id}'`);
    if (users.length > 0) throw new QuantixError("failed_precondition", `external network '${ext.id}' is in use by ${users.slice(0, 20).join(", ")}${users.length > 20 ? ", ..." : ""}; delete the floating IPs and clear those routers' spec.router.external_network_id first`);
  }

  /**
   * Networks with routers share each node's routing table (every node routes its own
   * guests), so their subnets must not overlap: the contract's rule for networks behind
   * one router. Checked against the stored networks before the write (two concurrent
   * writes can both pass; the agents then refuse the second network on a node holding
   * both, FAILED_PRECONDITION in its node status).
   */
  private async checkRoutedOverlap(cidrs: readonly string[], selfId: string): Promise<void> {
    const mine = cidrs.map((c) => parseIpv4Cidr(c)).filter((c): c is Ipv4Subnet => typeof c !== "string");
    for await (const o of allOf(this.deps.store.of(VIRTUAL_NETWORK_KIND))) {
      if (o.id === selfId || !o.spec?.router) continue;
      for (const theirs of subnetCidrs(o.spec).map((c) => parseIpv4Cidr(c))) {
        const clash = typeof theirs === "string" ? undefined : mine.find((m) => ipv4Overlap(m, theirs));
        if (clash && typeof theirs !== "string") {
          throw invalidArgument([{ field: "spec.router", reason: "OVERLAP", description: `the subnet ${clash.cidr} overlaps ${theirs.cidr} of virtual network '${o.id}', which also has a router: routed networks share each node's routing table` }]);
        }
      }
    }
  }

  /**
   * Checks a network's new gateways, pools and subnets against the addresses its ports
   * hold (the writer's check, with them read first): a gateway a port holds, a pool that
   * leaves out addresses ports took from it, a subnet removed while ports hold addresses
   * in it are FAILED_PRECONDITION naming them. The system's DHCP ports are left out but
   * for the gateways: the network controller moves their addresses into the subnets as
   * they are.
   */
  static checkHeld(next: N, held: Held): void {
    const plan = addressPlanOf(next);
    const list = (xs: string[]) => `${xs.slice(0, 10).join(", ")}${xs.length > 10 ? ", ..." : ""}`;
    for (const s of plan.subnets) {
      const gw = held.addresses.get(intToIpv4(s.gateway));
      if (gw) throw new QuantixError("failed_precondition", `the gateway ${intToIpv4(s.gateway)} of subnet ${s.subnet.cidr} is held by port '${gw.portId}': choose another address, or delete the port first`);
    }
    const users = [...held.addresses.entries()].filter(([, h]) => !held.system.has(h.portId));
    const orphans = users.filter(([a]) => { const x = ipv4ToInt(a); return x === undefined || !subnetContaining(plan, x); });
    if (orphans.length > 0) {
      throw new QuantixError("failed_precondition", `ports hold addresses outside the network's subnets ${cidrList(plan)} as updated (a subnet they use would be removed): ${list(orphans.map(([a, h]) => `${a} (port '${h.portId}')`))}; delete or re-address those ports first`);
    }
    const outside = users.filter(([a, h]) => !h.requested && !inPools(plan, a)).map(([a, h]) => `${a} (port '${h.portId}')`);
    if (outside.length > 0) throw new QuantixError("failed_precondition", `the DHCP range or allocation pools as updated leave out addresses ports took from them: ${list(outside)}`);
    for (const [a, h] of users) {
      const why = unusableAddress(plan, a);
      if (why) throw new QuantixError("failed_precondition", `port '${h.portId}' holds ${why}`);
    }
  }

  /**
   * DeleteVirtualNetwork: refused with FAILED_PRECONDITION naming its ports while it has
   * any (its status.port_count, kept by the ports' commits, makes the refusal race-free:
   * a port created meanwhile changes the network, and the conditional delete fails and is
   * tried again). Its VNI is released and its quota returned in the same commit.
   */
  async delete(req: DeleteVirtualNetworkRequest): Promise<void> {
    requireWellFormedId("id", req.id);
    for (let attempt = 1; ; attempt++) {
      const cur = await this.deps.store.of(VIRTUAL_NETWORK_KIND).get(req.id);
      if (!cur) throw notFound("virtual network", req.id);
      if (cur.spec?.type === NetworkType.EXTERNAL) await this.refuseUplinkInUse(cur);
      // The system's DHCP ports (one per node the network is on) go with the network; any other port refuses the delete.
      const system: Resource[] = [];
      if ((cur.status?.portCount ?? 0) > 0) {
        const ports: string[] = [];
        for await (const p of allOf(this.deps.store.of(PORT_KIND), { where: { network_id: cur.id } })) {
          if (p.status?.deviceOwner === PortDeviceOwner.DHCP) system.push(p);
          else if (p.status?.deviceOwner === PortDeviceOwner.LOAD_BALANCER) ports.push(`'${p.id}'${p.name ? ` (${p.name})` : ""} the VIP of load balancer '${p.status.deviceId}' (delete the load balancer)`);
          else ports.push(`'${p.id}'${p.name ? ` (${p.name})` : ""}${p.status?.deviceId ? ` used by VM '${p.status.deviceId}'` : ""}`);
        }
        if (ports.length > 0 || system.length === 0) throw new QuantixError("failed_precondition", `virtual network '${cur.id}' has ${ports.length || cur.status?.portCount} port(s): ${ports.slice(0, 20).join(", ")}${ports.length > 20 ? ", ..." : ""}; delete them first`);
      }
      const ops: TxOp[] = [{ op: "delete", kind: VIRTUAL_NETWORK_KIND as never, object: cur }];
      for (const p of system) {
        ops.push({ op: "delete", kind: PORT_KIND as never, object: p });
        for await (const a of allOf(this.deps.store.of(NETWORK_ALLOCATION_KIND), { where: { port_id: p.id } })) ops.push({ op: "delete", kind: NETWORK_ALLOCATION_KIND as never, object: a });
      }
      // An external network's addresses held for routers that are gone (the controller releases them a pass later) go with it.
      if (cur.spec?.type === NetworkType.EXTERNAL) for (const a of (await allocationsOf(this.deps.store, cur.id)).values()) if (a.routerNetworkId !== "") ops.push({ op: "delete", kind: NETWORK_ALLOCATION_KIND as never, object: a });
      const vni = await this.deps.store.of(NETWORK_ALLOCATION_KIND).get(vniAllocationId(cur.spec?.vni ?? 0));
      if (vni && vni.networkId === cur.id) ops.push({ op: "delete", kind: NETWORK_ALLOCATION_KIND as never, object: vni });
      try {
        await this.charging.ledger.commit(cur.projectId, usageDelta(NO_USAGE, networkUsage(cur)), ops, "api");
        return;
      } catch (err) {
        if (!(err instanceof QuantixError && err.code === "aborted") || attempt >= ATTEMPTS) throw err;
      }
    }
  }
}
