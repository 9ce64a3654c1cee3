import { AsyncLocalStorage } from "node:async_hooks";
import { clone, create, equals } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ConditionSchema, ConditionStatus } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import {
  BackendPoolSchema,
  ListenerSchema,
  LoadBalancerSchema,
  LoadBalancerSpecSchema,
  LoadBalancerState,
  LoadBalancerStatusSchema,
  PoolMemberSchema,
  type LoadBalancer,
  type LoadBalancerSpec,
  type LoadBalancerStatus,
  type PoolMember,
} from "@quantix/api/gen/Quantixkvm/network/v1/load_balancer_pb.js";
import {
  UpdateLoadBalancerRequestSchema,
  type AddPoolMembersRequest,
  type CreateLoadBalancerRequest,
  type DeleteLoadBalancerRequest,
  type GetLoadBalancerStatsRequest,
  type LoadBalancerStats,
  type RemovePoolMembersRequest,
  type UpdateLoadBalancerRequest,
} from "@quantix/api/gen/Quantixkvm/network/v1/load_balancer_service_pb.js";
import { PortDeviceOwner, PortSpecSchema, PortState, type Port } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { NetworkType, type VirtualNetwork } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import {
  addressPlanOf,
  commonViolations,
  DEFAULT_PROJECT_ID,
  ID_DESCRIPTION,
  ID_PATTERN,
  ipv4ToInt,
  LOAD_BALANCER_KIND,
  NAME_PATTERN,
  NETWORK_IPAM,
  notFound,
  PORT_KIND,
  PROJECT_KIND,
  QuantixError,
  throwIfViolations,
  unusableAddress,
  VIRTUAL_NETWORK_KIND,
  Violations,
  VM_KIND,
  type Clock,
  type FieldViolation,
  type IdGenerator,
  type Resource,
  type Store,
  type TxOp,
} from "@quantix/core";
import { ResourceWriter } from "../resources/resource-writer.js";
import { requireWellFormedId } from "../resources/resource-service.js";
import { PortDraft } from "./port-draft.js";
import { nameClaimOf, nameClaimOps } from "./port-names.js";
import { portDeleteOps } from "./port-service.js";
import { checkLoadBalancerBody, checkMember, LB_LIMITS, type VipContext } from "./load-balancer-validation.js";

type L = LoadBalancer & Resource;
type N = VirtualNetwork & Resource;
type P = Port & Resource;

/** Attempts at a create whose VIP a concurrent commit took first (each reads the allocations again). */
const ATTEMPTS = 64;

/** The Ready condition's reason and message while no router has applied the load balancer's spec. */
export const LB_PENDING = { reason: "Pending", message: "waiting for the network's router to apply it" } as const;

/** The paths an update may write; the fixed spec fields are refused by name when they change. */
const FIXED = [
  ["vipNetworkId", "spec.vip_network_id"],
  ["vipAddress", "spec.vip_address"],
  ["highAvailability", "spec.high_availability"],
] as const;

/**
 * Traffic counters of a load balancer as its router reports them. The default answers
 * FAILED_PRECONDITION: the routers' counters are not wired to the control plane yet.
 */
export type LoadBalancerStatsSource = (lb: LoadBalancer) => Promise<LoadBalancerStats>;

const NOT_APPLIED: LoadBalancerStatsSource = async () => {
  throw new QuantixError("failed_precondition", "the load balancer has not been applied by its router yet");
};

/** What one update call knew before its commit: the VIP network's plan and the VMs its members name. */
interface Known {
  readonly ctx: VipContext | undefined;
  readonly vmViolations: readonly FieldViolation[];
}

/**
 * LoadBalancerService's writes (L4 load balancers, hosted by the central router of their
 * VIP network). A load balancer's VIP is a port of that network (device owner
 * LOAD_BALANCER, device id the load balancer's id, no port security: only the router
 * answers for it) created in the load balancer's own commit with the PortDraft's IPAM
 * (an allocated VIP a concurrent commit took is picked again; a requested one is refused
 * naming its holder), and deleted in the load balancer's delete commit (floating IPs on it
 * disassociated). Every write of the spec is checked whole (load-balancer-validation.ts)
 * and leaves the load balancer PENDING with a new generation: the controller that maps
 * load balancers onto routers writes the rest of the status.
 */
