import { QuantixError, invalidArgument, type FieldViolation } from "@quantix/core";
import {
  ConsoleOutput,
  ConsoleType,
  NetworkInterfaceType,
  StorageInterfaceType,
  type VmConfig,
} from "@quantix/api/gen/vmm/v1/vm_pb.js";
import type { PciPlacement } from "@quantix/core";
import type { DiskFormat } from "./disk-format.js";
import { assignPciSlots, pciAddr, pciDevices } from "./qemu-pci-layout.js";

/**
 * Builds a QEMU command line from a VmConfig. Injection-proof by construction: disks and
 * NICs use QEMU's JSON syntax for -blockdev/-device/-netdev, so a path containing "," or
 * "=" is a plain string value; paths that QEMU parses as key=value options (the sockets
 * in the VM's state directory) have their commas doubled, QEMU's escape; -kernel,
 * -initrd and -append take their value verbatim. Every host path is checked to be
 * absolute and free of control characters first.
 */

/** How a disk of the config is opened; parallel to `config.storage`. */
export interface DiskSource {
  readonly format: DiskFormat;
  /** A block device (host_device driver) rather than a regular file. */
  readonly blockDevice: boolean;
}

/**
 * The descriptors QEMU inherits for the config's host files (host-files.ts), as numbered
 * in QEMU's process. With them QEMU opens nothing by the config's names: a disk is an fd
 * set (`-add-fd`, then `/dev/fdset/N`), and -kernel and -initrd, which take only a
 * path, name `/proc/self/fd/N`, which in QEMU's process is the inherited file itself.
 */
export interface QemuHostFds {
  readonly kernel?: number | undefined;
  readonly initrd?: number | undefined;
  /** Parallel to config.storage. */
  readonly disks: readonly number[];
  /** Parallel to config.storage: each disk's backing layers' descriptors, nearest first. */
  readonly backing?: readonly (readonly number[])[];
}

/** A read-only layer under a qcow2 disk (a linked clone's backing volume), nearest first; host-files.ts checked it. */
export interface BackingSource {
  readonly format: DiskFormat;
  readonly blockDevice: boolean;
  readonly path: string;
}

/** Everything {@link buildQemuArgs} needs besides the config. */
export interface QemuLaunchSpec {
  readonly vmId: string;
  readonly config: VmConfig;
  readonly kvm: boolean;
  readonly qmpSocket: string;
  readonly consoleSocket: string;
  readonly pidFile: string;
  readonly disks: readonly DiskSource[];
  /** The inherited descriptors of the host files; without them QEMU opens the config's paths (a command line built only to be checked). */
  readonly fds?: QemuHostFds;
  /** Parallel to `disks`: each disk's backing chain (empty or absent: a disk without backing file, opened with backing: null). */
  readonly backing?: readonly (readonly BackingSource[])[];
  /** The VM's cloud-init seed in its state directory (a path the agent built), attached read-only; absent: none. */
  readonly seedFile?: string | undefined;
  /**
   * Where the disks, the seed and the NICs sit on pci.0 (qemu-pci-layout.ts): each device
   * named here keeps its slot, the others take the lowest free ones in order. Absent: the
   * default layout (disks, seed, NICs from slot 2 on).
   */
  readonly pciSlots?: readonly PciPlacement[] | undefined;
  /**
   * For an incoming migration: no -S, so QEMU starts the guest by itself once the state
   * has arrived. (A "cont" while QEMU waits for it would activate, and lock, the disks
   * the source still runs on: a disk on shared storage then fails with "Failed to get
   * write lock".)
   */
  readonly autostart?: boolean | undefined;
}

/**
 * The read-only block nodes of a disk's backing chain (nearest layer first in `chain`),
 * in the order they must be created (base first): `<format node>-b<j>` over
 * `<format node>-b<j>-file`, each naming the layer below as its backing, the base none.
 * `top` is what the disk's own format node names as its backing (null: no chain). Used
 * for the command line at boot and for blockdev-add when a disk is hot-plugged.
 */
