import { clone, create, equals } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import {
  ListVMsResponseSchema,
  UpdateVMRequestSchema,
  VmUpdateSchema,
  type CreateVMRequest,
  type DeleteVMRequest,
  type ListVMsRequest,
  type ListVMsResponse,
  type UpdateVMRequest,
  type VmUpdate,
  type WatchVMRequest,
  type WatchVMsRequest,
} from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import {
  PlacementPolicySchema,
  PowerState,
  VirtualMachineSchema,
  VmSpecSchema,
  VmStatusSchema,
  VmStatus_State as State,
  VmStatus_StateSchema,
  type VirtualMachine,
} from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { applyUpdateMask, checkPowerAction, DEFAULT_PROJECT_ID, invalidArgument, notFound, QuantixError, throwIfViolations, validateCreateVm, validateLabels, validateVmSpec, Violations, matchesQuery, type Clock, type IdGenerator, type Store, VM_KIND, NODE_KIND } from "@quantix/core";
import { listPage } from "./paging.js";
import { waitGone } from "./wait.js";
import { EVENT_TYPE, filterEvent, SharedUpdates, watchFiltered } from "./watch-filter.js";

/** Dependencies of the VM service. */
export interface VmServiceDeps {
  readonly store: Store;
  readonly clock: Clock;
  readonly ids: IdGenerator;
}

/** VM create, read, list, update, delete and watch: the use cases behind VMService. */
export class VmService {
  private readonly updates = new SharedUpdates<VirtualMachine, VmUpdate>(toUpdate);

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

  async list(req: ListVMsRequest): Promise<ListVMsResponse> {
    const v = new Violations();
    req.states.forEach((s, i) => v.enumValue(`states[${i}]`, s, VmStatus_StateSchema.values.map((x) => x.number)));
    throwIfViolations(v.list);
    const filter = { projectId: req.projectId, labels: req.labels, states: [...req.states].sort(), nodeId: req.nodeId };
    const where = { ...(req.projectId ? { project_id: req.projectId } : {}), ...(req.states.length > 0 ? { state: filter.states } : {}), ...(req.nodeId ? { node_id: req.nodeId } : {}) };
    const page = await listPage(VM_KIND, req, filter, (order, after, limit, countTotal) => this.deps.store.of(VM_KIND).list({ where, labels: req.labels, order, after, limit, countTotal }));
    return create(ListVMsResponseSchema, { vms: page.items, totalCount: page.totalCount, nextPageToken: page.nextPageToken, resourceVersion: page.resourceVersion });
  }

  async update(req: UpdateVMRequest): Promise<VirtualMachine> {
    requireId("id", req.id);
    const now = timestampFromMs(this.deps.clock.now());
    return this.deps.store.of(VM_KIND).update(
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
        const before = cur.spec;
        cur.spec = spec;
        cur.labels = draft.labels;
        cur.description = draft.description;
        if (specChanged) cur.generation += 1n;
        releaseNodeIfResized(cur, before);
        cur.updatedAt = now;
        return cur;
      },
      { expectedVersion: req.resourceVersion },
    );
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

  /** One VM's current state (unless resuming), then every change until it is deleted. */
  async *watchVm(req: WatchVMRequest, signal: AbortSignal): AsyncGenerator<VmUpdate> {
    requireId("vm_id", req.vmId);
    let from = req.resourceVersion;
    // Changes up to the current state are in the ADDED event; skip them in the replay.
    let seen = from;
    if (from === 0n) {
      // The store's revision before the read: history reaches back to it even when the
      // VM itself last changed long ago (and was compacted out of the history).
      from = await this.deps.store.revision();
      const vm = await this.get(req.vmId);
      seen = vm.resourceVersion;
      yield create(VmUpdateSchema, { type: EventType.ADDED, vm, resourceVersion: vm.resourceVersion });
    }
    for await (const ev of this.deps.store.of(VM_KIND).watch(from, signal)) {
      if (ev.type !== "SYNCED" && ev.revision <= seen) continue;
      const f = filterEvent(ev, (vm) => vm.id === req.vmId);
      if (!f) continue;
      yield toUpdate(f);
      if (f.type === "DELETED") return;
    }
  }

  /** The matching VMs (or the changes after resource_version), then every change. */
  watchVms(req: WatchVMsRequest, signal: AbortSignal): AsyncIterable<VmUpdate> {
    const v = new Violations();
    if (req.projectId !== "") v.pattern("project_id", req.projectId, /^[a-zA-Z0-9][a-zA-Z0-9_-]{0,63}$/, "must be a project id");
    throwIfViolations(v.list);
    const q = { where: { ...(req.projectId ? { project_id: req.projectId } : {}), ...(req.nodeId ? { node_id: req.nodeId } : {}) }, labels: req.labels };
    const snapshot = () => this.deps.store.of(VM_KIND).list({ ...q, order: { field: "name", desc: false }, limit: Number.MAX_SAFE_INTEGER });
    return watchFiltered(this.deps.store.of(VM_KIND), req.resourceVersion, snapshot, (vm) => matchesQuery(VM_KIND, vm, q), this.updates, signal);
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

function toUpdate(f: { type: "ADDED" | "MODIFIED" | "DELETED" | "SYNCED"; object: VirtualMachine | undefined; revision: bigint }): VmUpdate {
  return create(VmUpdateSchema, { type: EVENT_TYPE[f.type], ...(f.object ? { vm: f.object } : {}), resourceVersion: f.revision });
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

/**
 * A stopped VM keeps its node, and that node's capacity counts it. Its new cpu, memory or
 * placement may no longer fit there, so it gives the node up: the scheduler, the only
 * one that assigns nodes, places it again (with every filter) when it starts. The stopped
 * definition left on the old node is removed by the fencer (fencing.ts) as a stale copy.
 */
function releaseNodeIfResized(cur: VirtualMachine, before: VirtualMachine["spec"]): void {
  if (!cur.status?.nodeId || cur.status.state !== State.STOPPED) return;
  const moved = ["cpu", "memory", "placement"] as const;
  if (moved.every((k) => sameJson(before?.[k], cur.spec?.[k]))) return;
  cur.status.nodeId = "";
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