export class LoadBalancerService {
  private readonly writer: ResourceWriter<L>;
  private readonly known = new AsyncLocalStorage<Known>();
  private readonly stats: LoadBalancerStatsSource;

  constructor(
    private readonly deps: {
      store: Store;
      clock: Clock;
      ids: IdGenerator;
      random?: () => number;
      /** GetLoadBalancerStats' source (the lead's controller supplies it); default FAILED_PRECONDITION. */
      stats?: LoadBalancerStatsSource;
    },
  ) {
    this.stats = deps.stats ?? NOT_APPLIED;
    this.writer = new ResourceWriter(LOAD_BALANCER_KIND, deps.store, deps.clock, deps.ids, {
      writable: ["name", "labels", "description", "spec"],
      unmasked: (draft, req) => {
        const r = req as unknown as UpdateLoadBalancerRequest;
        if (r.name !== "") draft["name"] = r.name;
        if (Object.keys(r.labels).length > 0) draft["labels"] = { ...r.labels };
        if (r.description !== "") draft["description"] = r.description;
        if (r.spec) {
          // Without a mask: the mutable spec fields replaced whole; a fixed field given differently is refused by the check.
          const spec = clone(LoadBalancerSpecSchema, (draft["spec"] as LoadBalancerSpec | undefined) ?? create(LoadBalancerSpecSchema));
          spec.listeners = r.spec.listeners.map((l) => clone(ListenerSchema, l));
          spec.pools = r.spec.pools.map((p) => clone(BackendPoolSchema, p));
          spec.disabled = r.spec.disabled;
          if (r.spec.vipNetworkId !== "") spec.vipNetworkId = r.spec.vipNetworkId;
          if (r.spec.vipAddress !== "") spec.vipAddress = r.spec.vipAddress;
          if (r.spec.highAvailability) spec.highAvailability = true;
          draft["spec"] = spec;
        }
      },
      check: (next, cur) => {
        if (!cur) return;
        const v = new Violations();
        checkName(v, next.name);
        const spec = (next.spec ??= create(LoadBalancerSpecSchema));
        const was = cur.spec ?? create(LoadBalancerSpecSchema);
        for (const [local, path] of FIXED) if (spec[local] !== was[local]) v.add(path, "IMMUTABLE", `is fixed after creation (it is ${JSON.stringify(was[local])})`);
        const known = this.known.getStore();
        checkLoadBalancerBody(v, spec, known?.ctx);
        throwIfViolations([...v.list, ...(known?.vmViolations ?? [])]);
        if (!equals(LoadBalancerSpecSchema, was, spec)) markPending(next, this.deps.clock.now());
      },
    });
  }