export function backingLayerNodes(formatNode: string, chain: readonly BackingSource[]): { nodes: Record<string, unknown>[]; top: string | null } {
  const nodes: Record<string, unknown>[] = [];
  for (let j = chain.length - 1; j >= 0; j--) {
    const layer = chain[j]!;
    const node = `${formatNode}-b${j}`;
    nodes.push({ driver: layer.blockDevice ? "host_device" : "file", "node-name": `${node}-file`, filename: layer.path, "read-only": true });
    const below = j === chain.length - 1 ? null : `${formatNode}-b${j + 1}`;
    nodes.push({ driver: layer.format, "node-name": node, file: `${node}-file`, "read-only": true, ...(layer.format === "qcow2" ? { backing: below } : {}) });
  }
  return { nodes, top: chain.length > 0 ? `${formatNode}-b0` : null };
}

// C0 controls, DEL and C1 controls: never valid in a host path or kernel command line.
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
const MAC = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;
const TAP = /^[a-zA-Z0-9_.:-]{1,15}$/;

/** A violation if `value` is not an absolute host path without control characters. */
export function hostPathViolation(field: string, value: string): FieldViolation | undefined {
  if (CONTROL.test(value)) return { field, reason: "INVALID_FORMAT", description: "must not contain newlines or other control characters" };
  if (!value.startsWith("/")) return { field, reason: "INVALID_FORMAT", description: "must be an absolute path" };
  if (value.length > 4096) return { field, reason: "OUT_OF_RANGE", description: "must be at most 4096 characters" };
  return undefined;
}

/** Doubles commas: QEMU's escape inside a key=value option string. */
export function escapeOptionValue(value: string): string {
  return value.replaceAll(",", ",,");
}

/** The -chardev option of the QMP socket; recover() looks for it in /proc/<pid>/cmdline. */
export function qmpChardevOption(qmpSocket: string): string {
  return `socket,id=qmp0,path=${escapeOptionValue(qmpSocket)},server=on,wait=off`;
}

