import { create } from "@bufbuild/protobuf";
import { DiskBus, Firmware, NicModel, type VmSpec } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { ConsoleOutput, ConsoleType, NetworkInterfaceType, StorageInterfaceType, VmConfigSchema, type VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "./errors.js";

/** The metadata key under which an agent's VM records the control plane's VM id. */
export const CONTROL_PLANE_VM_ID_KEY = "quantix.vm-id";

/**
 * The metadata key ("1") marking an agent's VM as one the control plane restarts elsewhere
 * when its node is lost (HA policy enabled): the agent powers such VMs off itself when it
 * has been cut off from the control plane for nearly the lost-after time (self-fencing).
 */
export const HA_METADATA_KEY = "quantix.ha";

/**
 * The metadata key under which an agent's VM records the id of the cluster (the store,
 * Store.clusterId) whose control plane created it: a guest of ours whose VM no longer
 * exists is removed; a guest of another cluster, or of none, is not ours to judge.
 */
export const CLUSTER_METADATA_KEY = "quantix.cluster";

const MIB = 1024n * 1024n;

const NIC_TYPES: Record<NicModel, NetworkInterfaceType> = {
  [NicModel.UNSPECIFIED]: NetworkInterfaceType.VIRTIO_NET,
  [NicModel.VIRTIO]: NetworkInterfaceType.VIRTIO_NET,
  [NicModel.E1000]: NetworkInterfaceType.E1000,
  [NicModel.RTL8139]: NetworkInterfaceType.RTL8139,
};

/**
 * The vmm.v1 config a host agent runs for a compute VmSpec. Pure: the same spec always
 * gives the same config, so CreateVm stays idempotent when the control plane sends it
 * again (after an agent restart or a lost answer).
 *
 * A disk that names a volume (`volume_id`) takes the volume's file on the node from
 * `volumePaths` (volume id to path, resolved by the caller from the volume's node storage:
 * this stays pure); a volume missing there fails with FAILED_PRECONDITION naming it. What
 * an agent node cannot provide fails with FAILED_PRECONDITION naming it: disks from an
 * image (`image_id`) or a new blank disk (`size_gib`) that CreateVM did not turn into
 * volumes (no default storage pool), and UEFI firmware (vmm.v1 has
 * no firmware choice). The CPU model and huge pages have no vmm.v1 field and are left to
 * the node.
 */
/** The agent's interface type for a NIC model of the API (VIRTIO_NET when unspecified). */
export function agentNicType(model: NicModel): NetworkInterfaceType {
  return NIC_TYPES[model] ?? NetworkInterfaceType.VIRTIO_NET;
}

export function toAgentVmConfig(vmId: string, spec: VmSpec, volumePaths: ReadonlyMap<string, string> = new Map()): VmConfig {
  const cpu = spec.cpu;
  const mem = spec.memory;
  if (!cpu || !mem) throw new QuantixError("invalid_argument", `VM '${vmId}' has no cpu or memory in its spec`);
  for (const d of spec.disks) {
    if (d.hostPath !== "" || d.volumeId !== "") {
      if (d.bus === DiskBus.IDE) throw new QuantixError("failed_precondition", `disk '${d.id}': the IDE bus is not offered on agent nodes; use virtio, scsi, sata or nvme`);
      if (d.volumeId !== "" && !volumePaths.has(d.volumeId)) {
        throw new QuantixError("failed_precondition", `disk '${d.id}' names volume '${d.volumeId}', whose file on the node is not known (the volume is not on the VM's node, or not created yet)`);
      }
      continue;
    }
    const what = d.imageId !== "" ? `a new volume from image '${d.imageId}'` : `a new ${d.sizeGib} GiB volume`;
    throw new QuantixError(
      "failed_precondition",
      `disk '${d.id}' needs ${what}, which CreateVM makes only when the storage service has a default pool (StoragePoolService, spec.is_default): make a pool the default and create the VM again, name a volume (VolumeService) in disks[].volume_id, give an image file on the node (disks[].host_path), or boot with spec.boot.direct_boot`,
    );
  }
  if (spec.boot?.firmware === Firmware.UEFI) {
    throw new QuantixError("failed_precondition", "spec.boot.firmware UEFI is not available on agent nodes yet (they boot BIOS or a direct kernel)");
  }
  const sockets = Math.max(1, cpu.sockets);
  const threads = Math.max(1, cpu.threadsPerCore);
  const vcpus = cpu.cores * sockets * threads;
  const direct = spec.boot?.directBoot;
  const ci = spec.provisioning?.cloudInit;
  return create(VmConfigSchema, {
    cpu: {
      vcpuCount: vcpus,
      // A plain count needs no topology; only a real one is sent, so that backends
      // without topology support still take the simple case.
      ...(sockets > 1 || threads > 1 ? { topology: { sockets, coresPerSocket: cpu.cores, threadsPerCore: threads } } : {}),
    },
    memory: {
      sizeBytes: BigInt.asIntN(64, mem.sizeMib * MIB),
      ...(mem.maxSizeMib > mem.sizeMib ? { hotplugEnabled: true, maxSizeBytes: BigInt.asIntN(64, mem.maxSizeMib * MIB) } : {}),
    },
    boot: direct ? { kernelPath: direct.kernelPath, initrdPath: direct.initrdPath, kernelArgs: direct.cmdline } : {},
    storage: agentDisks(spec, volumePaths),
    // A NIC on a port (PortService) opens the port's TAP, which the node's network data plane made; others get a TAP of their own.
    network: spec.nics.map((n) => ({ id: n.id, macAddress: n.macAddress, ...(n.portId !== "" ? { portId: n.portId } : { tapDevice: agentTapName(vmId, n.id) }), interfaceType: NIC_TYPES[n.model] ?? NetworkInterfaceType.VIRTIO_NET })),
    console: { enabled: true, output: ConsoleOutput.BUFFER, consoleType: ConsoleType.SERIAL },
    metadata: { [CONTROL_PLANE_VM_ID_KEY]: vmId, ...(spec.haPolicy?.enabled ? { [HA_METADATA_KEY]: "1" } : {}) },
    ...(ci ? { cloudInit: { userData: ci.userData, metaData: ci.metaData, networkConfig: ci.networkConfig } } : {}),
  });
}

const DISK_TYPES: Record<Exclude<DiskBus, DiskBus.IDE>, StorageInterfaceType> = {
  [DiskBus.UNSPECIFIED]: StorageInterfaceType.VIRTIO_BLK,
  [DiskBus.VIRTIO]: StorageInterfaceType.VIRTIO_BLK,
  [DiskBus.SCSI]: StorageInterfaceType.VIRTIO_SCSI,
  [DiskBus.SATA]: StorageInterfaceType.SATA,
  [DiskBus.NVME]: StorageInterfaceType.NVME,
};

/**
 * The disks of an agent VM (host_path disks, and volume disks at their resolved paths):
 * in boot order, the disk with the lowest boot_index (else the first) as the root
 * device. A backend that lacks a bus's capability refuses it by name.
 */
function agentDisks(spec: VmSpec, volumePaths: ReadonlyMap<string, string>) {
  const booted = spec.disks.filter((d) => d.bootIndex > 0).sort((a, b) => a.bootIndex - b.bootIndex)[0] ?? spec.disks[0];
  return spec.disks.map((d) => ({
    id: d.id,
    path: d.volumeId !== "" ? volumePaths.get(d.volumeId)! : d.hostPath,
    readOnly: d.readonly,
    isRootDevice: d === booted && !spec.boot?.directBoot,
    interfaceType: DISK_TYPES[d.bus as Exclude<DiskBus, DiskBus.IDE>] ?? StorageInterfaceType.VIRTIO_BLK,
  }));
}

/**
 * The tap device name a VM's NIC uses on an agent node: "qx" and 13 hex digits of a
 * hash of the VM and NIC ids (15 characters, the Linux limit). Derived, never taken
 * from user input, so it is always a safe interface name; the networking service
 * creates the device under this name.
 */
export function agentTapName(vmId: string, nicId: string): string {
  // Two FNV-1a 32-bit hashes with different seeds give 64 bits; 52 are used.
  const a = fnv1a(`${vmId}/${nicId}`, 0x811c9dc5);
  const b = fnv1a(`${nicId}/${vmId}`, 0x01000193);
  return `qx${(a.toString(16).padStart(8, "0") + b.toString(16).padStart(8, "0")).slice(0, 13)}`;
}

function fnv1a(text: string, seed: number): number {
  let h = seed >>> 0;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}
