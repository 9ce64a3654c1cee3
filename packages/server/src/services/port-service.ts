import { AsyncLocalStorage } from "node:async_hooks";
import { randomInt } from "node:crypto";
import { clone, create } from "@bufbuild/protobuf";
import { PortDeviceOwner, PortSpecSchema, type Port } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { UpdatePortRequestSchema, type CreatePortRequest, type DeletePortRequest, type UpdatePortRequest } from "@quantix/api/gen/Quantixkvm/network/v1/port_service_pb.js";
import type { VirtualNetwork } from "@quantix/api/gen/Quantixkvm/network/v1/virtual_network_pb.js";
import { NetworkAllocationSchema } from "@quantix/api/gen/Quantixkvm/network/v1/network_allocation_pb.js";
import type { FloatingIp } from "@quantix/api/gen/Quantixkvm/network/v1/floating_ip_pb.js";
import {
  addressAllocationId,
  addressPlanOf,
  allOf,
  checkPortSpec,
  commonViolations,
  DEFAULT_PROJECT_ID,
  FLOATING_IP_KIND,
  ID_PATTERN,
  NETWORK_ALLOCATION_KIND,
  NETWORK_IPAM,
  NO_USAGE,
  notFound,
  PORT_KIND,
  PORT_NAME_PATTERN,
  QuantixError,
  SECURITY_GROUP_KIND,
  throwIfViolations,
  unusableAddress,
  VIRTUAL_NETWORK_KIND,
  Violations,
  type Clock,
  type IdGenerator,
  type Resource,
  type Store,
  type TxOp,
  type AddressPlan,
} from "@quantix/core";
import { QuotaLedger } from "../quota/quota-ledger.js";
import { ResourceWriter } from "../resources/resource-writer.js";
import { requireWellFormedId } from "../resources/resource-service.js";
import { unmap } from "./floating-ip-service.js";
import { claimOps, groupCountOps, networkCountOp } from "./ipam.js";
import { PortDraft, takenAddress } from "./port-draft.js";
import { lostName, nameClaimOf, nameClaimOps, refuseTakenName, renameOps } from "./port-names.js";

type P = Port & Resource;
type N = VirtualNetwork & Resource;

/** The spec fields an update may change (the network is fixed). */
const MUTABLE_SPEC = ["mac_address", "fixed_ips", "security_group_ids", "port_security_disabled", "allowed_address_pairs", "disabled", "max_ingress_mbps", "max_egress_mbps"] as const;
const MUTABLE_LOCAL = ["macAddress", "fixedIps", "securityGroupIds", "portSecurityDisabled", "allowedAddressPairs", "disabled", "maxIngressMbps", "maxEgressMbps"] as const;

/**
 * Attempts at a create whose address (or generated MAC) a concurrent create took first.
 * Each attempt reads the allocations again, so it only fails again when yet another
 * create won the same address; a /24 full of concurrent creates settles well within it.
 */
const ATTEMPTS = 64;

/**
 * PortService's writes, with IPAM. A port's addresses are NetworkAllocation records whose
 * ids derive from (network, address), created in the port's own commit together with the
 * port, the network's counts and the use counts of its security groups: a second claim
 * of an address, on this replica or another, fails that whole commit (ALREADY_EXISTS),
 * which is then tried again with a fresh read (an allocated address) or refused naming
 * the holder (a requested one). DeletePort releases them in its commit. A port's name is
 * claimed the same way (port-names.ts): unique on its network, whatever the replica.
 */
export class PortService {
  private readonly writer: ResourceWriter<P>;
  /** Security groups an update names, read just before it (its check looks them up), per call. */
  private readonly known = new AsyncLocalStorage<{ groups: ReadonlyMap<string, Resource & { projectId: string }>; plan: AddressPlan | undefined }>();

