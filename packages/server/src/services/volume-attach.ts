import { clone, create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { DiskBus, DiskDeviceSchema, PowerState, VmSpecSchema, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import type { Volume } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import type { AttachVolumeRequest, DetachVolumeRequest } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import {
  claimVolume,
  guestDeviceHint,
  invalidArgument,
  notFound,
  QuantixError,
  releaseVolume,
  throwIfViolations,
  validateVmSpec,
  VM_KIND,
  VOLUME_ATTACHER,
  VOLUME_KIND,
  volumePlacement,
  type Clock,
  type HypervisorPort,
  type Resource,
  type Store,
  type TxOp,
} from "@quantix/core";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";
import type { NodeStorages } from "../storage/node-storages.js";
import { readVolumeDisks, resolveVolumePaths } from "../storage/vm-volumes.js";
import { requireWellFormedId } from "../resources/resource-service.js";

type V = Volume & Resource;
type Vm = VirtualMachine & Resource;

/** What a VM's node says about it, for a change of its disks. */
type Where =
  /** Not defined on any node: only the spec changes (the next define has the disk). */
  | { readonly kind: "spec" }
  /** Defined on its node but not running: the spec changes and the node's definition is dropped, so the next start defines it anew. */
  | { readonly kind: "defined"; readonly nodeId: string; readonly driver: HypervisorPort }
  /** Running (or paused) on its node: the disk is hot-plugged there. */
  | { readonly kind: "live"; readonly nodeId: string; readonly driver: HypervisorPort };

/** What AttachVolume, DetachVolume and online ResizeVolume need. */
export interface VolumeAttachDeps {
  readonly store: Store;
  readonly clock: Clock;
  /** The nodes' hypervisors; without them every VM is treated as not defined anywhere. */
  readonly drivers?: NodeDrivers | undefined;
  readonly storages?: NodeStorages | undefined;
}

/**
 * AttachVolume and DetachVolume: the VM's spec.disks and the volume's status.attachments
 * change in one commit (claimVolume under the commit's lock: of two VMs attaching one
 * volume at once, one wins and the other gets FAILED_PRECONDITION naming it). A running VM
 * gets the disk hot-plugged first through its node ("disk-hotplug"); a VM defined on its
 * node but not running has that definition dropped, so its next start carries the disk.
 */
export class VolumeAttach {
  constructor(private readonly deps: VolumeAttachDeps) {}

  async attach(req: AttachVolumeRequest): Promise<Volume> {
    requireWellFormedId("id", req.id);
    requireWellFormedId("vm_id", req.vmId);
    const diskId = req.diskId || `vol-${req.id.slice(0, 8)}`;
    const vol = await this.deps.store.of(VOLUME_KIND).get(req.id);
    if (!vol) throw notFound("volume", req.id);
    const vm = await this.vmOf(req.vmId, vol);
    if (!vm) throw notFound("VM", req.vmId);
    const spec = vm.spec ?? create(VmSpecSchema);
    const same = spec.disks.find((d) => d.volumeId === vol.id);
    if (same) {
      if (same.id === diskId) return vol;
      throw new QuantixError("failed_precondition", `volume '${vol.id}' is already disk '${same.id}' of VM '${vm.id}'`);
    }
    const disk = create(DiskDeviceSchema, { id: diskId, volumeId: vol.id, bus: req.bus === DiskBus.UNSPECIFIED ? DiskBus.VIRTIO : req.bus, readonly: req.readOnly, bootIndex: req.bootIndex });
    const next = clone(VmSpecSchema, spec);
    next.disks.push(disk);
    checkDisk(next, next.disks.length - 1);
    const { reaches } = await readVolumeDisks(this.deps.store, vm.projectId, next);
    volumePlacement(reaches.map((r) => (r.volumeId === vol.id ? { ...r, field: "id" } : r)), vm.status?.nodeId ?? "");
    const where = await this.where(vm);
    if (where.kind !== "live") requireStopped(vm);
    let path = "";
    if (where.kind === "live") {
      requireHotplug(where, vm.id);
      if (disk.bus !== DiskBus.VIRTIO) throw invalidArgument([{ field: "bus", reason: "CONFLICT", description: "only virtio disks hot-plug into a running VM; stop the VM to attach another bus" }]);
      path = (await resolveVolumePaths(this.deps.store, this.storages(), where.nodeId, create(VmSpecSchema, { disks: [disk] }))).get(vol.id)!;
    }
    const nowMs = this.deps.clock.now();
    const nodeId = vm.status?.nodeId ?? "";
    await this.commit([
      this.vmOp(vm.id, where.kind === "live", (cur) => {
        const s = (cur.spec ??= create(VmSpecSchema));
        if (s.disks.some((d) => d.id === disk.id)) throw invalidArgument([{ field: "disk_id", reason: "ALREADY_EXISTS", description: `VM '${cur.id}' already has a disk '${disk.id}'` }]);
        s.disks.push(disk);
        return cur;
      }),
      claimOp(vol.id, (cur) => claimVolume(cur, { vmId: vm.id, disk, nodeId, nowMs, guestDeviceHint: guestDeviceHint(next.disks, disk.id) })),
    ]);
    if (where.kind === "live") {
      try {
        await where.driver.disks!.attach(vm.id, { id: disk.id, path, readOnly: disk.readonly });
      } catch (err) {
        // The node refused: the VM and the volume go back to how they were.
        await this.commit([this.vmOp(vm.id, true, (cur) => withoutDisk(cur, disk.id)), claimOp(vol.id, (cur) => releaseVolume(cur, vm.id))]);
        throw err;
      }
    }
    if (where.kind === "defined") await where.driver.deleteVM(vm.id);
    return (await this.deps.store.of(VOLUME_KIND).get(vol.id)) ?? vol;
  }

  async detach(req: DetachVolumeRequest): Promise<Volume> {
    requireWellFormedId("id", req.id);
    if (req.vmId !== "") requireWellFormedId("vm_id", req.vmId);
    const vol = await this.deps.store.of(VOLUME_KIND).get(req.id);
    if (!vol) throw notFound("volume", req.id);
    const attached = [...new Set((vol.status?.attachments ?? []).map((a) => a.vmId))];
    let vmId = req.vmId;
    if (vmId === "") {
      if (attached.length === 0) return vol;
      if (attached.length > 1) throw invalidArgument([{ field: "vm_id", reason: "REQUIRED", description: `the volume is attached to ${attached.length} VMs: name one` }]);
      vmId = attached[0]!;
    }
    const vm = await this.vmOf(vmId, vol);
    const disk = vm?.spec?.disks.find((d) => d.volumeId === vol.id);
    if (!vm || !disk) {
      if (attached.includes(vmId)) return vol; // the VM let go already: the attachment controller releases it
      if (!vm) throw notFound("VM", vmId);
      return vol;
    }
    if (vol.spec?.ownerVmId === vm.id) throw new QuantixError("failed_precondition", `volume '${vol.id}' is disk '${disk.id}' that CreateVM made for VM '${vm.id}': it goes with the VM (DeleteVM); detach volumes made with CreateVolume`);
    const where = await this.where(vm);
    if (where.kind !== "live") requireStopped(vm);
    if (where.kind === "live") {
      requireHotplug(where, vm.id);
      await where.driver.disks!.detach(vm.id, disk.id, req.force);
    }
    await this.commit([this.vmOp(vm.id, where.kind === "live", (cur) => withoutDisk(cur, disk.id)), claimOp(vol.id, (cur) => releaseVolume(cur, vm.id))]);
    if (where.kind === "defined") await where.driver.deleteVM(vm.id);
    return (await this.deps.store.of(VOLUME_KIND).get(vol.id)) ?? vol;
  }

  /**
   * Grows the volume's disk in every running VM it is attached to (block_resize through the
   * node: qemu-img cannot while QEMU holds the image's lock). False when no VM runs it (the
   * volume controller grows the file offline).
   */
  async resizeOnline(vol: V, sizeBytes: bigint): Promise<boolean> {
    const live: { vm: Vm; diskId: string; where: Extract<Where, { kind: "live" }> }[] = [];
    for (const a of vol.status?.attachments ?? []) {
      const vm = await this.deps.store.of(VM_KIND).get(a.vmId);
      const disk = vm?.spec?.disks.find((d) => d.volumeId === vol.id);
      if (!vm || !disk) continue;
      const where = await this.where(vm);
      // A VM defined but not running holds no lock on the file: the controller grows it offline.
      if (where.kind === "live") {
        requireHotplug(where, vm.id);
        live.push({ vm, diskId: disk.id, where });
      }
    }
    if (live.length > 1) throw new QuantixError("failed_precondition", `volume '${vol.id}' is in use by ${live.length} running VMs: an online resize needs exactly one`);
    for (const l of live) await l.where.driver.disks!.resize(l.vm.id, l.diskId, sizeBytes);
    return live.length > 0;
  }

  /** The VM, when it is in the volume's project (one of another project is not told apart from a missing one). */
  private async vmOf(vmId: string, vol: V): Promise<Vm | undefined> {
    const vm = await this.deps.store.of(VM_KIND).get(vmId);
    if (!vm || vm.projectId !== vol.projectId) return undefined;
    if (vm.deletionRequestedAt) throw new QuantixError("failed_precondition", `VM '${vm.id}' is being deleted`);
    return vm;
  }

  /** Where the VM is, as its node observes it now; FAILED_PRECONDITION naming a state in which its disks cannot change. */
  private async where(vm: Vm): Promise<Where> {
    if (vm.status?.migrationTargetNodeId) throw new QuantixError("failed_precondition", `VM '${vm.id}' is migrating: change its disks after the migration`);
    const nodeId = vm.status?.nodeId ?? "";
    if (nodeId === "" || !this.deps.drivers) return { kind: "spec" };
    const driver = this.deps.drivers.get(nodeId);
    if (!driver) throw new QuantixError("unavailable", `VM '${vm.id}''s node '${nodeId}' is not connected: its disks cannot change now`);
    const power = (await driver.observe(vm.id)).power;
    switch (power) {
      case "absent":
        return { kind: "spec" };
      case "created":
      case "shutdown":
      case "crashed":
        return { kind: "defined", nodeId, driver };
      case "running":
      case "paused":
        return { kind: "live", nodeId, driver };
      case "starting":
      case "stopping":
      case "suspending":
      case "suspended":
        throw new QuantixError("failed_precondition", `VM '${vm.id}' is ${power.toUpperCase()}: its disks change when it is running, paused or stopped`);
      default: {
        const never: never = power;
        throw new QuantixError("internal", `unknown power state ${String(never)}`);
      }
    }
  }

  private storages(): NodeStorages {
    if (!this.deps.storages) throw new QuantixError("unavailable", "this control plane has no node storage wired");
    return this.deps.storages;
  }

  private commit(ops: TxOp[]): Promise<Resource[]> {
    return this.deps.store.commit(ops, { actor: VOLUME_ATTACHER });
  }

  /** An update of the VM's spec under the commit's lock (a new generation). */
  private vmOp(vmId: string, live: boolean, change: (cur: Vm) => Vm | undefined): TxOp {
    const nowMs = this.deps.clock.now();
    return {
      op: "update",
      kind: VM_KIND as never,
      object: { id: vmId, resourceVersion: 0n } as Resource,
      mutate: (cur) => {
        const vm = cur as Vm;
        if (vm.deletionRequestedAt) throw new QuantixError("failed_precondition", `VM '${vm.id}' is being deleted`);
        // Read under the commit's lock: a StartVM that came first means its node may define the VM from the old spec.
        if (!live) requireStopped(vm);
        const next = change(vm);
        if (!next) return undefined;
        next.generation += 1n;
        next.updatedAt = timestampFromMs(nowMs);
        return next;
      },
    };
  }
}

function claimOp(volumeId: string, change: (cur: V) => V | undefined): TxOp {
  return { op: "update", kind: VOLUME_KIND as never, object: { id: volumeId, resourceVersion: 0n } as Resource, mutate: (cur) => change(cur as V) };
}

function withoutDisk(vm: Vm, diskId: string): Vm | undefined {
  const disks = vm.spec?.disks ?? [];
  if (!disks.some((d) => d.id === diskId)) return undefined;
  vm.spec!.disks = disks.filter((d) => d.id !== diskId);
  return vm;
}

/**
 * A VM that does not run gets its new disks from its spec at its next define: only while
 * it is meant to stay stopped. One meant to run (starting, or waiting for a node) could
 * be defined from the old spec meanwhile: FAILED_PRECONDITION, attach once it runs.
 */
function requireStopped(vm: Vm): void {
  const desired = vm.spec?.desiredPowerState ?? PowerState.UNSPECIFIED;
  if (desired === PowerState.STOPPED || desired === PowerState.UNSPECIFIED) return;
  throw new QuantixError("failed_precondition", `VM '${vm.id}' is starting (desired ${PowerState[desired]}, not running yet): change its disks once it runs (hot-plug) or after StopVM`);
}

/** FAILED_PRECONDITION naming the capability when the VM's hypervisor cannot change a running VM's disks. */
function requireHotplug(where: Extract<Where, { kind: "live" }>, vmId: string): void {
  if (where.driver.capabilities.has("disk-hotplug") && where.driver.disks) return;
  throw new QuantixError("failed_precondition", `VM '${vmId}' runs on node '${where.nodeId}', whose ${where.driver.kind} hypervisor lacks the 'disk-hotplug' capability: stop the VM to change its disks`);
}

/** The new disk's violations, named by the request's fields (disk_id, bus, boot_index, ...). */
function checkDisk(spec: NonNullable<VirtualMachine["spec"]>, index: number): void {
  const prefix = `spec.disks[${index}].`;
  const mine = validateVmSpec(spec).filter((v) => v.field.startsWith(prefix));
  const rename: Record<string, string> = { id: "disk_id", bus: "bus", boot_index: "boot_index", readonly: "read_only" };
  throwIfViolations(mine.map((v) => {
    const rest = v.field.slice(prefix.length);
    return { ...v, field: rename[rest] ?? rest };
  }));
}