  /**
   * CreateLoadBalancer: every violation of the request at once (INVALID_ARGUMENT), then
   * the project, the VIP network's router (FAILED_PRECONDITION), then one commit: the load
   * balancer, its VIP port with its address and name claims, the network's counts.
   */
  async create(req: CreateLoadBalancerRequest): Promise<LoadBalancer> {
    const projectId = req.projectId || DEFAULT_PROJECT_ID;
    const spec = req.spec ? clone(LoadBalancerSpecSchema, req.spec) : create(LoadBalancerSpecSchema);
    const v = new Violations();
    checkName(v, req.name);
    let net: N | undefined;
    if (v.required("spec.vip_network_id", spec.vipNetworkId !== "", "is required: the VXLAN or ISOLATED network the VIP is on (its router hosts the load balancer)")) {
      if (v.pattern("spec.vip_network_id", spec.vipNetworkId, ID_PATTERN, ID_DESCRIPTION)) {
        const n = await this.deps.store.of(VIRTUAL_NETWORK_KIND).get(spec.vipNetworkId);
        // A network of another project is not told apart from a missing one (NOT_FOUND below).
        if (n && n.projectId === projectId) net = n;
      }
    }
    if (net?.spec?.type === NetworkType.EXTERNAL) {
      v.add("spec.vip_network_id", "INVALID_VALUE", `virtual network '${net.id}' is EXTERNAL: a load balancer's VIP is on a VXLAN or ISOLATED network whose router uplinks to the external network; reach it from outside with a floating IP on the VIP port`);
      net = undefined;
    }
    const plan = net ? addressPlanOf(net) : undefined;
    if (spec.vipAddress !== "") {
      const why = plan ? unusableAddress(plan, spec.vipAddress) : ipv4ToInt(spec.vipAddress) === undefined ? `must be an IPv4 address, got ${JSON.stringify(spec.vipAddress)}` : undefined;
      if (why) v.add("spec.vip_address", ipv4ToInt(spec.vipAddress) === undefined ? "INVALID_FORMAT" : "OUT_OF_RANGE", why);
    }
    if (spec.highAvailability) v.add("spec.high_availability", "NOT_SUPPORTED", "one router hosts a load balancer (it fails over with the router): leave it false");
    const vmViolations = await this.resolveMembers(spec, projectId, net, "spec.pools");
    checkLoadBalancerBody(v, spec, plan ? { plan, vip: spec.vipAddress } : undefined);
    throwIfViolations([...v.list, ...vmViolations, ...commonViolations(req)]);
    if (!(await this.deps.store.of(PROJECT_KIND).get(projectId))) throw notFound("project", projectId);
    if (!net) throw new QuantixError("not_found", `spec.vip_network_id: virtual network '${spec.vipNetworkId}' not found`);
    if ((net.spec?.router?.externalNetworkId ?? "") === "") {
      throw new QuantixError(
        "failed_precondition",
        `virtual network '${net.id}' has no router to an EXTERNAL network: a load balancer is hosted by its VIP network's central router; give the network a router to an EXTERNAL network (UpdateVirtualNetwork: spec.router.external_network_id)`,
      );
    }
    const id = this.deps.ids.newId();
    // The VIP port's name: lb-<first 8 of the id>, or the whole id should a port of the network hold that name.
    const short = `lb-${id.slice(0, 8)}`;
    const portName = (await nameClaimOf(this.deps.store, net.id, short)) ? `lb-${id}` : short;
    const draft = await PortDraft.open(
      { store: this.deps.store, ids: this.deps.ids, ensureDefaultGroup: () => Promise.reject(new Error("a VIP port has no security groups")), random: this.deps.random ?? Math.random },
      { projectId, name: portName, labels: {}, description: `VIP of load balancer '${req.name}' (${id})` },
      create(PortSpecSchema, { networkId: net.id, fixedIps: spec.vipAddress !== "" ? [spec.vipAddress] : [], portSecurityDisabled: true }),
      { networkId: "spec.vip_network_id", fixedIps: "spec.vip_address", securityGroupIds: "spec.vip_network_id" },
    );
    // An allocated VIP is never a member's address.
    const members = new Set(spec.pools.flatMap((p) => p.members.map((m) => m.address)));
    for (let attempt = 1; ; attempt++) {
      const nowMs = this.deps.clock.now();
      const tried = await draft.attempt({
        nowMs,
        exclude: members,
        status: {
          state: PortState.DOWN,
          deviceOwner: PortDeviceOwner.LOAD_BALANCER,
          deviceId: id,
          conditions: [{ type: "Ready", status: ConditionStatus.FALSE, reason: "LoadBalancerVip", message: `the VIP of load balancer '${id}': the network's router answers for it`, lastTransitionTime: timestampFromMs(nowMs) }],
        },
      });
      const port = tried.port;
      const ts = timestampFromMs(nowMs);
      const lb = create(LoadBalancerSchema, {
        id,
        name: req.name,
        projectId,
        labels: req.labels,
        description: req.description,
        spec: { ...spec, vipNetworkId: net.id, vipAddress: port.spec!.fixedIps[0]! },
        status: pendingStatus(port.id, nowMs),
        createdAt: ts,
        updatedAt: ts,
        generation: 1n,
      }) as L;
      const ops: TxOp[] = [{ op: "create", kind: LOAD_BALANCER_KIND as never, object: lb }, ...tried.ops, ...nameClaimOps(port, nowMs)];
      try {
        const [made] = await this.deps.store.commit(ops, { actor: NETWORK_IPAM });
        return made as L;
      } catch (err) {
        if (!(err instanceof QuantixError) || (err.code !== "already_exists" && err.code !== "aborted") || attempt >= ATTEMPTS) throw err;
        if (err.code === "already_exists") {
          const twin = await this.deps.store.of(LOAD_BALANCER_KIND).list({ where: { project_id: projectId, name: req.name }, order: { field: "name", desc: false }, limit: 1 });
          if (twin.items.length > 0) throw new QuantixError("already_exists", `a load balancer named '${req.name}' already exists in project '${projectId}'`);
          const why = await draft.explain(port);
          if (why !== "retry") throw why ?? err;
        }
      }
    }
  }

