import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { FloatingIpSchema, FloatingIpState, type FloatingIp } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_pb.js";
import {
  UpdateFloatingIpRequestSchema,
  type AssociateFloatingIpRequest,
  type CreateFloatingIpRequest,
  type DeleteFloatingIpRequest,
  type DisassociateFloatingIpRequest,
  type UpdateFloatingIpRequest,
} from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_service_pb.js";
import { NetworkAllocationSchema } from "@quantix/api/gen/Quantixkvm/network/v1/network_allocation_pb.js";
import { NetworkType, type VirtualNetwork } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { PortDeviceOwner } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import {
  addressAllocationId,
  addressPlanOf,
  commonViolations,
  DEFAULT_PROJECT_ID,
  FLOATING_IP_KIND,
  ID_DESCRIPTION,
  ID_PATTERN,
  invalidArgument,
  ipv4ToInt,
  NETWORK_ALLOCATION_KIND,
  NETWORK_IPAM,
  NO_USAGE,
  notFound,
  PORT_KIND,
  PROJECT_KIND,
  QuantixError,
  throwIfViolations,
  unusableAddress,
  usageDelta,
  VIRTUAL_NETWORK_KIND,
  Violations,
  type Clock,
  type IdGenerator,
  type Resource,
  type Store,
  type TxOp,
  type Usage,
} from "@quantix/core";
import { QuotaLedger, type Charging } from "../quota/quota-ledger.js";
import { ResourceWriter } from "../resources/resource-writer.js";
import { requireWellFormedId } from "../resources/resource-service.js";
import { allocationsOf, exhausted, holderOf, networkCountOp, pickFree } from "./ipam.js";

type F = FloatingIp & Resource;
type N = VirtualNetwork & Resource;

/** Attempts at an allocation whose picked address a concurrent commit took. */
const ATTEMPTS = 16;

/** A floating IP without its mapping (DisassociateFloatingIp, and its port's delete): DOWN, no port, fixed IP, VM or network. */
export function unmap(f: FloatingIp, nowMs: number): void {
  Object.assign(f, { portId: "", fixedIp: "", vmId: "", networkId: "", state: FloatingIpState.DOWN, errorMessage: "", updatedAt: timestampFromMs(nowMs) });
}

/** What a floating IP counts against its project's quota: one, until it is released. */
export function floatingIpUsage(f: F | undefined): Usage {
  return f ? { ...NO_USAGE, floating_ips: 1 } : NO_USAGE;
}

/**
 * FloatingIpService's writes (issue 15): an address of an EXTERNAL network allocated to
 * a project, held by a NetworkAllocation record of that network created in the floating
 * IP's own commit (so no two floating IPs, on any replica, get one address), the
 * project's `floating_ips` quota charged, the network's address counts kept. A floating
 * IP maps to a port's fixed IP through the central router of the port's network
 * (spec.router.external_network_id, the floating IP's external network): the mapping is
 * the floating IP's record (one write moves it), and the network controller pushes it to
 * the router's node and writes the state back (ACTIVE once applied). The port need not
 * belong to a VM.
 */
export class FloatingIpService {
  private readonly writer: ResourceWriter<F>;
  private readonly charging: Charging<F>;

  constructor(private readonly deps: { store: Store; clock: Clock; ids: IdGenerator; ledger?: QuotaLedger; random?: () => number }) {
    this.charging = { ledger: deps.ledger ?? new QuotaLedger({ store: deps.store, clock: deps.clock, defaults: {} }), usage: floatingIpUsage, projectOf: (f) => f.projectId };
    this.writer = new ResourceWriter(FLOATING_IP_KIND, deps.store, deps.clock, deps.ids, {
      writable: ["labels", "description"],
      unmasked: (draft, req) => {
        const r = req as unknown as UpdateFloatingIpRequest;
        if (Object.keys(r.labels).length > 0) draft["labels"] = { ...r.labels };
        if (r.description !== "") draft["description"] = r.description;
      },
      check: (next) => throwIfViolations(commonViolations(next)),
      charging: this.charging,
    });
  }