/** The full argument list (without the binary) for one VM's QEMU process. */
export function buildQemuArgs(spec: QemuLaunchSpec): string[] {
  const { config } = spec;
  const violations: FieldViolation[] = [];
  const check = (field: string, value: string): void => {
    const v = hostPathViolation(field, value);
    if (v) violations.push(v);
  };
  for (const [field, p] of [["qmp_socket", spec.qmpSocket], ["console_socket", spec.consoleSocket], ["pid_file", spec.pidFile]] as const) check(field, p);
  if (spec.seedFile !== undefined) check("seed_file", spec.seedFile);
  const boot = config.boot;
  if (boot?.kernelPath) check("config.boot.kernel_path", boot.kernelPath);
  if (boot?.initrdPath) check("config.boot.initrd_path", boot.initrdPath);
  if (boot?.kernelArgs && CONTROL.test(boot.kernelArgs)) violations.push({ field: "config.boot.kernel_args", reason: "INVALID_FORMAT", description: "must not contain newlines or other control characters" });
  config.storage.forEach((d, i) => check(`config.storage[${i}].path`, d.path));
  config.network.forEach((n, i) => {
    if (!MAC.test(n.macAddress)) violations.push({ field: `config.network[${i}].mac_address`, reason: "INVALID_FORMAT", description: "must be six colon-separated hex bytes" });
    if (!TAP.test(n.tapDevice)) violations.push({ field: `config.network[${i}].tap_device`, reason: "INVALID_FORMAT", description: "must be 1-15 characters of letters, digits, '_', '.', ':' or '-'" });
  });
  if (violations.length > 0) throw invalidArgument(violations);

  const vcpus = config.cpu?.vcpuCount ?? 1;
  const topo = config.cpu?.topology;
  const smp = [`cpus=${vcpus}`, `maxcpus=${config.cpu?.maxVcpuCount || vcpus}`];
  if (topo) smp.push(`sockets=${topo.sockets}`, `cores=${topo.coresPerSocket}`, `threads=${topo.threadsPerCore}`);
  const memMiB = (config.memory?.sizeBytes ?? 128n * 1048576n) / 1048576n;

  const args = [
    "-name", `guest=${spec.vmId}`,
    "-machine", "pc",
    "-accel", spec.kvm ? "kvm" : "tcg",
    ...(spec.kvm ? ["-cpu", "host"] : []),
    "-smp", smp.join(","),
    "-m", `${memMiB}M`,
    "-nodefaults", "-no-user-config", "-display", "none",
    // Started paused: the agent attaches QMP and the console first, then sends "cont".
    ...(spec.autostart ? [] : ["-S"]),
    "-pidfile", spec.pidFile,
    "-chardev", qmpChardevOption(spec.qmpSocket),
    "-mon", "chardev=qmp0,mode=control",
    ...consoleArgs(spec),
  ];
  const fds = spec.fds;
  const inherited = (fd: number | undefined, path: string) => (fds ? `/proc/self/fd/${fdNumber(fd)}` : path);
  if (boot?.kernelPath) {
    args.push("-kernel", inherited(fds?.kernel, boot.kernelPath));
    if (boot.initrdPath) args.push("-initrd", inherited(fds?.initrd, boot.initrdPath));
    if (boot.kernelArgs) args.push("-append", boot.kernelArgs);
  }
  // With -kernel, QEMU's linuxboot option ROM holds bootindex 0 and a disk asking for it
  // stops QEMU ("The bootindex 0 has already been used"); the kernel boots anyway, so the
  // root disk gets a boot index only when the firmware boots from disk.
  const rootBootIndex = boot?.kernelPath ? {} : { bootindex: 0 };
  // Every PCI device at an explicit address, so that a migration's target (or a restore)
  // can start with the layout this QEMU has, hot-plugged disks included.
  const layout = assignPciSlots(pciDevices(config, spec.seedFile !== undefined), spec.pciSlots ?? []);
  config.storage.forEach((disk, i) => {
    const source = spec.disks[i];
    if (!source) throw new QuantixError("internal", `no detected format for disk ${i}`);
    const ro = disk.readOnly;
    let filename = disk.path;
    if (fds) {
      // Fd set i+1 holds the disk's one descriptor, opened read-only or read-write as the disk is.
      args.push("-add-fd", `fd=${fdNumber(fds.disks[i])},set=${i + 1}`);
      filename = `/dev/fdset/${i + 1}`;
    }
    args.push("-blockdev", JSON.stringify({ driver: source.blockDevice ? "host_device" : "file", "node-name": `disk${i}-file`, filename, "read-only": ro }));
    // QEMU never opens a backing file by the name an image's header gives: each layer the
    // agent opened and checked (host-files.ts) is its own read-only node, base first, and
    // the layer above names it; the base, and a disk without one, get backing: null.
    // Fd sets above 1000 hold backing layers: 1000 + 100 * disk + layer (added base first, as the nodes are).
    const chain = spec.backing?.[i] ?? [];
    const set = (j: number) => 1000 + 100 * i + j;
    if (fds) for (let j = chain.length - 1; j >= 0; j--) args.push("-add-fd", `fd=${fdNumber(fds.backing?.[i]?.[j])},set=${set(j)}`);
    const layers = backingLayerNodes(`disk${i}`, fds ? chain.map((layer, j) => ({ ...layer, path: `/dev/fdset/${set(j)}` })) : chain);
    for (const node of layers.nodes) args.push("-blockdev", JSON.stringify(node));
    const backing = source.format === "qcow2" ? { backing: layers.top } : {};
    args.push("-blockdev", JSON.stringify({ driver: source.format, "node-name": `disk${i}`, file: `disk${i}-file`, "read-only": ro, ...backing }));
    args.push("-device", JSON.stringify({ driver: diskDriver(disk.interfaceType, i), id: `disk${i}-dev`, drive: `disk${i}`, ...(disk.isRootDevice ? rootBootIndex : {}), ...pciAddr(layout, { kind: "disk", id: disk.id }) }));
  });
  if (spec.seedFile !== undefined) {
    // The NoCloud seed: a read-only virtio disk after the config's disks; cloud-init finds it by its label.
    args.push("-blockdev", JSON.stringify({ driver: "file", "node-name": "cidata-file", filename: spec.seedFile, "read-only": true }));
    args.push("-blockdev", JSON.stringify({ driver: "raw", "node-name": "cidata", file: "cidata-file", "read-only": true }));
    args.push("-device", JSON.stringify({ driver: "virtio-blk-pci", id: "cidata-dev", drive: "cidata", ...pciAddr(layout, { kind: "cloud-init-seed", id: "" }) }));
  }
  config.network.forEach((nic, i) => {
    args.push("-netdev", JSON.stringify({ type: "tap", id: `net${i}`, ifname: nic.tapDevice, script: "no", downscript: "no" }));
    args.push("-device", JSON.stringify({ driver: nicDriver(nic.interfaceType, i), id: `nic${i}`, netdev: `net${i}`, mac: nic.macAddress.toLowerCase(), ...pciAddr(layout, { kind: "nic", id: nic.id }) }));
  });
  return args;
}