  /**
   * UpdateLoadBalancer: name, labels, description and the mutable spec (listeners, pools,
   * disabled) per update_mask (or, without one, as the request's comment says); the fixed
   * fields refused by name when they change; a spec change makes the load balancer
   * PENDING with a new generation.
   */
  async update(req: UpdateLoadBalancerRequest): Promise<LoadBalancer> {
    requireWellFormedId("id", req.id);
    const cur = await this.deps.store.of(LOAD_BALANCER_KIND).get(req.id);
    if (!cur) throw notFound("load balancer", req.id);
    const net = await this.deps.store.of(VIRTUAL_NETWORK_KIND).get(cur.spec?.vipNetworkId ?? "");
    // The members the request names: their VMs looked up now (the check runs inside the commit).
    const asked = req.spec ? clone(LoadBalancerSpecSchema, req.spec) : undefined;
    const vmViolations = asked ? await this.resolveMembers(asked, cur.projectId, net, "spec.pools") : [];
    const request = asked ? { ...req, spec: asked } : req;
    const ctx = net ? { plan: addressPlanOf(net), vip: cur.spec?.vipAddress ?? "" } : undefined;
    return this.known.run({ ctx, vmViolations }, () => this.writer.update(req.id, UpdateLoadBalancerRequestSchema, request as never));
  }

  /** DeleteLoadBalancer: the load balancer and its VIP port (its addresses, name claim, floating IPs disassociated) in one commit. */
  async delete(req: DeleteLoadBalancerRequest): Promise<void> {
    requireWellFormedId("id", req.id);
    for (let attempt = 1; ; attempt++) {
      const cur = await this.deps.store.of(LOAD_BALANCER_KIND).get(req.id);
      if (!cur) throw notFound("load balancer", req.id);
      const nowMs = this.deps.clock.now();
      const port = await this.vipPortOf(cur);
      const ops: TxOp[] = [{ op: "delete", kind: LOAD_BALANCER_KIND as never, object: cur }, ...(port ? await portDeleteOps(this.deps.store, port, nowMs) : [])];
      try {
        await this.deps.store.commit(ops, { actor: NETWORK_IPAM });
        return;
      } catch (err) {
        if (!(err instanceof QuantixError && err.code === "aborted") || attempt >= 8) throw err;
      }
    }
  }

