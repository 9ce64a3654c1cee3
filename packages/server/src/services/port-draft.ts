import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ConditionStatus } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { PortDeviceOwner, PortSchema, PortState, PortStatusSchema, type Port, type PortSpec, type PortStatus } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { NetworkType, type VirtualNetwork } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import type { MessageInitShape } from "@bufbuild/protobuf";
import {
  addressAllocationId,
  addressPlanOf,
  invalidArgument,
  macFromBytes,
  NETWORK_ALLOCATION_KIND,
  PORT_KIND,
  QuantixError,
  SECURITY_GROUP_KIND,
  throwIfViolations,
  unusableAddress,
  VIRTUAL_NETWORK_KIND,
  type AddressPlan,
  type FieldViolation,
  type IdGenerator,
  type Resource,
  type Store,
  type TxOp,
} from "@quantix/core";
import { allocationsOf, claimOps, exhausted, groupCountOps, networkCountOp, notRealized, pickFree, pickFreeIn } from "./ipam.js";

type P = Port & Resource;
type N = VirtualNetwork & Resource;

/** Where a port's fields came from in the request, for the errors that name them. */
export interface PortFieldPaths {
  readonly networkId: string;
  readonly fixedIps: string;
  readonly securityGroupIds: string;
}

export const PORT_FIELDS: PortFieldPaths = { networkId: "spec.network_id", fixedIps: "spec.fixed_ips", securityGroupIds: "spec.security_group_ids" };

/** One try at a port: the new port, what its commit does, and how to read a failure of that commit. */
export interface PortAttempt {
  readonly port: P;
  readonly ops: TxOp[];
}

/**
 * A port to be created, checked against the store once (its network in the project, its
 * fixed IPs usable, its security groups in the project, the default group when none);
 * each `attempt()` reads the network's allocations afresh and picks its address (and a
 * MAC when none was given), so that a commit that lost an address to a concurrent one is
 * tried again with another. PortService.create and CreateVM (a VM's NICs on networks)
 * both commit attempts, the latter inside the VM's own commit.
 */
export class PortDraft {
  private constructor(
    private readonly store: Store,
    private readonly ids: IdGenerator,
    readonly net: N,
    readonly plan: AddressPlan,
    private readonly spec: PortSpec,
    private readonly meta: { projectId: string; name: string; labels: Record<string, string>; description: string },
    private readonly random: () => number,
  ) {}

  /**
   * Checks `spec` (already well-formed: checkPortSpec) against the store. NOT_FOUND for a
   * network missing or of another project; INVALID_ARGUMENT naming unusable fixed IPs and
   * unknown security groups by `paths`.
   */
  static async open(
    deps: { store: Store; ids: IdGenerator; ensureDefaultGroup: (projectId: string) => Promise<{ id: string }>; random: () => number },
    meta: { projectId: string; name: string; labels: Record<string, string>; description: string },
    spec: PortSpec,
    paths: PortFieldPaths = PORT_FIELDS,
  ): Promise<PortDraft> {
    const net = await deps.store.of(VIRTUAL_NETWORK_KIND).get(spec.networkId);
    // A network of another project is not told apart from a missing one.
    if (!net || net.projectId !== meta.projectId) throw new QuantixError("not_found", `${paths === PORT_FIELDS ? "" : `${paths.networkId}: `}virtual network '${spec.networkId}' not found`);
    if (net.spec?.type === NetworkType.EXTERNAL) {
      throw new QuantixError("failed_precondition", `${paths === PORT_FIELDS ? "" : `${paths.networkId}: `}virtual network '${net.id}' is EXTERNAL: it carries routers' and floating IPs' addresses, not ports; attach VMs to a VXLAN or ISOLATED network and give them a floating IP`);
    }
    const plan = addressPlanOf(net);
    const bad: FieldViolation[] = [];
    spec.fixedIps.forEach((ip, i) => {
      const why = unusableAddress(plan, ip);
      if (why) bad.push({ field: `${paths.fixedIps}[${i}]`, reason: "OUT_OF_RANGE", description: why });
    });
    throwIfViolations(bad);
    if (spec.securityGroupIds.length === 0 && !spec.portSecurityDisabled) spec.securityGroupIds = [(await deps.ensureDefaultGroup(meta.projectId)).id];
    for (const [i, id] of spec.securityGroupIds.entries()) {
      const g = await deps.store.of(SECURITY_GROUP_KIND).get(id);
      if (!g || g.projectId !== meta.projectId) throw invalidArgument([{ field: `${paths.securityGroupIds}[${i}]`, reason: "NOT_FOUND", description: `security group '${id}' does not exist in project '${meta.projectId}'` }]);
    }
    return new PortDraft(deps.store, deps.ids, net, plan, spec, meta, deps.random);
  }

  /** Whether the MAC was given (a taken one is then refused, not drawn again). */
  get macGiven(): boolean {
    return this.spec.macAddress !== "";
  }