  /**
   * CreateFloatingIp: an address of the external network's pools (the first subnet with
   * a free one), or the one asked for (system administrators only), free and usable.
   * `systemAdmin`: whether the caller is one.
   */
  async create(req: CreateFloatingIpRequest, systemAdmin: boolean): Promise<FloatingIp> {
    const projectId = req.projectId || DEFAULT_PROJECT_ID;
    const v = new Violations();
    if (v.required("external_network_id", req.externalNetworkId !== "", "is required: the EXTERNAL network to take the address from")) {
      v.pattern("external_network_id", req.externalNetworkId, ID_PATTERN, ID_DESCRIPTION);
    }
    if (req.address !== "" && ipv4ToInt(req.address) === undefined) v.add("address", "INVALID_FORMAT", `must be an IPv4 address, got ${JSON.stringify(req.address)}`);
    if (req.portId !== "") v.pattern("port_id", req.portId, ID_PATTERN, ID_DESCRIPTION);
    if (req.fixedIp !== "") {
      if (req.portId === "") v.add("fixed_ip", "CONFLICT", "needs port_id");
      else if (ipv4ToInt(req.fixedIp) === undefined) v.add("fixed_ip", "INVALID_FORMAT", `must be an IPv4 address, got ${JSON.stringify(req.fixedIp)}`);
    }
    throwIfViolations([...v.list, ...commonViolations(req)]);
    if (req.address !== "" && !systemAdmin) throw new QuantixError("permission_denied", "taking a specific address needs the system administrator role: leave address empty to be given one");
    if (!(await this.deps.store.of(PROJECT_KIND).get(projectId))) throw notFound("project", projectId);
    const net = await this.externalNetwork(req.externalNetworkId);
    const plan = addressPlanOf(net);
    if (req.address !== "") {
      const why = unusableAddress(plan, req.address);
      if (why) throw invalidArgument([{ field: "address", reason: "OUT_OF_RANGE", description: why }]);
    }
    // Associating at once needs what AssociateFloatingIp needs: checked before anything is allocated.
    const mapping = req.portId !== "" ? await this.checkAssociation({ projectId, externalNetworkId: net.id, portId: "", address: "" }, req.portId, req.fixedIp, false) : undefined;
    for (let attempt = 1; ; attempt++) {
      const held = await allocationsOf(this.deps.store, net.id);
      let address = req.address;
      if (address !== "") {
        const h = held.get(address);
        if (h) throw new QuantixError("already_exists", `address ${address} of external network '${net.id}' is already held by ${holderOf(h)}`);
      } else {
        address = pickFree(plan, new Set(held.keys()), this.deps.random ?? Math.random) ?? "";
        if (address === "") throw exhausted(net, plan);
      }
      const nowMs = this.deps.clock.now();
      const ts = timestampFromMs(nowMs);
      const fip = create(FloatingIpSchema, {
        id: this.deps.ids.newId(),
        projectId,
        labels: req.labels,
        description: req.description,
        externalNetworkId: net.id,
        address,
        ...(mapping ?? {}),
        state: FloatingIpState.DOWN,
        createdAt: ts,
        updatedAt: ts,
      }) as F;
      const ops: TxOp[] = [
        { op: "create", kind: FLOATING_IP_KIND as never, object: fip },
        {
          op: "create",
          kind: NETWORK_ALLOCATION_KIND as never,
          object: create(NetworkAllocationSchema, { id: addressAllocationId(net.id, address), networkId: net.id, address, floatingIpId: fip.id, projectId, requested: req.address !== "", createdAt: ts }) as never,
        },
        networkCountOp(net.id, 0, 1, [address], nowMs),
      ];
      try {
        const [made] = await this.charging.ledger.commit(projectId, floatingIpUsage(fip), ops, NETWORK_IPAM);
        return made as F;
      } catch (err) {
        const lost = err instanceof QuantixError && err.code === "already_exists" && req.address === "" && attempt < ATTEMPTS;
        if (!lost || !(await this.deps.store.of(NETWORK_ALLOCATION_KIND).get(addressAllocationId(net.id, address)))) throw err;
      }
    }
  }

  /** UpdateFloatingIp: labels and description. */
  update(req: UpdateFloatingIpRequest): Promise<FloatingIp> {
    return this.writer.update(req.id, UpdateFloatingIpRequestSchema, req);
  }

  /** DeleteFloatingIp: the floating IP, its address's record and its quota go in one commit. */
  async delete(req: DeleteFloatingIpRequest): Promise<void> {
    requireWellFormedId("id", req.id);
    const cur = await this.deps.store.of(FLOATING_IP_KIND).get(req.id);
    if (!cur) throw notFound("floating IP", req.id);
    const claim = await this.deps.store.of(NETWORK_ALLOCATION_KIND).get(addressAllocationId(cur.externalNetworkId, cur.address));
    const nowMs = this.deps.clock.now();
    const ops: TxOp[] = [{ op: "delete", kind: FLOATING_IP_KIND as never, object: cur }];
    if (claim && claim.floatingIpId === cur.id) ops.push({ op: "delete", kind: NETWORK_ALLOCATION_KIND as never, object: claim }, networkCountOp(cur.externalNetworkId, 0, -1, [], nowMs));
    await this.charging.ledger.commit(cur.projectId, usageDelta(NO_USAGE, floatingIpUsage(cur)), ops, NETWORK_IPAM);
  }