  constructor(
    private readonly deps: {
      store: Store;
      clock: Clock;
      ids: IdGenerator;
      ensureDefaultGroup: (projectId: string) => Promise<{ id: string }>;
      random?: () => number;
    },
  ) {
    const ledger = new QuotaLedger({ store: deps.store, clock: deps.clock, defaults: {} });
    this.writer = new ResourceWriter(PORT_KIND, deps.store, deps.clock, deps.ids, {
      writable: ["name", "labels", "description", ...MUTABLE_SPEC.map((f) => `spec.${f}`)],
      unmasked: (draft, req) => {
        const r = req as unknown as UpdatePortRequest;
        if (r.name !== "") draft["name"] = r.name;
        if (Object.keys(r.labels).length > 0) draft["labels"] = { ...r.labels };
        if (r.description !== "") draft["description"] = r.description;
        if (r.spec) {
          const spec = (draft["spec"] ??= create(PortSpecSchema)) as Record<string, unknown>;
          const given = clone(PortSpecSchema, r.spec) as unknown as Record<string, unknown>;
          // Without a mask, an empty MAC or address list keeps the port's.
          for (const f of MUTABLE_LOCAL) if ((f !== "macAddress" || given[f] !== "") && (f !== "fixedIps" || (given[f] as string[]).length > 0)) spec[f] = given[f];
        }
      },
      check: (next, cur) => {
        if (!cur) return;
        const v = new Violations();
        checkPortSpec(v, next.name, next.spec);
        const was = cur.spec!;
        const spec = next.spec!;
        if (spec.networkId !== was.networkId) v.add("spec.network_id", "IMMUTABLE", "is fixed after creation");
        if (spec.fixedIps.join() !== was.fixedIps.join()) {
          const plan = this.known.getStore()?.plan;
          if (spec.fixedIps.length === 0) v.add("spec.fixed_ips", "REQUIRED", "a port keeps at least one address");
          spec.fixedIps.forEach((ip, i) => {
            const why = plan && !was.fixedIps.includes(ip) ? unusableAddress(plan, ip) : undefined;
            if (why) v.add(`spec.fixed_ips[${i}]`, "OUT_OF_RANGE", why);
          });
        }
        const added = spec.securityGroupIds.filter((id) => !was.securityGroupIds.includes(id));
        added.forEach((id) => {
          const g = this.known.getStore()?.groups.get(id);
          if (!g || g.projectId !== next.projectId) v.add(`spec.security_group_ids[${spec.securityGroupIds.indexOf(id)}]`, "NOT_FOUND", `security group '${id}' does not exist in project '${next.projectId}'`);
        });
        throwIfViolations(v.list);
        if (cur.status?.deviceOwner === PortDeviceOwner.LOAD_BALANCER && (spec.fixedIps.join() !== was.fixedIps.join() || spec.macAddress !== was.macAddress)) {
          throw new QuantixError("failed_precondition", `port '${cur.id}' is the VIP of load balancer '${cur.status.deviceId}': its address and MAC are the load balancer's (fixed while it exists)`);
        }
        if (spec.macAddress !== was.macAddress && (cur.status?.deviceId ?? "") !== "") {
          throw new QuantixError("failed_precondition", `port '${cur.id}' is used by '${cur.status?.deviceId}': its MAC address changes only while no device uses it`);
        }
      },
      // Ports count against no quota; the zero charging lets updates carry their groups' counts.
      charging: { ledger, usage: () => NO_USAGE, projectOf: (p) => p.projectId },
    });
  }

  async create(req: CreatePortRequest): Promise<Port> {
    const v = new Violations();
    checkPortSpec(v, req.name, req.spec);
    throwIfViolations([...v.list, ...commonViolations(req)]);
    const spec = clone(PortSpecSchema, req.spec!);
    const projectId = req.projectId || DEFAULT_PROJECT_ID;
    const draft = await PortDraft.open(
      { store: this.deps.store, ids: this.deps.ids, ensureDefaultGroup: this.deps.ensureDefaultGroup, random: this.deps.random ?? Math.random },
      { projectId, name: req.name, labels: req.labels, description: req.description },
      spec,
    );
    // A quick answer, and the one check that sees ports stored before names were claimed.
    await refuseTakenName(this.deps.store, draft.net.id, req.name);
    for (let attempt = 1; ; attempt++) {
      const nowMs = this.deps.clock.now();
      const tried = await draft.attempt({ nowMs });
      try {
        // The name's claim in the port's commit: of two creates of one name, the second fails whole.
        const [created] = await this.deps.store.commit([...tried.ops, ...nameClaimOps(tried.port, nowMs)], { actor: NETWORK_IPAM });
        return created as P;
      } catch (err) {
        if (!(err instanceof QuantixError) || (err.code !== "already_exists" && err.code !== "aborted") || attempt >= ATTEMPTS) throw err;
        if (err.code === "already_exists") {
          // A name another create took first is refused naming that port.
          const name = await lostName(this.deps.store, draft.net.id, req.name, tried.port.id);
          if (name) throw name;
          // A requested address is refused naming its holder; an allocated one (or a drawn MAC) is picked again.
          const why = await draft.explain(tried.port);
          if (why !== "retry") throw why ?? err;
        }
      }
    }
  }

