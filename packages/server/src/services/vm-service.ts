import { clone, create, equals } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { UpdateVMRequestSchema, type CreateVMRequest, type DeleteVMRequest, type UpdateVMRequest } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";

import { PlacementPolicySchema, PowerState, VirtualMachineSchema, VmSpecSchema, VmStatusSchema, VmStatus_State as State, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { applyUpdateMask, checkPowerAction, DEFAULT_PROJECT_ID, invalidArgument, notFound, QuantixError, throwIfViolations, validateCreateVm, validateLabels, validateVmSpec, Violations, type Clock, type IdGenerator, type Store, VM_KIND, NODE_KIND } from "@quantix/core";

import { waitFor, waitGone } from "./wait.js";
import { awaitsReview } from "../controllers/scheduler/binding-review.js";

/** Dependencies of the VM service. */
export interface VmServiceDeps {
  readonly store: Store;
  readonly clock: Clock;
  readonly ids: IdGenerator;
}

/** VM create, read, list, update, delete and watch: the use cases behind VMService. */
export class VmService {

  constructor(private readonly deps: VmServiceDeps) {}

  async create(req: CreateVMRequest): Promise<VirtualMachine> {
    throwIfViolations(validateCreateVm(req));
    if (req.nodeId !== "" && !(await this.deps.store.of(NODE_KIND).get(req.nodeId))) throw notFound("node", req.nodeId);
    const now = timestampFromMs(this.deps.clock.now());
    const spec = clone(VmSpecSchema, req.spec!);
    if (req.startOnCreate) spec.desiredPowerState = PowerState.RUNNING;
    if (spec.desiredPowerState === PowerState.UNSPECIFIED) spec.desiredPowerState = PowerState.STOPPED;
    if (spec.desiredPowerState !== PowerState.RUNNING && spec.desiredPowerState !== PowerState.STOPPED) {
      throw invalidArgument([{ field: "spec.desired_power_state", reason: "INVALID_ENUM", description: "a new VM may only be RUNNING or STOPPED" }]);
    }
    for (const nic of spec.nics) if (nic.macAddress === "") nic.macAddress = this.newMac();
    pinToNode(spec, req.nodeId);
    const running = spec.desiredPowerState === PowerState.RUNNING;
    const vm = create(VirtualMachineSchema, {
      id: this.deps.ids.newId(),
      name: req.name,
      projectId: req.projectId || DEFAULT_PROJECT_ID,
      labels: req.labels,
      description: req.description,
      spec,
      // No node yet, even when pinned: only the scheduler assigns nodes, with every filter.
      status: create(VmStatusSchema, { state: running ? State.PENDING : State.STOPPED }),
      createdAt: now,
      updatedAt: now,
      generation: 1n,
    });
    return this.deps.store.of(VM_KIND).create(vm);
  }

  async get(id: string): Promise<VirtualMachine> {
    requireId("id", id);
    const vm = await this.deps.store.of(VM_KIND).get(id);
    if (!vm) throw notFound("VM", id);
    return vm;
  }

  /**
   * UpdateVM. A VM that is off and whose spec changed keeps its node only if it still
   * fits there; the scheduler, which alone moves VMs, decides, and the answer waits for
   * that decision (within `budget`), so it shows whether the node was given up.
   */
  async update(req: UpdateVMRequest, budget?: { ms: number; signal: AbortSignal }): Promise<VirtualMachine> {
    requireId("id", req.id);
    const now = timestampFromMs(this.deps.clock.now());
    const updated = await this.deps.store.of(VM_KIND).update(
      req.id,
      (cur) => {
        if (cur.deletionRequestedAt) throw new QuantixError("failed_precondition", `cannot update VM '${cur.id}': it is being deleted`);
        // A copy: the mask is applied to the draft, then compared with the current VM.
        const draft = create(UpdateVMRequestSchema, { spec: clone(VmSpecSchema, cur.spec ?? create(VmSpecSchema)), labels: { ...cur.labels }, description: cur.description });
        const paths = req.updateMask?.paths ?? [];
        if (paths.length > 0) {
          throwIfViolations(applyUpdateMask(UpdateVMRequestSchema, draft, req, paths, (p) => isWritableVmPath(p)));
        } else {
          if (req.spec) draft.spec = clone(VmSpecSchema, req.spec);
          if (Object.keys(req.labels).length > 0) draft.labels = { ...req.labels };
          if (req.description !== "") draft.description = req.description;
        }
        const spec = draft.spec ?? create(VmSpecSchema);
        spec.desiredPowerState = cur.spec?.desiredPowerState ?? PowerState.STOPPED;
        for (const nic of spec.nics) if (nic.macAddress === "") nic.macAddress = this.newMac();
        const v = new Violations();
        v.list.push(...validateVmSpec(spec));
        if (draft.description.length > 1024) v.add("description", "INVALID_LENGTH", "must be at most 1024 characters long");
        validateLabels(v, "labels", draft.labels);
        throwIfViolations(v.list);
        checkHotChange(cur, spec);
        const specChanged = !sameSpec(cur.spec, spec);
        const changed = specChanged || cur.description !== draft.description || JSON.stringify(sorted(cur.labels)) !== JSON.stringify(sorted(draft.labels));
        if (!changed) return undefined;
        cur.spec = spec;
        cur.labels = draft.labels;
        cur.description = draft.description;
        if (specChanged) cur.generation += 1n;
        cur.updatedAt = now;
        return cur;
      },
      { expectedVersion: req.resourceVersion, actor: "api" },
    );
    if (!budget || !awaitsReview(updated)) return updated;
    return waitFor(this.deps.store.of(VM_KIND), "VM", updated.id, (x) => !awaitsReview(x), budget.ms, budget.signal);
  }

  /**
   * DeleteVM: checked against the state table (a running VM needs force), then marked for
   * deletion: the VM controller removes its guest from its node, then the VM goes.
   * Returns once it is gone, or when the budget ends (it then shows deletion_requested_at
   * and goes when the cleanup is done). A VM already being deleted is only waited for.
   */
  async delete(req: DeleteVMRequest, budget: { ms: number; signal: AbortSignal }): Promise<void> {
    requireId("id", req.id);
    const vms = this.deps.store.of(VM_KIND);
    await vms.delete(
      req.id,
      (cur) => {
        if (!cur.deletionRequestedAt) checkPowerAction("delete", cur.status?.state ?? State.UNKNOWN, cur.id, req.force);
      },
      { actor: "api" },
    );
    await waitGone(vms, req.id, budget.ms, budget.signal);
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

/** Paths UpdateVM may write. Power state has its own RPCs and their state table. */
function isWritableVmPath(path: string): boolean {
  if (path === "spec.desired_power_state") return false;
  return path === "labels" || path === "description" || path === "spec" || path.startsWith("spec.");
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

function sameSpec(a: VirtualMachine["spec"], b: VirtualMachine["spec"]): boolean {
  return equals(VmSpecSchema, a ?? create(VmSpecSchema), b ?? create(VmSpecSchema));
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a ?? null, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v)) === JSON.stringify(b ?? null, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
}

function sorted(o: Record<string, string>): [string, string][] {
  return Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}

/** INVALID_ARGUMENT when a required id is empty. */
export function requireId(field: string, id: string): void {
  if (id === "") throw invalidArgument([{ field, reason: "REQUIRED", description: "is required" }]);
}
