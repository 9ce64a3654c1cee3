import { AsyncLocalStorage } from "node:async_hooks";
import { clone, create } from "@bufbuild/protobuf";

import { UpdateVMRequestSchema, type CreateVMRequest, type DeleteVMRequest, type UpdateVMRequest } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";

import { PlacementPolicySchema, PowerState, VmSpecSchema, VmStatusSchema, VmStatus_State as State, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { checkPowerAction, DEFAULT_PROJECT_ID, invalidArgument, notFound, QuantixError, throwIfViolations, validateCreateVm, validateVmSpec, volumePlacement, type Clock, type IdGenerator, type Store, type TxOp, VM_KIND, NODE_KIND, PROJECT_KIND, VOLUME_ATTACHER } from "@quantix/core";

import { ResourceWriter } from "../resources/resource-writer.js";
import { QuotaLedger, vmCharging } from "../quota/quota-ledger.js";
import { awaitsReview } from "../controllers/scheduler/binding-review.js";
import { NicPorts } from "./vm-networks.js";
import { checkNicChanges, nicDiff, nodeHotplugs, planAddedNics, touchesNics } from "./vm-nic-changes.js";
import { claimOps, readVolumeDisks } from "../storage/vm-volumes.js";
import { ownedVolumeOps, planOwnedVolumes } from "../storage/vm-owned-volumes.js";

/** Dependencies of the VM service. */
export interface VmServiceDeps {
  readonly store: Store;
  readonly clock: Clock;
  readonly ids: IdGenerator;
  /** Charges creates, resizes and removals to the project's quota (default: use counted, only the absent defaults as limits). */
  readonly ledger?: QuotaLedger;
  /** The project's default security group, made on first use (a NIC's new port without security groups gets it). */
  readonly ensureDefaultGroup?: (projectId: string) => Promise<{ id: string }>;
}

/** Tries at a CreateVM whose NIC's port lost its picked address (or drawn MAC) to a concurrent commit. */
const PORT_ATTEMPTS = 64;

/**
 * VM create, update and delete, the VM's own rules over the generic resource writer
 * (resources/resource-writer.ts): CreateVM's power state and pin, MAC addresses, the
 * spec's validation, no CPU or memory change while it runs, the state table for delete.
 */
export class VmService {
  private readonly writer: ResourceWriter<VirtualMachine>;
  /** What an update read before its commit: whether the VM's node hot-plugs NICs (undefined: not running). */
  private readonly nicContext = new AsyncLocalStorage<{ hotplug: boolean | undefined }>();

  constructor(private readonly deps: VmServiceDeps) {
    this.writer = new ResourceWriter(VM_KIND, deps.store, deps.clock, deps.ids, {
      writable: ["labels", "description", "spec"],
      // Power state and reboots have their own RPCs and their state table.
      readOnly: ["spec.desired_power_state", "spec.reboot"],
      check: (next, cur) => this.check(next, cur),
      charging: vmCharging(deps.ledger ?? new QuotaLedger({ store: deps.store, clock: deps.clock, defaults: {} })),
    });
  }

  async create(req: CreateVMRequest): Promise<VirtualMachine> {
    throwIfViolations(validateCreateVm(req));
    if (req.nodeId !== "" && !(await this.deps.store.of(NODE_KIND).get(req.nodeId))) throw notFound("node", req.nodeId);
    // project_id names an existing project (the default one when empty).
    const projectId = req.projectId || DEFAULT_PROJECT_ID;
    // The project is checked in the VM's own commit, under its lock (projectCheck), so that a
    // plain CreateVM reads nothing before it commits. A spec that names volumes, images or
    // networks reads them first: the project is read before them, so that a missing project
    // is what the caller hears about, not the volume it cannot be in.
    if ((req.spec?.disks.length || req.spec?.nics.length) && !(await this.deps.store.of(PROJECT_KIND).get(projectId))) throw notFound("project", projectId);
    const spec = clone(VmSpecSchema, req.spec!);
    if (req.startOnCreate) spec.desiredPowerState = PowerState.RUNNING;
    if (spec.desiredPowerState === PowerState.UNSPECIFIED) spec.desiredPowerState = PowerState.STOPPED;
    if (spec.desiredPowerState !== PowerState.RUNNING && spec.desiredPowerState !== PowerState.STOPPED) {
      throw invalidArgument([{ field: "spec.desired_power_state", reason: "INVALID_ENUM", description: "a new VM may only be RUNNING or STOPPED" }]);
    }
    pinToNode(spec, req.nodeId);
    const running = spec.desiredPowerState === PowerState.RUNNING;
    // Volume disks: in the VM's project, reachable from one node; claimed in the VM's own commit.
    const { reaches } = await readVolumeDisks(this.deps.store, projectId, spec);
    const nowMs = this.deps.clock.now();
    // New disks (size_gib, image_id) become volumes of the VM's own, made in the same commit.
    const owned = await planOwnedVolumes({ store: this.deps.store, ids: this.deps.ids, nowMs }, projectId, req.name, spec);
    volumePlacement([...reaches, ...owned.reaches]);
    const ownedIds = new Set(owned.volumes.map((v) => v.id));
    const claimed = (vm: VirtualMachine) => create(VmSpecSchema, { ...vm.spec!, disks: vm.spec!.disks.filter((d) => !ownedIds.has(d.volumeId)) });
    // NICs: a port made for each NIC naming a network, or the port it names, bound in the same commit.
    const ports = await NicPorts.plan(this.nicPortDeps(), projectId, req.name, spec);
    const volumeOps = (vm: VirtualMachine) => [...ownedVolumeOps(owned, vm.id, vm.spec!, nowMs), ...claimOps(vm.id, claimed(vm), "", nowMs)];
    for (let attempt = 1; ; attempt++) {
      const tried = ports.empty ? undefined : await ports.attempt(spec, nowMs);
      const any = reaches.length + owned.volumes.length > 0 || tried !== undefined;
      try {
        return await this.writer.create(
          {
            name: req.name,
            projectId,
            labels: req.labels,
            description: req.description,
            spec,
            // No node yet, even when pinned: only the scheduler assigns nodes, with every filter.
            status: create(VmStatusSchema, { state: running ? State.PENDING : State.STOPPED }),
          },
          { actor: any ? VOLUME_ATTACHER : "api", usage: owned.usage, ops: (vm) => [projectCheck(projectId), ...volumeOps(vm), ...(tried ? tried.ops(vm) : [])] },
        );
      } catch (err) {
        if (!tried || !(err instanceof QuantixError) || err.code !== "already_exists" || attempt >= PORT_ATTEMPTS) throw err;
        // A NIC's port lost its address to another port's commit: pick again; an address asked for is refused naming its holder.
        const why = await ports.explain(tried.tried);
        if (why !== "retry") throw why ?? err;
      }
    }
  }

  /**
   * UpdateVM. A VM that is off and whose spec changed keeps its node only if it still
   * fits there; the scheduler, which alone moves VMs, decides, and the answer waits for
   * that decision (within `budget`), so it shows whether the node was given up.
   */
  async update(req: UpdateVMRequest, budget?: { ms: number; signal: AbortSignal }): Promise<VirtualMachine> {
    const options = { ...(budget ? { budget } : {}), settled: (x: VirtualMachine) => !awaitsReview(x) };
    const cur = touchesNics(req) && req.spec ? await this.deps.store.of(VM_KIND).get(req.id) : undefined;
    if (!cur) return this.writer.update(req.id, UpdateVMRequestSchema, req, options);
    const hotplug = await nodeHotplugs(this.deps.store, cur);
    const spec = clone(VmSpecSchema, req.spec!);
    // NICs added: a port made for each naming a network, or the port it names bound, in the update's commit (as CreateVM).
    const ports = await planAddedNics(this.nicPortDeps(), cur, spec);
    const run = (r: UpdateVMRequest, extra?: (before: VirtualMachine, after: VirtualMachine) => readonly TxOp[]) =>
      this.nicContext.run({ hotplug }, () => this.writer.update(req.id, UpdateVMRequestSchema, r, { ...options, ...(extra ? { extra, actor: VOLUME_ATTACHER } : {}) }));
    if (!ports) return run({ ...req, spec });
    const nowMs = this.deps.clock.now();
    for (let attempt = 1; ; attempt++) {
      const next = clone(VmSpecSchema, spec);
      const tried = await ports.attempt(next, nowMs);
      try {
        // Only the ports of NICs the commit really adds (one already there, written meanwhile, keeps its own).
        return await run({ ...req, spec: next }, (before, after) => tried.ops(after, new Set(nicDiff(before.spec, after.spec).added)));
      } catch (err) {
        if (!(err instanceof QuantixError) || err.code !== "already_exists" || attempt >= PORT_ATTEMPTS) throw err;
        const why = await ports.explain(tried.tried);
        if (why !== "retry") throw why ?? err;
      }
    }
  }

  /**
   * DeleteVM: checked against the state table (a running VM needs force), then marked for
   * deletion: the VM controller removes its guest from its node, then the VM goes.
   * Returns once it is gone, or when the budget ends (it then shows deletion_requested_at
   * and goes when the cleanup is done). A VM already being deleted is only waited for.
   */
  delete(req: DeleteVMRequest, budget: { ms: number; signal: AbortSignal }): Promise<void> {
    return this.writer.delete(req.id, budget, (cur) => checkPowerAction("delete", cur.status?.state ?? State.UNKNOWN, cur.id, req.force));
  }

  /** The VM's rules on what a write leaves (create: `cur` undefined). */
  private check(next: VirtualMachine, cur: VirtualMachine | undefined): void {
    const spec = (next.spec ??= create(VmSpecSchema));
    if (cur) {
      spec.desiredPowerState = cur.spec?.desiredPowerState ?? PowerState.STOPPED;
      if (cur.spec?.reboot) spec.reboot = cur.spec.reboot;
      else delete spec.reboot;
    }
    if (!cur) {
      for (const nic of spec.nics) if (nic.macAddress === "") nic.macAddress = this.newMac();
      return;
    }
    // Kept NICs get their port's fields back before the spec is validated (an update may leave them empty).
    checkNicChanges(next, spec, cur, this.nicContext.getStore()?.hotplug);
    // Labels and description are every kind's rules (commonViolations, checked by the writer).
    throwIfViolations(validateVmSpec(spec));
    refuseVolumeChanges(cur.spec, spec);
    checkHotChange(cur, spec);
  }

  private nicPortDeps() {
    return { store: this.deps.store, ids: this.deps.ids, ensureDefaultGroup: this.deps.ensureDefaultGroup ?? noDefaultGroup };
  }

  private newMac(): string {
    const hex = this.deps.ids.newId().replace(/-/g, "");
    return `52:54:00:${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4, 6)}`;
  }
}

/**
 * CreateVM's node_id becomes a placement requirement rather than a node: the scheduler then
 * places the VM atomically with every filter (capacity, schedulable, taints, affinity), and a
 * pin to a node that cannot take it leaves the VM PENDING with the explanation.
 */
function pinToNode(spec: NonNullable<VirtualMachine["spec"]>, nodeId: string): void {
  if (nodeId === "") return;
  const placement = (spec.placement ??= create(PlacementPolicySchema));
  if (placement.requiredNodeIds.length > 0 && !placement.requiredNodeIds.includes(nodeId)) {
    throw invalidArgument([{ field: "node_id", reason: "CONFLICT", description: "must be one of spec.placement.required_node_ids when both are set" }]);
  }
  placement.requiredNodeIds = [nodeId];
}

/**
 * UpdateVM leaves volume disks as they are: AttachVolume and DetachVolume claim and
 * release volumes (and hot-plug them) in the commit that changes spec.disks.
 */
function refuseVolumeChanges(cur: VirtualMachine["spec"], next: VirtualMachine["spec"]): void {
  const key = (s: VirtualMachine["spec"]) => (s?.disks ?? []).filter((d) => d.volumeId !== "").map((d) => `${d.id}=${d.volumeId}`).sort().join(",");
  if (key(cur) !== key(next)) {
    throw new QuantixError("failed_precondition", "spec.disks: volume disks are added and removed with VolumeService AttachVolume and DetachVolume, not UpdateVM");
  }
}

function checkHotChange(cur: VirtualMachine, spec: VirtualMachine["spec"]): void {
  const state = cur.status?.state ?? State.UNKNOWN;
  const cold = state === State.STOPPED || state === State.PENDING || state === State.CRASHED || state === State.ERROR;
  if (cold) return;
  const changed: string[] = [];
  if (!sameJson(cur.spec?.cpu, spec?.cpu)) changed.push("spec.cpu");
  if (!sameJson(cur.spec?.memory, spec?.memory)) changed.push("spec.memory");
  if (changed.length > 0) {
    throw new QuantixError("failed_precondition", `cannot change ${changed.join(" and ")} of VM '${cur.id}' while it is ${State[state]}: CPU and memory hotplug is not supported yet; stop the VM first`);
  }
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a ?? null, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v)) === JSON.stringify(b ?? null, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
}

/** INVALID_ARGUMENT when a required id is empty. */
export function requireId(field: string, id: string): void {
  if (id === "") throw invalidArgument([{ field, reason: "REQUIRED", description: "is required" }]);
}

/** Without identity's security groups wired (tests of the VM service alone): a NIC's new port must name its groups. */
async function noDefaultGroup(projectId: string): Promise<{ id: string }> {
  throw new QuantixError("failed_precondition", `project '${projectId}' has no default security group here: name the NIC's security_groups`);
}

/** A commit op that writes nothing and refuses the commit with NOT_FOUND when the project does not exist (read under the commit's lock). */
function projectCheck(projectId: string): TxOp {
  return { op: "update", kind: PROJECT_KIND as never, object: { id: projectId, resourceVersion: 0n }, mutate: () => undefined };
}
