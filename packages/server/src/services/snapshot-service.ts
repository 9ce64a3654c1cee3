import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { VmStatus_State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { SnapshotState, SnapshotStatusSchema, type Snapshot } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_pb.js";
import { UpdateSnapshotRequestSchema, type CreateSnapshotRequest, type DeleteSnapshotRequest, type RevertToSnapshotRequest, type UpdateSnapshotRequest } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_service_pb.js";
import { VolumeFormat } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { VolumeState, type Volume } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import {
  allOf,
  NODE_KIND,
  commonViolations,
  notFound,
  QuantixError,
  SNAPSHOT_KIND,
  throwIfViolations,
  validateCreateSnapshot,
  validateVolumeName,
  Violations,
  VM_KIND,
  VOLUME_KIND,
  type Clock,
  type IdGenerator,
  type Resource,
  type Store,
} from "@quantix/core";
import { ResourceWriter, type Budget } from "../resources/resource-writer.js";
import { requireWellFormedId } from "../resources/resource-service.js";
import { vmsNamingVolume } from "./volume-service.js";

type S = Snapshot & Resource;

/** VM states in which its disks are not held open by a hypervisor. */
export const VM_STOPPED: ReadonlySet<VmStatus_State> = new Set([VmStatus_State.PENDING, VmStatus_State.STOPPED, VmStatus_State.CRASHED, VmStatus_State.ERROR]);

/**
 * SnapshotService's writes, the snapshot's own rules over the generic resource writer.
 * Create records a snapshot of a volume (CREATING) in the volume's project; Revert asks
 * for a rollback by raising the snapshot's generation; Delete marks it. The snapshot
 * controller takes, reverts and removes snapshots on the volume's node
 * (controllers/snapshot-controller.ts). Every refusal changes nothing.
 */
export class SnapshotService {
  private readonly writer: ResourceWriter<S>;

  constructor(private readonly deps: { store: Store; clock: Clock; ids: IdGenerator }) {
    this.writer = new ResourceWriter(SNAPSHOT_KIND, deps.store, deps.clock, deps.ids, {
      writable: ["name", "labels", "description"],
      check: (next, cur) => {
        if (!cur) return;
        const v = new Violations();
        validateVolumeName(v, next.name);
        throwIfViolations(v.list);
      },
    });
  }

  async create(req: CreateSnapshotRequest): Promise<Snapshot> {
    throwIfViolations([...validateCreateSnapshot(req), ...commonViolations(req)]);
    const target = req.spec!.target;
    if (target.case === "vmId") return this.createOfVm(req, target.value);
    const volume = await this.volume(target.value ?? "");
    if (volume.spec?.format === VolumeFormat.RAW) throw new QuantixError("failed_precondition", `volume '${volume.id}' is RAW: only QCOW2 volumes have snapshots (make a QCOW2 copy with CloneVolume)`);
    await this.refuseSnapshotOfUsed(volume);
    return this.writer.create({
      name: req.name,
      projectId: volume.projectId,
      labels: req.labels,
      description: req.description,
      spec: req.spec,
      status: create(SnapshotStatusSchema, { state: SnapshotState.CREATING, sourceSizeGib: volume.spec?.sizeGib ?? 0n }),
    });
  }

  /**
   * A snapshot of a whole VM: placed on a node whose hypervisor has "vm-snapshot", not
   * MIGRATING; every writable disk of the VM (as its node's config names them) at one
   * instant, with memory when asked and the VM runs. Its volumes (spec.disks[].volume_id)
   * are listed in status.volume_snapshots.
   */
  private async createOfVm(req: CreateSnapshotRequest, vmId: string): Promise<Snapshot> {
    const vm = await this.deps.store.of(VM_KIND).get(vmId);
    if (!vm) throw notFound("VM", vmId);
    const spec = req.spec!;
    if (vm.deletionRequestedAt) throw new QuantixError("failed_precondition", `VM '${vmId}' is being deleted`);
    const state = vm.status?.state ?? VmStatus_State.STATE_UNSPECIFIED;
    if (state === VmStatus_State.MIGRATING) throw new QuantixError("failed_precondition", `cannot snapshot VM '${vmId}' while it is MIGRATING`);
    const nodeId = vm.status?.nodeId ?? "";
    if (nodeId === "") throw new QuantixError("failed_precondition", `VM '${vmId}' is on no node yet (${VmStatus_State[state]}): it has nothing to snapshot`);
    const node = await this.deps.store.of(NODE_KIND).get(nodeId);
    const caps = node?.status?.hypervisor?.capabilities ?? [];
    if (!caps.includes("vm-snapshot")) throw new QuantixError("failed_precondition", `VM '${vmId}' runs on node '${nodeId}', whose ${node?.status?.hypervisor?.type ?? "unknown"} hypervisor lacks the capability "vm-snapshot"`);
    const all = vm.spec?.disks ?? [];
    const v = new Violations();
    for (const [i, id] of spec.excludedDiskIds.entries()) {
      const d = all.find((x) => x.id === id);
      if (!d) v.add(`spec.excluded_disk_ids[${i}]`, "NOT_FOUND", `VM '${vmId}' has no disk '${id}'`);
      else if (d.readonly) v.add(`spec.excluded_disk_ids[${i}]`, "READ_ONLY", `disk '${id}' is read-only: a snapshot leaves it out anyway`);
      else if (spec.excludedDiskIds.indexOf(id) !== i) v.add(`spec.excluded_disk_ids[${i}]`, "DUPLICATE", `disk '${id}' is named twice`);
    }
    throwIfViolations(v.list);
    const disks = all.filter((d) => !spec.excludedDiskIds.includes(d.id));
    if (!disks.some((d) => !d.readonly)) throw new QuantixError("failed_precondition", `VM '${vmId}' would have no writable disk left in the snapshot: exclude fewer disks`);
    return this.writer.create({
      name: req.name,
      projectId: vm.projectId,
      labels: req.labels,
      description: req.description,
      spec,
      status: create(SnapshotStatusSchema, {
        state: SnapshotState.CREATING,
        sourceSizeGib: disks.reduce((n, d) => n + d.sizeGib, 0n),
        volumeSnapshots: disks.filter((d) => d.volumeId !== "" && !d.readonly).map((d) => ({ volumeId: d.volumeId, diskId: d.id, sizeGib: d.sizeGib })),
      }),
    });
  }

  update(req: UpdateSnapshotRequest): Promise<Snapshot> {
    return this.writer.update(req.id, UpdateSnapshotRequestSchema, req);
  }

  /**
   * RevertToSnapshot: allowed when the snapshot is AVAILABLE with no revert under way and
   * its volume is AVAILABLE and named by no VM. Raises the generation (and records
   * start_after_revert); the controller reverts and sets observed_generation.
   */
  async revert(req: RevertToSnapshotRequest): Promise<Snapshot> {
    requireWellFormedId("id", req.id);
    const cur = await this.deps.store.of(SNAPSHOT_KIND).get(req.id);
    if (!cur) throw notFound("snapshot", req.id);
    if (cur.spec?.target.case === "volumeId") await this.refuseInUse(await this.volume(cur.spec.target.value), "revert");
    if (cur.spec?.target.case === "vmId") await this.refuseVmRevert(cur, cur.spec.target.value);
    return this.deps.store.of(SNAPSHOT_KIND).update(
      req.id,
      (s) => {
        refuseUnlessIdle(s, "revert to");
        s.generation += 1n;
        s.startAfterRevert = req.startAfterRevert;
        s.updatedAt = timestampFromMs(this.deps.clock.now());
        return s;
      },
      { actor: "api" },
    );
  }

  /**
   * DeleteSnapshot: allowed in AVAILABLE (no revert under way) and ERROR; refused while a
   * volume records it as its source (spec.source.snapshot_id). Waits within `budget` for
   * the controller to remove it from its node.
   */
  async delete(req: DeleteSnapshotRequest, budget: Budget): Promise<void> {
    requireWellFormedId("id", req.id);
    const cur = await this.deps.store.of(SNAPSHOT_KIND).get(req.id);
    if (!cur) throw notFound("snapshot", req.id);
    const made: string[] = [];
    for await (const v of allOf(this.deps.store.of(VOLUME_KIND), { where: { project_id: cur.projectId } })) {
      if (v.spec?.source?.source.case === "snapshotId" && v.spec.source.source.value === cur.id) made.push(v.id);
    }
    await this.writer.delete(req.id, budget, (now) => {
      if (made.length > 0) throw new QuantixError("failed_precondition", `snapshot '${now.id}' is the source of volume ${made.map((x) => `'${x}'`).join(", ")}: delete those volumes first`);
      if ((now.status?.state ?? SnapshotState.UNSPECIFIED) !== SnapshotState.ERROR) refuseUnlessIdle(now, "delete");
    });
  }

  /**
   * A VM snapshot with memory is reverted into a running (or paused) VM, which continues
   * from it; one without memory needs the VM STOPPED, and with start_after_revert the
   * snapshot controller starts it once its disks are rolled back (a VM with memory runs
   * anyway).
   */
  private async refuseVmRevert(s: S, vmId: string): Promise<void> {
    const vm = await this.deps.store.of(VM_KIND).get(vmId);
    if (!vm) throw notFound("VM", vmId);
    const state = vm.status?.state ?? VmStatus_State.STATE_UNSPECIFIED;
    const memory = s.status?.memoryIncluded ?? false;
    const ok = memory ? state === VmStatus_State.RUNNING || state === VmStatus_State.PAUSED : state === VmStatus_State.STOPPED;
    if (!ok) throw new QuantixError("failed_precondition", `cannot revert VM '${vmId}' while it is ${VmStatus_State[state]}: a snapshot ${memory ? "with memory is reverted into a RUNNING or PAUSED VM" : "without memory needs the VM STOPPED"}`);
  }

  /** The volume, not being deleted; NOT_FOUND naming it otherwise. */
  private async volume(id: string): Promise<Volume & Resource> {
    const v = await this.deps.store.of(VOLUME_KIND).get(id);
    if (!v) throw notFound("volume", id);
    if (v.deletionRequestedAt) throw new QuantixError("failed_precondition", `volume '${id}' is being deleted`);
    return v;
  }

  /**
   * A volume snapshot is taken offline on the volume's node when no VM runs with it, and
   * live through the QEMU of the one RUNNING or PAUSED VM that has it as a disk (that disk
   * alone, crash-consistent), which needs the capability "vm-snapshot" on its node.
   * FAILED_PRECONDITION for a volume neither AVAILABLE nor IN_USE, or a VM using it that is
   * between states (starting, stopping, migrating, suspended).
   */
  private async refuseSnapshotOfUsed(v: Volume & Resource): Promise<void> {
    const state = v.status?.state ?? VolumeState.UNSPECIFIED;
    if (state !== VolumeState.AVAILABLE && state !== VolumeState.IN_USE) throw new QuantixError("failed_precondition", `cannot snapshot volume '${v.id}' while it is ${VolumeState[state]}: allowed in AVAILABLE or IN_USE`);
    for (const vm of await vmsNamingVolume(this.deps.store, v)) {
      const vmState = vm.status?.state ?? VmStatus_State.STATE_UNSPECIFIED;
      if (VM_STOPPED.has(vmState)) continue;
      if (vmState !== VmStatus_State.RUNNING && vmState !== VmStatus_State.PAUSED) throw new QuantixError("failed_precondition", `cannot snapshot volume '${v.id}' while VM '${vm.id}', which uses it, is ${VmStatus_State[vmState]}: try again once it runs or is stopped`);
      const nodeId = vm.status?.nodeId ?? "";
      const node = nodeId === "" ? undefined : await this.deps.store.of(NODE_KIND).get(nodeId);
      if (!node?.status?.hypervisor?.capabilities.includes("vm-snapshot")) throw new QuantixError("failed_precondition", `cannot snapshot volume '${v.id}' while VM '${vm.id}' runs with it: its node '${nodeId}''s ${node?.status?.hypervisor?.type ?? "unknown"} hypervisor lacks the capability "vm-snapshot" (stop the VM or detach the volume first)`);
    }
  }

  /**
   * FAILED_PRECONDITION unless the volume is AVAILABLE and no VM names it: a revert needs
   * the file closed, and changes what a VM's spec expects even while it is stopped.
   */
  private async refuseInUse(v: Volume & Resource, what: "revert"): Promise<void> {
    const state = v.status?.state ?? VolumeState.UNSPECIFIED;
    if (state === VolumeState.IN_USE) throw new QuantixError("failed_precondition", `cannot ${what} volume '${v.id}' while it is IN_USE: detach it first`);
    if (state !== VolumeState.AVAILABLE) throw new QuantixError("failed_precondition", `cannot ${what} volume '${v.id}' while it is ${VolumeState[state]}: allowed in AVAILABLE`);
    const users = (await vmsNamingVolume(this.deps.store, v)).map((vm) => vm.id);
    if (users.length > 0) throw new QuantixError("failed_precondition", `cannot ${what} volume '${v.id}': it is in use by VM ${users.map((x) => `'${x}'`).join(", ")}`);
  }
}

/** FAILED_PRECONDITION naming the snapshot's state unless it is AVAILABLE with no revert under way. */
function refuseUnlessIdle(s: S, action: string): void {
  if (s.deletionRequestedAt) throw new QuantixError("failed_precondition", `cannot ${action} snapshot '${s.id}': it is being deleted`);
  const state = s.status?.state ?? SnapshotState.UNSPECIFIED;
  if (state !== SnapshotState.AVAILABLE) throw new QuantixError("failed_precondition", `cannot ${action} snapshot '${s.id}' while it is ${SnapshotState[state]}: allowed in AVAILABLE`);
  if ((s.status?.observedGeneration ?? 0n) < s.generation) throw new QuantixError("failed_precondition", `cannot ${action} snapshot '${s.id}' while a revert to it is under way`);
}
