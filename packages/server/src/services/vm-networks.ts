import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { VmSpec, VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { PortDeviceOwner, PortSpecSchema, type Port } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { invalidArgument, PORT_KIND, QuantixError, type FieldViolation, type IdGenerator, type Resource, type Store, type TxOp } from "@quantix/core";
import { boundStatus, PortDraft, type PortAttempt } from "./port-draft.js";

type P = Port & Resource;

/** What CreateVM needs to make and bind its NICs' ports. */
export interface NicPortDeps {
  readonly store: Store;
  readonly ids: IdGenerator;
  readonly ensureDefaultGroup: (projectId: string) => Promise<{ id: string }>;
  readonly random?: () => number;
}

/**
 * A VM's NICs on ports (issue 14), planned before CreateVM's commit: a NIC naming a
 * network gets a new port of the VM's own (spec.owner_vm_id, deleted with the VM; its
 * address from the network's range, its MAC the NIC's or drawn, its security groups the
 * NIC's or the project's default); a NIC naming a port (port_id) binds that port, which
 * must be in the VM's project and unused. Either way the NIC's port_id, network_id and
 * mac_address are filled in from the port, and the ports are created or bound in the
 * VM's own commit: a VM never exists with a NIC whose port does not, and no port is
 * left behind by a create that failed.
 */
export class NicPorts {
  private constructor(
    private readonly drafts: ReadonlyMap<number, PortDraft>,
    private readonly bound: ReadonlyMap<number, P>,
  ) {}

  /** Whether the VM has NICs on ports at all. */
  get empty(): boolean {
    return this.drafts.size + this.bound.size === 0;
  }

  /**
   * Reads and checks the NICs of `spec` (which is changed: NICs naming a port get its
   * network and MAC). NOT_FOUND naming `spec.nics[i].network_id` or `.port_id` for a
   * network or port missing or of another project; FAILED_PRECONDITION for a port another
   * VM uses; INVALID_ARGUMENT for a NIC that contradicts its port.
   */
  static async plan(deps: NicPortDeps, projectId: string, vmName: string, spec: VmSpec, only?: { readonly indices: ReadonlySet<number>; readonly vmId: string }): Promise<NicPorts> {
    const drafts = new Map<number, PortDraft>();
    const bound = new Map<number, P>();
    const bad: FieldViolation[] = [];
    const seen = new Map<string, number>();
    for (const [i, nic] of spec.nics.entries()) {
      // An update plans only the NICs it adds (`only`); the others keep their ports.
      if (only && !only.indices.has(i)) continue;
      const f = `spec.nics[${i}]`;
      if (nic.portId !== "") {
        const port = await deps.store.of(PORT_KIND).get(nic.portId);
        // A port of another project is not told apart from a missing one.
        if (!port || port.projectId !== projectId) throw new QuantixError("not_found", `${f}.port_id: port '${nic.portId}' not found in the VM's project`);
        if (seen.has(port.id)) bad.push({ field: `${f}.port_id`, reason: "DUPLICATE", description: `port '${port.id}' is also spec.nics[${seen.get(port.id)}]'s: a port is one NIC` });
        seen.set(port.id, i);
        const user = port.status?.deviceId ?? "";
        // A port the VM itself holds may move to a NIC the update adds (the NIC that had it goes).
        if (user !== "" && user !== only?.vmId) throw new QuantixError("failed_precondition", `${f}.port_id: port '${port.id}' is used by ${PortDeviceOwner[port.status!.deviceOwner]} '${user}'`);
        if (nic.networkId !== "" && nic.networkId !== port.spec?.networkId) bad.push({ field: `${f}.network_id`, reason: "CONFLICT", description: `port '${port.id}' is on virtual network '${port.spec?.networkId}', not '${nic.networkId}' (leave network_id empty)` });
        if (nic.macAddress !== "" && nic.macAddress !== port.spec?.macAddress) bad.push({ field: `${f}.mac_address`, reason: "CONFLICT", description: `port '${port.id}' has MAC ${port.spec?.macAddress} (leave mac_address empty, or change the port's)` });
        if (nic.securityGroups.length > 0) bad.push({ field: `${f}.security_groups`, reason: "CONFLICT", description: `a NIC on an existing port uses the port's security groups: set them with UpdatePort (spec.security_group_ids of port '${port.id}')` });
        nic.networkId = port.spec?.networkId ?? "";
        nic.macAddress = port.spec?.macAddress ?? "";
        bound.set(i, port);
        continue;
      }
      const portSpec = create(PortSpecSchema, { networkId: nic.networkId, macAddress: nic.macAddress, securityGroupIds: [...nic.securityGroups] });
      drafts.set(
        i,
        await PortDraft.open(
          { store: deps.store, ids: deps.ids, ensureDefaultGroup: deps.ensureDefaultGroup, random: deps.random ?? Math.random },
          { projectId, name: "", labels: {}, description: `NIC ${nic.id} of VM '${vmName}'` },
          portSpec,
          { networkId: `${f}.network_id`, fixedIps: `${f}.fixed_ips`, securityGroupIds: `${f}.security_groups` },
        ),
      );
    }
    if (bad.length > 0) throw invalidArgument(bad);
    return new NicPorts(drafts, bound);
  }

  /**
   * One try: new ports picked afresh (their ids, addresses and MACs written into `spec`'s
   * NICs) and the commit ops, given the VM once it has its id: the new ports created bound
   * to it, the existing ones bound under the commit's lock (a port another VM took
   * meanwhile refuses the commit, naming that VM).
   */
  async attempt(spec: VmSpec, nowMs: number): Promise<{ tried: PortAttempt[]; ops: (vm: VirtualMachine, nicIds?: ReadonlySet<string>) => TxOp[] }> {
    const tried: { nicId: string; t: PortAttempt }[] = [];
    // Two NICs on one network are two ports of one commit: the second never picks the first's address.
    const picked = new Set<string>();
    for (const [i, draft] of this.drafts) {
      const t = await draft.attempt({ nowMs, exclude: picked });
      for (const a of t.port.spec!.fixedIps) picked.add(a);
      const nic = spec.nics[i]!;
      nic.portId = t.port.id;
      nic.macAddress = t.port.spec!.macAddress;
      tried.push({ nicId: nic.id, t });
    }
    const bound = [...this.bound].map(([i, port]) => ({ nicId: spec.nics[i]!.id, port }));
    return {
      tried: tried.map((x) => x.t),
      // `nicIds`: only the ports of these NICs (an update whose other NICs turned out to be there already).
      ops: (vm, nicIds) => [
        ...tried
          .filter((x) => !nicIds || nicIds.has(x.nicId))
          .flatMap(({ nicId, t }) => {
            t.port.spec!.ownerVmId = vm.id;
            t.port.status = boundStatus(vm.id, nicId, nowMs);
            return t.ops;
          }),
        ...bound.filter((x) => !nicIds || nicIds.has(x.nicId)).map((x) => bindOp(x.port.id, vm.id, x.nicId, nowMs)),
      ],
    };
  }

  /** After the VM's commit failed ALREADY_EXISTS: "retry", the error to answer, or undefined (not a port's). */
  async explain(tried: readonly PortAttempt[]): Promise<"retry" | QuantixError | undefined> {
    const drafts = [...this.drafts.values()];
    for (const [k, t] of tried.entries()) {
      const why = await drafts[k]!.explain(t.port);
      if (why !== undefined) return why;
    }
    return undefined;
  }
}

/** Binds port `portId` to NIC `nicId` of VM `vmId` under the commit's lock (FAILED_PRECONDITION when another device took it). */
function bindOp(portId: string, vmId: string, nicId: string, nowMs: number): TxOp {
  return {
    op: "update",
    kind: PORT_KIND as never,
    object: { id: portId, resourceVersion: 0n },
    mutate: (cur) => {
      const p = cur as P;
      const user = p.status?.deviceId ?? "";
      if (user !== "" && user !== vmId) throw new QuantixError("failed_precondition", `port '${p.id}' is used by '${user}'`);
      p.status = { ...boundStatus(vmId, nicId, nowMs), observedGeneration: p.status?.observedGeneration ?? 0n };
      p.updatedAt = timestampFromMs(nowMs);
      return p;
    },
  };
}