  /**
   * AssociateFloatingIp: the port (of the floating IP's project), the fixed IP (one of
   * the port's; default its first), no other floating IP on that fixed IP, the floating
   * IP free or `reassign` (then it moves in this one write), and a central router of the
   * port's network uplinked to the floating IP's external network. The state is DOWN
   * until the router's node reports the mapping applied (ACTIVE).
   */
  async associate(req: AssociateFloatingIpRequest): Promise<FloatingIp> {
    requireWellFormedId("id", req.id);
    const v = new Violations();
    if (v.required("port_id", req.portId !== "")) v.pattern("port_id", req.portId, ID_PATTERN, ID_DESCRIPTION);
    if (req.fixedIp !== "" && ipv4ToInt(req.fixedIp) === undefined) v.add("fixed_ip", "INVALID_FORMAT", `must be an IPv4 address, got ${JSON.stringify(req.fixedIp)}`);
    throwIfViolations(v.list);
    const cur = await this.deps.store.of(FLOATING_IP_KIND).get(req.id);
    if (!cur) throw notFound("floating IP", req.id);
    const mapping = await this.checkAssociation(cur, req.portId, req.fixedIp, req.reassign);
    if (cur.portId === mapping.portId && cur.fixedIp === mapping.fixedIp) return cur;
    return this.deps.store.of(FLOATING_IP_KIND).update(
      cur.id,
      (f: F) => {
        // Associated elsewhere meanwhile (another call won): refused as the check would have.
        if (f.portId !== cur.portId && !req.reassign) throw new QuantixError("failed_precondition", `the floating IP is associated with port '${f.portId}': set reassign to move it, or disassociate it first`);
        Object.assign(f, mapping, { state: FloatingIpState.DOWN, errorMessage: "", updatedAt: timestampFromMs(this.deps.clock.now()) });
        return f;
      },
      { actor: NETWORK_IPAM },
    );
  }

  /** DisassociateFloatingIp: removes the mapping; an unassociated floating IP is returned unchanged. */
  async disassociate(req: DisassociateFloatingIpRequest): Promise<FloatingIp> {
    requireWellFormedId("id", req.id);
    const cur = await this.deps.store.of(FLOATING_IP_KIND).get(req.id);
    if (!cur) throw notFound("floating IP", req.id);
    if (cur.portId === "") return cur;
    return this.deps.store.of(FLOATING_IP_KIND).update(
      cur.id,
      (f: F) => {
        unmap(f, this.deps.clock.now());
        return f;
      },
      { actor: NETWORK_IPAM },
    );
  }

  /** The EXTERNAL network `id` (any project's: external networks serve every project); NOT_FOUND or INVALID_ARGUMENT otherwise. */
  private async externalNetwork(id: string): Promise<N> {
    const net = await this.deps.store.of(VIRTUAL_NETWORK_KIND).get(id);
    if (!net) throw new QuantixError("not_found", `external_network_id: virtual network '${id}' not found`);
    if (net.spec?.type !== NetworkType.EXTERNAL) {
      throw invalidArgument([{ field: "external_network_id", reason: "INVALID_VALUE", description: `virtual network '${id}' is ${NetworkType[net.spec?.type ?? 0]}, not EXTERNAL: floating IPs come from EXTERNAL networks` }]);
    }
    return net;
  }

  /**
   * Everything an association needs, in the order a user fixes it: the port, the fixed
   * IP, the floating IP's current mapping, other floating IPs on that fixed IP, then the
   * router (each refusal thrown). Returns the mapping's fields.
   */
  private async checkAssociation(fip: { projectId: string; externalNetworkId: string; portId: string; address: string }, portId: string, fixedIp: string, reassign: boolean): Promise<{ portId: string; fixedIp: string; networkId: string; vmId: string }> {
    const port = await this.deps.store.of(PORT_KIND).get(portId);
    if (!port || port.projectId !== fip.projectId) throw new QuantixError("not_found", `port_id: port '${portId}' not found`);
    const ips = (port.spec?.fixedIps ?? []).filter((a) => ipv4ToInt(a) !== undefined);
    const ip = fixedIp || ips[0] || "";
    if (ip === "") throw new QuantixError("failed_precondition", `port '${portId}' has no IPv4 address to map to`);
    if (!ips.includes(ip)) throw invalidArgument([{ field: "fixed_ip", reason: "NOT_FOUND", description: `${ip} is not an address of port '${portId}' (it has ${ips.join(", ")})` }]);
    if (fip.portId !== "" && fip.portId !== portId && !reassign) {
      throw new QuantixError("failed_precondition", `the floating IP is associated with port '${fip.portId}': set reassign to move it, or disassociate it first`);
    }
    for (const other of (await this.deps.store.of(FLOATING_IP_KIND).list({ where: { port_id: portId }, order: { field: "created_at", desc: false }, limit: 100 })).items) {
      if (other.fixedIp === ip && other.address !== fip.address) {
        throw new QuantixError("failed_precondition", `${ip} of port '${portId}' is already mapped by floating IP '${other.id}' (${other.address}): disassociate it first`);
      }
    }
    const networkId = port.spec?.networkId ?? "";
    const net = await this.deps.store.of(VIRTUAL_NETWORK_KIND).get(networkId);
    if (net?.spec?.router?.externalNetworkId !== fip.externalNetworkId) {
      throw new QuantixError(
        "failed_precondition",
        `the port's network '${networkId}' has no router to external network '${fip.externalNetworkId}': a floating IP reaches a port through its network's router; set the network's spec.router.external_network_id to '${fip.externalNetworkId}' (UpdateVirtualNetwork)`,
      );
    }
    return { portId, fixedIp: ip, networkId, vmId: port.status?.deviceOwner === PortDeviceOwner.VM ? port.status.deviceId : "" };
  }
}