/** An inherited descriptor's number, checked: a missing one is a bug, never a path QEMU would open instead. */
function fdNumber(fd: number | undefined): number {
  if (fd === undefined || !Number.isInteger(fd) || fd < 3) throw new QuantixError("internal", `no inherited descriptor for a host file (got ${String(fd)})`);
  return fd;
}

function consoleArgs(spec: QemuLaunchSpec): string[] {
  const console = spec.config.console;
  if (console && !console.enabled) return [];
  switch (console?.consoleType ?? ConsoleType.UNSPECIFIED) {
    case ConsoleType.UNSPECIFIED:
    case ConsoleType.SERIAL:
      break;
    case ConsoleType.VIRTIO:
      throw new QuantixError("failed_precondition", "the QEMU backend lacks the capability \"virtio-console\"");
    default:
      throw new QuantixError("invalid_argument", "unknown console type");
  }
  const output = console?.output ?? ConsoleOutput.UNSPECIFIED;
  // Output NULL still gets a device, so the guest never blocks on a missing port.
  const chardev = output === ConsoleOutput.NULL
    ? "null,id=console0"
    : `socket,id=console0,path=${escapeOptionValue(spec.consoleSocket)},server=on,wait=off`;
  return ["-chardev", chardev, "-serial", "chardev:console0"];
}

function diskDriver(type: StorageInterfaceType, i: number): string {
  switch (type) {
    case StorageInterfaceType.UNSPECIFIED:
    case StorageInterfaceType.VIRTIO_BLK:
      return "virtio-blk-pci";
    case StorageInterfaceType.VIRTIO_SCSI:
      return missing("virtio-scsi", `config.storage[${i}]`);
    case StorageInterfaceType.NVME:
      return missing("nvme", `config.storage[${i}]`);
    case StorageInterfaceType.SATA:
      return missing("sata", `config.storage[${i}]`);
    default: {
      const never: never = type;
      throw new QuantixError("invalid_argument", `config.storage[${i}]: unknown interface type ${String(never)}`);
    }
  }
}

/** The QEMU device driver of a NIC model (FAILED_PRECONDITION for a model the backend lacks; `i` names config.network[i]). */
export function nicDriver(type: NetworkInterfaceType, i: number): string {
  switch (type) {
    case NetworkInterfaceType.UNSPECIFIED:
    case NetworkInterfaceType.VIRTIO_NET:
      return "virtio-net-pci";
    case NetworkInterfaceType.E1000:
      return missing("e1000", `config.network[${i}]`);
    case NetworkInterfaceType.RTL8139:
      return missing("rtl8139", `config.network[${i}]`);
    default: {
      const never: never = type;
      throw new QuantixError("invalid_argument", `config.network[${i}]: unknown interface type ${String(never)}`);
    }
  }
}

function missing(capability: string, field: string): never {
  throw new QuantixError("failed_precondition", `${field} needs the capability "${capability}", which the QEMU backend does not declare`);
}