  /**
   * A new port (a new id, its address picked from a fresh read of the allocations, its MAC
   * drawn unless given; `everySubnet`: one address in each subnet with a free one, for
   * the system's DHCP ports; never one of `exclude`, the addresses other ports of the
   * same commit picked) and the ops that create it: the port, its allocation
   * records, the network's counts, its groups' use counts. RESOURCE_EXHAUSTED when the
   * pools are full;
   * ALREADY_EXISTS naming the holder of a requested address held now.
   */
  async attempt(extra: { status?: MessageInitShape<typeof PortStatusSchema>; ownerVmId?: string; nowMs: number; everySubnet?: boolean; exclude?: ReadonlySet<string> }): Promise<PortAttempt> {
    const mac = this.macGiven ? this.spec.macAddress : macFromBytes(randomBytes(3));
    const held = await allocationsOf(this.store, this.net.id);
    // What this port may not pick: the held addresses and those other ports of the same commit picked.
    const taken = new Set([...held.keys(), ...(extra.exclude ?? [])]);
    let addresses: { address: string; requested: boolean }[];
    if (this.spec.fixedIps.length > 0) {
      for (const ip of this.spec.fixedIps) {
        const h = held.get(ip);
        if (h) throw takenAddress(this.net, ip, h.portId);
      }
      addresses = this.spec.fixedIps.map((address) => ({ address, requested: true }));
    } else if (extra.everySubnet) {
      // The system's DHCP port: an address in every subnet that has a free one (dnsmasq answers there).
      addresses = this.plan.subnets.flatMap((s) => {
        const free = pickFreeIn(s, taken, this.random);
        return free ? [{ address: free, requested: false }] : [];
      });
      if (addresses.length === 0) throw exhausted(this.net, this.plan);
    } else {
      const free = pickFree(this.plan, taken, this.random);
      if (!free) throw exhausted(this.net, this.plan);
      addresses = [{ address: free, requested: false }];
    }
    const ts = timestampFromMs(extra.nowMs);
    const port = create(PortSchema, {
      id: this.ids.newId(),
      name: this.meta.name,
      projectId: this.meta.projectId,
      labels: this.meta.labels,
      description: this.meta.description,
      spec: { ...this.spec, macAddress: mac, fixedIps: addresses.map((a) => a.address), ownerVmId: extra.ownerVmId ?? "" },
      status: create(PortStatusSchema, extra.status ?? { state: PortState.DOWN, conditions: [notRealized("port", extra.nowMs)] }),
      createdAt: ts,
      updatedAt: ts,
      generation: 1n,
    }) as P;
    const ops: TxOp[] = [
      { op: "create", kind: PORT_KIND as never, object: port },
      ...claimOps(this.net, port.id, this.meta.projectId, addresses, extra.nowMs),
      networkCountOp(this.net.id, 1, addresses.length, port.spec!.fixedIps, extra.nowMs),
      ...groupCountOps(this.spec.securityGroupIds, 1, extra.nowMs),
    ];
    return { port, ops };
  }

  /**
   * After a commit with `tried` failed ALREADY_EXISTS: "retry" when this port lost a
   * picked address or a drawn MAC to a concurrent commit (try again with a fresh read);
   * the error to answer when it lost an address it asked for (naming the holder);
   * undefined when the failure was not this port's (or its given MAC is taken: the
   * store's error says so).
   */
  async explain(tried: P): Promise<"retry" | QuantixError | undefined> {
    for (const address of tried.spec?.fixedIps ?? []) {
      const a = await this.store.of(NETWORK_ALLOCATION_KIND).get(addressAllocationId(this.net.id, address));
      if (a && a.portId !== tried.id) return this.spec.fixedIps.length > 0 ? takenAddress(this.net, address, a.portId) : "retry";
    }
    const mac = tried.spec?.macAddress ?? "";
    const page = await this.store.of(PORT_KIND).list({ where: { network_id: this.net.id, mac_address: mac }, order: { field: "created_at", desc: false }, limit: 1 });
    const other = page.items[0];
    // A given MAC that is taken: the store's own words name it.
    if (other && other.id !== tried.id && !this.macGiven) return "retry";
    return undefined;
  }
}

/** ALREADY_EXISTS naming the address and the port holding it. */
export function takenAddress(net: { id: string }, address: string, holder: string): QuantixError {
  return new QuantixError("already_exists", `address ${address} on virtual network '${net.id}' is already held by port '${holder}'`);
}

/** PortStatus of a port a VM's NIC uses, as bound in the VM's commit (before any node has it). */
export function boundStatus(vmId: string, nicId: string, nowMs: number): PortStatus {
  return create(PortStatusSchema, { state: PortState.DOWN, deviceOwner: PortDeviceOwner.VM, deviceId: vmId, nicId, conditions: [notBound(vmId, nowMs)] });
}

/** The condition of a port bound to a VM no node has set it up for yet. */
function notBound(vmId: string, nowMs: number) {
  return { type: "Ready", status: ConditionStatus.FALSE, reason: "WaitingForNode", message: `VM '${vmId}' uses this port; it is set up on the VM's node once the VM is placed`, lastTransitionTime: timestampFromMs(nowMs) };
}