  /**
   * AddPoolMembers: each member checked as in the spec (paths `members[i]`), then added
   * to the pool, or replacing the member of its name, in one write whose mutate runs on
   * the stored load balancer (so concurrent calls never lose each other's members).
   */
  async addPoolMembers(req: AddPoolMembersRequest): Promise<LoadBalancer> {
    requireWellFormedId("id", req.id);
    const v = new Violations();
    v.required("pool_name", req.poolName !== "");
    if (req.members.length === 0) v.add("members", "REQUIRED", `give 1-${LB_LIMITS.perCallMax} members`);
    if (req.members.length > LB_LIMITS.perCallMax) v.add("members", "TOO_MANY", `at most ${LB_LIMITS.perCallMax} members per call, got ${req.members.length}`);
    throwIfViolations(v.list);
    const cur = await this.deps.store.of(LOAD_BALANCER_KIND).get(req.id);
    if (!cur) throw notFound("load balancer", req.id);
    poolOf(cur, req.poolName);
    const net = await this.deps.store.of(VIRTUAL_NETWORK_KIND).get(cur.spec?.vipNetworkId ?? "");
    const members = req.members.map((m) => clone(PoolMemberSchema, m));
    const vmViolations = await this.resolveMemberList(members, cur.projectId, net, "members");
    const ctx = net ? { plan: addressPlanOf(net), vip: cur.spec?.vipAddress ?? "" } : undefined;
    const names = new Map<string, number>();
    members.forEach((m, i) => {
      checkMember(v, `members[${i}]`, m, ctx);
      if (m.name !== "") {
        if (names.has(m.name)) v.add(`members[${i}].name`, "DUPLICATE", `members[${names.get(m.name)!}] is named '${m.name}' too`);
        names.set(m.name, i);
      }
    });
    throwIfViolations([...v.list, ...vmViolations]);
    return this.mutatePool(req.id, req.poolName, (pool) => {
      const next = [...pool];
      for (const m of members) {
        const at = next.findIndex((x) => x.name === m.name);
        if (at >= 0) next[at] = m;
        else next.push(m);
      }
      const bad: FieldViolation[] = [];
      if (next.length > LB_LIMITS.membersMax) bad.push({ field: "members", reason: "TOO_MANY", description: `pool '${req.poolName}' would have ${next.length} members; at most ${LB_LIMITS.membersMax}` });
      members.forEach((m, i) => {
        const twin = next.find((x) => x.name !== m.name && x.address === m.address && x.port === m.port);
        if (twin) bad.push({ field: `members[${i}].address`, reason: "CONFLICT", description: `${m.address}:${m.port} is member '${twin.name}' of pool '${req.poolName}' already` });
      });
      throwIfViolations(bad);
      return next;
    });
  }

  /** RemovePoolMembers: the named members leave the pool in one write; names not in it are ignored. */
  async removePoolMembers(req: RemovePoolMembersRequest): Promise<LoadBalancer> {
    requireWellFormedId("id", req.id);
    const v = new Violations();
    v.required("pool_name", req.poolName !== "");
    if (req.memberNames.length === 0) v.add("member_names", "REQUIRED", `give 1-${LB_LIMITS.perCallMax} names`);
    if (req.memberNames.length > LB_LIMITS.perCallMax) v.add("member_names", "TOO_MANY", `at most ${LB_LIMITS.perCallMax} names per call, got ${req.memberNames.length}`);
    throwIfViolations(v.list);
    const cur = await this.deps.store.of(LOAD_BALANCER_KIND).get(req.id);
    if (!cur) throw notFound("load balancer", req.id);
    poolOf(cur, req.poolName);
    const drop = new Set(req.memberNames);
    return this.mutatePool(req.id, req.poolName, (pool) => pool.filter((m) => !drop.has(m.name)));
  }

  /** GetLoadBalancerStats: from the stats source (default: not applied yet). */
  async getStats(req: GetLoadBalancerStatsRequest): Promise<LoadBalancerStats> {
    requireWellFormedId("id", req.id);
    const cur = await this.deps.store.of(LOAD_BALANCER_KIND).get(req.id);
    if (!cur) throw notFound("load balancer", req.id);
    return this.stats(cur);
  }

  /** One write of a pool's members: `change` runs on the stored pool (again, should the store retry). */
  private mutatePool(id: string, poolName: string, change: (members: readonly PoolMember[]) => PoolMember[]): Promise<LoadBalancer> {
    return this.deps.store.of(LOAD_BALANCER_KIND).update(
      id,
      (lb: L) => {
        const pool = poolOf(lb, poolName);
        const before = pool.members;
        const after = change(before);
        if (after.length === before.length && after.every((m, i) => equals(PoolMemberSchema, m, before[i]!))) return undefined;
        pool.members = after;
        const nowMs = this.deps.clock.now();
        lb.generation += 1n;
        lb.updatedAt = timestampFromMs(nowMs);
        markPending(lb, nowMs);
        return lb;
      },
      { actor: "api" },
    );
  }