  /** The first of `addresses` another port holds now (the claim a failed commit lost), if any. */
  private async lostAddress(networkId: string, addresses: readonly string[]): Promise<{ address: string; holder: string } | undefined> {
    for (const address of addresses) {
      const a = await this.deps.store.of(NETWORK_ALLOCATION_KIND).get(addressAllocationId(networkId, address));
      if (a) return { address, holder: a.portId };
    }
    return undefined;
  }

  /**
   * UpdatePort: name, labels, description, security groups (their use counts changed in
   * the same commit), port security, allowed address pairs, disabled, bandwidth limits;
   * the MAC while no device uses it; fixed IPs, whose allocations are claimed and released
   * in the same commit (an address another port holds: ALREADY_EXISTS naming it); a new
   * name is claimed and the old one released in the same commit (a name another port
   * holds: ALREADY_EXISTS naming it).
   */
  async update(req: UpdatePortRequest): Promise<Port> {
    requireWellFormedId("id", req.id);
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.updateOnce(req);
      } catch (err) {
        if (err !== STALE_NAME_CLAIM || attempt >= ATTEMPTS) throw err === STALE_NAME_CLAIM ? new QuantixError("aborted", `port '${req.id}' kept changing while it was renamed; try again`) : err;
      }
    }
  }

  private async updateOnce(req: UpdatePortRequest): Promise<Port> {
    const ids = (req.spec?.securityGroupIds ?? []).filter((id) => ID_PATTERN.test(id));
    const known = new Map<string, Resource & { projectId: string }>();
    for (const id of ids) {
      const g = await this.deps.store.of(SECURITY_GROUP_KIND).get(id);
      if (g) known.set(id, g);
    }
    const port = await this.deps.store.of(PORT_KIND).get(req.id);
    const net = port ? await this.deps.store.of(VIRTUAL_NETWORK_KIND).get(port.spec?.networkId ?? "") : undefined;
    const networkOfPort = port?.spec?.networkId ?? "";
    // The name the update asks for (the writer's rule: a mask naming `name`, or a non-empty name).
    const paths = req.updateMask?.paths ?? [];
    const asked = port && (paths.length === 0 ? req.name !== "" : paths.includes("name")) ? req.name : port?.name ?? "";
    // A malformed name is left to the update's check, which names the field.
    if (port && asked !== port.name && PORT_NAME_PATTERN.test(asked)) await refuseTakenName(this.deps.store, networkOfPort, asked, port.id);
    // The claim of the port's name as read now; a rename whose commit finds the port
    // changed since (so perhaps renamed, and this claim no longer its) reads it again.
    const held = port ? await nameClaimOf(this.deps.store, networkOfPort, port.name) : undefined;
    const nowMs = this.deps.clock.now();
    try {
      return await this.known.run({ groups: known, plan: net ? addressPlanOf(net) : undefined }, () =>
        this.writer.update(req.id, UpdatePortRequestSchema, req, {
          actor: NETWORK_IPAM,
          extra: (before, after) => {
            if (before.name !== after.name && before.resourceVersion !== port?.resourceVersion) throw STALE_NAME_CLAIM;
            const was = before.spec?.securityGroupIds ?? [];
            const now = after.spec?.securityGroupIds ?? [];
            const networkId = after.spec?.networkId ?? "";
            const had = before.spec?.fixedIps ?? [];
            const has = after.spec?.fixedIps ?? [];
            const added = has.filter((a) => !had.includes(a));
            const dropped = had.filter((a) => !has.includes(a));
            const addressOps: TxOp[] =
              added.length + dropped.length === 0
                ? []
                : [
                    ...claimOps({ id: networkId } as N, after.id, after.projectId, added.map((address) => ({ address, requested: true })), nowMs),
                    ...dropped.map((a) => ({ op: "delete" as const, kind: NETWORK_ALLOCATION_KIND as never, object: create(NetworkAllocationSchema, { id: addressAllocationId(networkId, a) }) as Resource })),
                    networkCountOp(networkId, 0, added.length - dropped.length, added, nowMs),
                  ];
            return [...groupCountOps(now.filter((id) => !was.includes(id)), 1, nowMs), ...groupCountOps(was.filter((id) => !now.includes(id)), -1, nowMs), ...addressOps, ...renameOps(before, after, held, nowMs)];
          },
        }),
      );
    } catch (err) {
      // A name another port took first: name that port.
      if (err instanceof QuantixError && err.code === "already_exists" && port && asked !== port.name) {
        const lost = await lostName(this.deps.store, networkOfPort, asked, port.id);
        if (lost) throw lost;
      }
      // An address asked for that another port holds: name it and its holder.
      if (err instanceof QuantixError && err.code === "already_exists" && net) {
        const lost = await this.lostAddress(net.id, (req.spec?.fixedIps ?? []).filter((a) => !(port?.spec?.fixedIps ?? []).includes(a)));
        if (lost) throw takenAddress(net, lost.address, lost.holder);
      }
      throw err;
    }
  }

  /**
   * DeletePort: refused with FAILED_PRECONDITION while a device uses the port or the
   * system owns it; otherwise the port, its address allocations and name claim, the network's counts and
   * its groups' use counts change in one commit.
   */
  async delete(req: DeletePortRequest): Promise<void> {
    requireWellFormedId("id", req.id);
    for (let attempt = 1; ; attempt++) {
      const cur = await this.deps.store.of(PORT_KIND).get(req.id);
      if (!cur) throw notFound("port", req.id);
      const owner = cur.status?.deviceOwner ?? PortDeviceOwner.UNSPECIFIED;
      if (owner === PortDeviceOwner.LOAD_BALANCER) {
        throw new QuantixError("failed_precondition", `port '${cur.id}' is the VIP of load balancer '${cur.status?.deviceId}': it goes with the load balancer (DeleteLoadBalancer)`);
      }
      if (owner !== PortDeviceOwner.UNSPECIFIED && owner !== PortDeviceOwner.VM) throw new QuantixError("failed_precondition", `port '${cur.id}' belongs to the system (${PortDeviceOwner[owner]} of '${cur.status?.deviceId}')`);
      if ((cur.status?.deviceId ?? "") !== "") throw new QuantixError("failed_precondition", `port '${cur.id}' is used by VM '${cur.status?.deviceId}': remove the NIC from the VM first`);
      const ops = await portDeleteOps(this.deps.store, cur, this.deps.clock.now());
      try {
        await this.deps.store.commit(ops, { actor: NETWORK_IPAM });
        return;
      } catch (err) {
        if (!(err instanceof QuantixError && err.code === "aborted") || attempt >= 8) throw err;
      }
    }
  }
}


