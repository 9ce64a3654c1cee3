import { clone, create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { StoragePoolType, VolumeFormat, type StoragePool } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { VolumeSpecSchema, VolumeState, VolumeStatusSchema, type Volume } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { SnapshotState } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_pb.js";
import type { VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { UpdateVolumeRequestSchema, type AttachVolumeRequest, type CloneVolumeRequest, type DetachVolumeRequest, type CreateVolumeRequest, type DeleteVolumeRequest, type ResizeVolumeRequest, type UpdateVolumeRequest } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import {
  allOf,
  commonViolations,
  DEFAULT_PROJECT_ID,
  invalidArgument,
  isLocalPool,
  NODE_KIND,
  notFound,
  PROJECT_KIND,
  QuantixError,
  SNAPSHOT_KIND,
  STORAGE_LIMITS,
  throwIfViolations,
  validateCreateVolume,
  validateQos,
  validateVolumeName,
  Violations,
  VM_KIND,
  VOLUME_KIND,
  volumeUsage,
  type Clock,
  type IdGenerator,
  type Resource,
  type Store,
} from "@quantix/core";
import { QuotaLedger, type Charging } from "../quota/quota-ledger.js";
import { ResourceWriter, type Budget } from "../resources/resource-writer.js";
import { usablePool } from "./usable-pool.js";
import { imageMinGib, sourceImage } from "./source-image.js";
import { requireWellFormedId } from "../resources/resource-service.js";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";
import type { NodeStorages } from "../storage/node-storages.js";
import { VolumeAttach } from "./volume-attach.js";

type V = Volume & Resource;

/** How volumes count: one volume and its size in GiB, in its project, until it is finally removed. */
export function volumeCharging(ledger: QuotaLedger): Charging<V> {
  return { ledger, usage: volumeUsage, projectOf: (v) => v.projectId };
}

/**
 * VolumeService's writes, the volume's own rules over the generic resource writer:
 * create (blank, or a clone of a volume of the same pool) and grow, charged to the
 * project's `volumes` and `volume_gib` quota in the same commit; delete refused while
 * the volume is attached to a VM or backs a clone, unless forced. The volume controller
 * then makes the node match (controllers/volume-controller.ts).
 */
export class VolumeService {
  private readonly writer: ResourceWriter<V>;
  private readonly charging: Charging<V>;

  private readonly attachments: VolumeAttach;

  constructor(private readonly deps: { store: Store; clock: Clock; ids: IdGenerator; ledger?: QuotaLedger; drivers?: NodeDrivers; storages?: NodeStorages }) {
    this.attachments = new VolumeAttach({ store: deps.store, clock: deps.clock, drivers: deps.drivers, storages: deps.storages });
    this.charging = volumeCharging(deps.ledger ?? new QuotaLedger({ store: deps.store, clock: deps.clock, defaults: {} }));
    this.writer = new ResourceWriter(VOLUME_KIND, deps.store, deps.clock, deps.ids, {
      writable: ["name", "labels", "description", "spec.qos", "spec.bootable", "spec.multi_attach"],
      unmasked: (draft, req) => {
        const r = req as unknown as UpdateVolumeRequest;
        if (r.name !== "") draft["name"] = r.name;
        if (Object.keys(r.labels).length > 0) draft["labels"] = { ...r.labels };
        if (r.description !== "") draft["description"] = r.description;
        if (r.spec) {
          const spec = (draft["spec"] ??= create(VolumeSpecSchema)) as Volume["spec"] & object;
          const given = clone(VolumeSpecSchema, r.spec);
          if (given.qos) spec.qos = given.qos;
          else delete spec.qos;
          spec.bootable = given.bootable;
          spec.multiAttach = given.multiAttach;
        }
      },
      check: (next, cur) => {
        if (!cur) return;
        const v = new Violations();
        validateVolumeName(v, next.name);
        validateQos(v, next.spec?.qos);
        if (cur.spec?.multiAttach && !next.spec?.multiAttach && (cur.status?.attachments.length ?? 0) > 1) {
          v.add("spec.multi_attach", "CONFLICT", `cannot be turned off while the volume has ${cur.status?.attachments.length} attachments`);
        }
        throwIfViolations(v.list);
      },
      charging: this.charging,
    });
  }

  async create(req: CreateVolumeRequest): Promise<Volume> {
    throwIfViolations([...validateCreateVolume(req), ...commonViolations(req)]);
    const projectId = req.projectId || DEFAULT_PROJECT_ID;
    if (!(await this.deps.store.of(PROJECT_KIND).get(projectId))) throw notFound("project", projectId);
    const spec = clone(VolumeSpecSchema, req.spec!);
    const source = spec.source?.source;
    const snap = source?.case === "snapshotId" ? await this.sourceSnapshot(source.value, projectId, spec.source?.linked ?? false) : undefined;
    const src = source?.case === "volumeId" ? await this.sourceVolume(source.value, projectId) : snap ? await this.sourceVolume(snap.volumeId, projectId, "snapshot's volume") : undefined;
    const img = source?.case === "imageId" ? await sourceImage(this.deps.store, source.value, projectId) : undefined;
    const pool = await usablePool(this.deps.store, spec.poolId || src?.spec?.poolId || img?.spec?.poolId || "");
    spec.poolId = pool.id;
    if (spec.format === VolumeFormat.UNSPECIFIED) spec.format = pool.spec?.defaultVolumeFormat || VolumeFormat.QCOW2;
    let nodeId = req.nodeId;
    if (src) {
      const v = new Violations();
      // The node side clones within one pool; MigrateVolume moves volumes between pools.
      if (src.spec?.poolId !== pool.id) v.add("spec.pool_id", "CONFLICT", `a clone is made in its source's pool ('${src.spec?.poolId}')`);
      if (spec.source?.linked && spec.format !== VolumeFormat.QCOW2) v.add("spec.format", "CONFLICT", "a linked clone is QCOW2");
      const least = snap ? snap.sizeGib : (src.spec?.sizeGib ?? 0n);
      if (spec.sizeGib === 0n) spec.sizeGib = least;
      else if (spec.sizeGib < least) v.add("spec.size_gib", "OUT_OF_RANGE", `must be at least the source's size (${least} GiB)`);
      const srcNode = src.status?.nodeId ?? "";
      if (nodeId !== "" && srcNode !== "" && nodeId !== srcNode) v.add("node_id", "CONFLICT", `a clone in a local pool is on its source's node ('${srcNode}')`);
      throwIfViolations(v.list);
      if (srcNode !== "") nodeId = srcNode;
    }
    if (img) {
      const v = new Violations();
      if (spec.source?.linked && spec.format !== VolumeFormat.QCOW2) v.add("spec.format", "CONFLICT", "a linked clone is QCOW2");
      const least = imageMinGib(img);
      if (spec.sizeGib === 0n) spec.sizeGib = least;
      else if (spec.sizeGib < least) v.add("spec.size_gib", "OUT_OF_RANGE", `must be at least the image's size (${least} GiB)`);
      throwIfViolations(v.list);
      // Where the image already has a copy in this pool, the volume goes there (no second copy).
      if (nodeId === "") nodeId = img.status?.copies.find((c) => c.poolId === pool.id)?.nodeId ?? "";
    }
    if (nodeId !== "") await this.checkNode(nodeId, pool);
    refuseWithoutRoom(pool, spec.sizeGib);
    return this.writer.create({
      name: req.name,
      projectId,
      labels: req.labels,
      description: req.description,
      spec,
      status: create(VolumeStatusSchema, { state: VolumeState.PENDING, nodeId: isLocalPool(pool.spec?.type ?? StoragePoolType.UNSPECIFIED) ? nodeId : "" }),
    });
  }

  /** CloneVolume: CreateVolume with the source volume, in its pool and (by default) project. */
  async cloneVolume(req: CloneVolumeRequest): Promise<Volume> {
    requireWellFormedId("id", req.id);
    const src = await this.deps.store.of(VOLUME_KIND).get(req.id);
    if (!src) throw notFound("volume", req.id);
    if (req.poolId !== "" && req.poolId !== src.spec?.poolId) throw invalidArgument([{ field: "pool_id", reason: "CONFLICT", description: `a clone is made in its source's pool ('${src.spec?.poolId}')` }]);
    return this.create({
      $typeName: "Quantixkvm.storage.v1.CreateVolumeRequest",
      name: req.name,
      projectId: req.projectId || src.projectId,
      description: req.description,
      labels: req.labels,
      nodeId: "",
      spec: create(VolumeSpecSchema, {
        sizeGib: req.sizeGib,
        poolId: src.spec?.poolId ?? "",
        format: req.linked ? VolumeFormat.QCOW2 : (src.spec?.format ?? VolumeFormat.UNSPECIFIED),
        source: { source: { case: "volumeId", value: src.id }, linked: req.linked },
        bootable: src.spec?.bootable ?? false,
      }),
    });
  }

  update(req: UpdateVolumeRequest): Promise<Volume> {
    return this.writer.update(req.id, UpdateVolumeRequestSchema, req);
  }

  /** AttachVolume (services/volume-attach.ts). */
  attach(req: AttachVolumeRequest): Promise<Volume> {
    return this.attachments.attach(req);
  }

  /** DetachVolume (services/volume-attach.ts). */
  detach(req: DetachVolumeRequest): Promise<Volume> {
    return this.attachments.detach(req);
  }

  /**
   * ResizeVolume: grows the spec's size, charging `volume_gib` in the same commit. The
   * volume controller grows the file; a volume a running VM holds is grown first by that
   * VM's hypervisor (block_resize: QEMU holds the image's lock), and the guest sees it.
   */
  async resize(req: ResizeVolumeRequest): Promise<Volume> {
    requireWellFormedId("id", req.id);
    const v = new Violations();
    v.range("new_size_gib", req.newSizeGib, STORAGE_LIMITS.volumeMinGib, STORAGE_LIMITS.volumeMaxGib, "GiB");
    throwIfViolations(v.list);
    const vol = await this.deps.store.of(VOLUME_KIND).get(req.id);
    if (!vol) throw notFound("volume", req.id);
    if (req.newSizeGib > (vol.spec?.sizeGib ?? 0n) && !vol.deletionRequestedAt && (vol.status?.attachments.length ?? 0) > 0) {
      await this.attachments.resizeOnline(vol, req.newSizeGib << 30n);
    }
    const nowMs = this.deps.clock.now();
    return this.charging.ledger.update(
      VOLUME_KIND,
      req.id,
      (cur) => {
        if (cur.deletionRequestedAt) throw new QuantixError("failed_precondition", `cannot resize volume '${cur.id}': it is being deleted`);
        const size = cur.spec?.sizeGib ?? 0n;
        if (req.newSizeGib < size) throw invalidArgument([{ field: "new_size_gib", reason: "OUT_OF_RANGE", description: `must be at least the current size (${size} GiB): volumes only grow` }]);
        if (req.newSizeGib === size) return undefined;
        const state = cur.status?.state ?? VolumeState.UNSPECIFIED;
        if (state !== VolumeState.AVAILABLE && state !== VolumeState.IN_USE) throw new QuantixError("failed_precondition", `cannot resize volume '${cur.id}' while it is ${VolumeState[state]}: allowed in AVAILABLE and IN_USE`);
        cur.spec!.sizeGib = req.newSizeGib;
        cur.generation += 1n;
        cur.updatedAt = timestampFromMs(nowMs);
        return cur;
      },
      this.charging,
      { actor: "api" },
    );
  }

  /**
   * DeleteVolume: refused while a VM's spec names the volume or it is attached, or while
   * another volume is a linked clone of it (or a copy of it still being made), unless
   * force. Then marked: the controller removes its file and the volume goes (its quota
   * released then). Waits for that within `budget`.
   */
  async delete(req: DeleteVolumeRequest, budget: Budget): Promise<void> {
    requireWellFormedId("id", req.id);
    const cur = await this.deps.store.of(VOLUME_KIND).get(req.id);
    if (!cur) throw notFound("volume", req.id);
    const users = req.force || cur.deletionRequestedAt ? [] : await this.usersOf(cur);
    const dependants = req.force || cur.deletionRequestedAt ? [] : await this.dependantsOf(cur.id);
    await this.writer.delete(req.id, budget, (now) => {
      const attached = [...new Set([...users, ...(now.status?.attachments ?? []).map((a) => a.vmId)])];
      if (req.force) return;
      if (attached.length > 0) throw new QuantixError("failed_precondition", `volume '${now.id}' is in use by VM ${attached.map((x) => `'${x}'`).join(", ")}: detach it first, or delete with force`);
      if (dependants.length > 0) throw new QuantixError("failed_precondition", `volume '${now.id}' backs volume ${dependants.map((x) => `'${x}'`).join(", ")}: delete the clone first, or delete with force`);
    });
  }

  /** The VMs of the volume's project whose spec names it as a disk. */
  private async usersOf(v: V): Promise<string[]> {
    return (await vmsNamingVolume(this.deps.store, v)).map((vm) => vm.id);
  }

  /** Volumes that need this one: linked clones of it, and copies of it not made yet. */
  private async dependantsOf(id: string): Promise<string[]> {
    const out: string[] = [];
    for await (const c of allOf(this.deps.store.of(VOLUME_KIND), { where: { source_volume_id: id } })) {
      const s = c.status?.state ?? VolumeState.UNSPECIFIED;
      if ((c.spec?.source?.linked && !c.status?.flattened) || s === VolumeState.PENDING || s === VolumeState.CREATING) out.push(c.id);
    }
    return out;
  }

  private async sourceVolume(id: string, projectId: string, what = "source volume"): Promise<V> {
    const src = await this.deps.store.of(VOLUME_KIND).get(id);
    // A volume of another project is not told apart from a missing one.
    if (!src || src.projectId !== projectId) throw notFound("volume", id);
    if (src.deletionRequestedAt) throw new QuantixError("failed_precondition", `${what} '${id}' is being deleted`);
    const state = src.status?.state ?? VolumeState.UNSPECIFIED;
    if (state !== VolumeState.AVAILABLE && state !== VolumeState.IN_USE) throw new QuantixError("failed_precondition", `${what} '${id}' is ${VolumeState[state]}: a clone needs it AVAILABLE or IN_USE`);
    return src;
  }

  /** A volume snapshot of the project to copy a new volume from: AVAILABLE, and never a linked clone (the node copies it in full). */
  private async sourceSnapshot(id: string, projectId: string, linked: boolean): Promise<{ volumeId: string; sizeGib: bigint }> {
    const snap = await this.deps.store.of(SNAPSHOT_KIND).get(id);
    if (!snap || snap.projectId !== projectId) throw notFound("snapshot", id);
    if (linked) throw invalidArgument([{ field: "spec.source.linked", reason: "CONFLICT", description: "a volume from a snapshot is a full copy: linked clones are of volumes" }]);
    if (snap.spec?.target.case !== "volumeId") throw new QuantixError("failed_precondition", `snapshot '${id}' is of a VM: make a volume from one of its volumes' snapshots`);
    const state = snap.status?.state ?? SnapshotState.UNSPECIFIED;
    if (snap.deletionRequestedAt || state !== SnapshotState.AVAILABLE) throw new QuantixError("failed_precondition", `snapshot '${id}' is ${snap.deletionRequestedAt ? "being deleted" : SnapshotState[state]}: a volume is made from an AVAILABLE snapshot`);
    return { volumeId: snap.spec.target.value, sizeGib: snap.status?.sourceSizeGib ?? 0n };
  }

  private async checkNode(nodeId: string, pool: StoragePool): Promise<void> {
    if (!(await this.deps.store.of(NODE_KIND).get(nodeId))) throw notFound("node", nodeId);
    const ids = pool.spec?.nodeIds ?? [];
    if (ids.length > 0 && !ids.includes(nodeId)) throw new QuantixError("failed_precondition", `node '${nodeId}' is not one of storage pool '${pool.id}''s nodes (spec.node_ids)`);
  }
}

/** The VMs of the volume's project whose spec names it as a disk (spec.disks[].volume_id). */
export async function vmsNamingVolume(store: Store, v: { id: string; projectId: string }): Promise<(VirtualMachine & Resource)[]> {
  const out: (VirtualMachine & Resource)[] = [];
  for await (const vm of allOf(store.of(VM_KIND), { where: { project_id: v.projectId } })) if (vm.spec?.disks.some((d) => d.volumeId === v.id)) out.push(vm);
  return out;
}

/**
 * RESOURCE_EXHAUSTED naming the pool when its last measurement leaves less provisionable
 * room than the volume's size (a linked clone too: it may grow to its size). A pool not
 * measured yet is not refused here; its node refuses what does not fit.
 */
function refuseWithoutRoom(pool: StoragePool, sizeGib: bigint): void {
  const s = pool.status;
  if (!s || s.observedGeneration === 0n || s.capacityBytes === 0n) return;
  const want = sizeGib << 30n;
  if (want > s.provisionableBytes) {
    throw new QuantixError("resource_exhausted", `storage pool '${pool.id}' has room for ${s.provisionableBytes >> 30n} GiB more (capacity, reserve and overcommit ratio counted), less than the ${sizeGib} GiB asked for`);
  }
}