  /** The load balancer's VIP port, if it is still the load balancer's. */
  private async vipPortOf(lb: L): Promise<P | undefined> {
    const id = lb.status?.vipPortId ?? "";
    if (id === "") return undefined;
    const port = await this.deps.store.of(PORT_KIND).get(id);
    return port && port.status?.deviceOwner === PortDeviceOwner.LOAD_BALANCER && port.status.deviceId === lb.id ? port : undefined;
  }

  private resolveMembers(spec: LoadBalancerSpec, projectId: string, net: N | undefined, base: string): Promise<FieldViolation[]> {
    return Promise.all(spec.pools.map((p, i) => this.resolveMemberList(p.members, projectId, net, `${base}[${i}].members`))).then((l) => l.flat());
  }

  /**
   * The members that name a VM: the VM must exist in the project (NOT_FOUND by field
   * path); a member without an address takes the VM's first fixed IP on the VIP network
   * (INVALID_ARGUMENT when the VM has no port there).
   */
  private async resolveMemberList(members: PoolMember[], projectId: string, net: N | undefined, base: string): Promise<FieldViolation[]> {
    const out: FieldViolation[] = [];
    for (const [j, m] of members.entries()) {
      if (m.vmId === "" || !ID_PATTERN.test(m.vmId)) continue;
      const f = `${base}[${j}]`;
      const vm = await this.deps.store.of(VM_KIND).get(m.vmId);
      if (!vm || vm.projectId !== projectId) {
        out.push({ field: `${f}.vm_id`, reason: "NOT_FOUND", description: `VM '${m.vmId}' does not exist in project '${projectId}'` });
        continue;
      }
      if (m.address !== "" || !net) continue;
      const ports = await this.deps.store.of(PORT_KIND).list({ where: { network_id: net.id, device_id: m.vmId }, order: { field: "created_at", desc: false }, limit: 1 });
      const address = ports.items[0]?.spec?.fixedIps.find((a) => ipv4ToInt(a) !== undefined);
      if (address) m.address = address;
      else out.push({ field: `${f}.address`, reason: "REQUIRED", description: `VM '${m.vmId}' has no port on the VIP network '${net.id}': give the member's address` });
    }
    return out;
  }
}

/** A load balancer's name: ^[a-zA-Z][a-zA-Z0-9_-]*$, 1-63 characters. */
function checkName(v: Violations, name: string): void {
  if (v.required("name", name !== "") && v.length("name", name, 1, 63)) {
    v.pattern("name", name, NAME_PATTERN, "must start with a letter, then letters, digits, '_' or '-'");
  }
}

/** The pool named `name` of `lb`; NOT_FOUND naming pool_name otherwise. */
function poolOf(lb: L, name: string) {
  const pool = lb.spec?.pools.find((p) => p.name === name);
  if (!pool) throw new QuantixError("not_found", `pool_name: load balancer '${lb.id}' has no pool named '${name}'`);
  return pool;
}

/** A new load balancer's status: PENDING until its router applies it. */
function pendingStatus(vipPortId: string, nowMs: number): LoadBalancerStatus {
  return create(LoadBalancerStatusSchema, {
    state: LoadBalancerState.PENDING,
    vipPortId,
    conditions: [create(ConditionSchema, { type: "Ready", status: ConditionStatus.FALSE, reason: LB_PENDING.reason, message: LB_PENDING.message, lastTransitionTime: timestampFromMs(nowMs) })],
  });
}

/** After a spec change: PENDING, Ready false "Pending", until the router applies the new generation. */
function markPending(lb: L, nowMs: number): void {
  const status = (lb.status ??= create(LoadBalancerStatusSchema));
  status.state = LoadBalancerState.PENDING;
  const ready = status.conditions.find((c) => c.type === "Ready");
  const fresh = create(ConditionSchema, { type: "Ready", status: ConditionStatus.FALSE, reason: LB_PENDING.reason, message: LB_PENDING.message, lastTransitionTime: timestampFromMs(nowMs) });
  if (!ready) status.conditions.push(fresh);
  else if (ready.status !== ConditionStatus.FALSE || ready.reason !== LB_PENDING.reason) Object.assign(ready, fresh);
}