/** Thrown out of an update's commit when the port changed after its name's claim was read: the update reads again. */
const STALE_NAME_CLAIM = new Error("the port changed after its name's claim was read");

/** A random number source for address picks (tests may make it fixed). */
export const randomFraction = (): number => randomInt(0, 2 ** 31) / 2 ** 31;

/**
 * The ops that delete port `cur` (as read; the commit fails ABORTED if it changed): the
 * port, its address allocations and name claim, the network's counts and its groups' use counts.
 */
export async function portDeleteOps(store: Store, cur: P, nowMs: number): Promise<TxOp[]> {
  // Its addresses and its name's claim: the name is free with the port.
  const claims: (Resource & { address: string })[] = [];
  for await (const a of allOf(store.of(NETWORK_ALLOCATION_KIND), { where: { port_id: cur.id } })) claims.push(a);
  // Floating IPs mapped to it are disassociated in the same commit (as Neutron does): its
  // addresses are free again, and no router may go on mapping to whoever takes them next.
  const mapped: Resource[] = [];
  for await (const f of allOf(store.of(FLOATING_IP_KIND), { where: { port_id: cur.id } })) mapped.push(f);
  return [
    { op: "delete", kind: PORT_KIND as never, object: cur },
    ...claims.map((a) => ({ op: "delete" as const, kind: NETWORK_ALLOCATION_KIND as never, object: a })),
    networkCountOp(cur.spec?.networkId ?? "", -1, -claims.filter((a) => a.address !== "").length, [], nowMs),
    ...groupCountOps(cur.spec?.securityGroupIds ?? [], -1, nowMs),
    ...mapped.map((f) => ({
      op: "update" as const,
      kind: FLOATING_IP_KIND as never,
      object: { id: f.id, resourceVersion: 0n } as Resource,
      mutate: (x: Resource) => {
        const fip = x as unknown as FloatingIp;
        if (fip.portId !== cur.id) return undefined;
        unmap(fip, nowMs);
        return x;
      },
    })),
  ];
}
