import { constants } from "node:fs";
import { access, readFile } from "node:fs/promises";
import { delimiter, join } from "node:path";

/** Every pool type, as storage.proto names them without the prefix. */
export type PoolTypeName = "DIR" | "SHARED_DIR" | "NFS" | "CEPH_RBD" | "LVM" | "ISCSI";

/** Whether this host supports one pool type, and why. */
export interface PoolTypeSupport {
  readonly type: PoolTypeName;
  readonly available: boolean;
  readonly reason: string;
  /** The agent manages pools of this type today (not only probes it). */
  readonly managed: boolean;
}

/** Where the probe looks: injectable so a test can describe a host. */
export interface ProbeEnv {
  /** Directories searched for binaries (default: PATH plus /usr/sbin and /sbin). */
  readonly binDirs?: readonly string[];
  /** The kernel's file system list (default /proc/filesystems). */
  readonly procFilesystems?: string;
  /** The agent's shared directories (VMCP_SHARED_DIRS). */
  readonly sharedDirs: readonly string[];
  /** `qemu-img --version`, undefined when qemu-img is missing. */
  readonly qemuImgVersion: string | undefined;
}

/**
 * Probes which pool types this host could serve, from binaries and the kernel. DIR and
 * SHARED_DIR are what the agent manages; NFS, CEPH_RBD, LVM and ISCSI are reported so
 * the control plane can refuse a pool no node supports with the reason, and are not
 * managed yet (EnsurePool refuses them).
 */
export async function probePoolTypes(env: ProbeEnv): Promise<PoolTypeSupport[]> {
  const dirs = env.binDirs ?? [...(process.env["PATH"] ?? "").split(delimiter).filter((d) => d !== ""), "/usr/sbin", "/sbin"];
  const has = async (bin: string) => {
    for (const d of dirs) if (await access(join(d, bin), constants.X_OK).then(() => true, () => false)) return true;
    return false;
  };
  const fsList = await readFile(env.procFilesystems ?? "/proc/filesystems", "utf8").catch(() => "");
  const kernelFs = (name: string) => fsList.split("\n").some((l) => l.trim().split(/\s+/).pop() === name);
  const img = env.qemuImgVersion;
  const noImg = "qemu-img is not installed (Debian: qemu-utils)";
  const out: PoolTypeSupport[] = [
    { type: "DIR", available: img !== undefined, reason: img ?? noImg, managed: true },
    {
      type: "SHARED_DIR",
      available: img !== undefined && env.sharedDirs.length > 0,
      reason: img === undefined ? noImg : env.sharedDirs.length > 0 ? `below the shared directories ${env.sharedDirs.join(", ")}` : "no shared directory is configured (VMCP_SHARED_DIRS)",
      managed: true,
    },
  ];
  const probe = async (type: PoolTypeName, bin: string, pkg: string, kernel?: string): Promise<PoolTypeSupport> => {
    if (!(await has(bin))) return { type, available: false, reason: `${bin} not found (Debian: ${pkg}); the agent does not manage ${type} pools yet`, managed: false };
    if (kernel !== undefined && !kernelFs(kernel)) return { type, available: false, reason: `${bin} is installed but the kernel lists no ${kernel} file system in /proc/filesystems; the agent does not manage ${type} pools yet`, managed: false };
    return { type, available: true, reason: `${bin} found; the agent does not manage ${type} pools yet`, managed: false };
  };
  out.push(await probe("NFS", "mount.nfs", "nfs-common", "nfs"));
  out.push(await probe("CEPH_RBD", "rbd", "ceph-common"));
  out.push(await probe("LVM", "lvm", "lvm2"));
  out.push(await probe("ISCSI", "iscsiadm", "open-iscsi"));
  return out;
}

/** The control plane's name of each pool type (Quantixkvm.storage.v1.StoragePoolType), where it differs. */
const CONTROL_PLANE_NAME: Partial<Record<PoolTypeName, string>> = { DIR: "LOCAL_DIR" };

/**
 * The node capabilities that say which pools this host serves, as the control plane's
 * StoragePoolService looks for them (`storage-pool-<type>`, e.g. storage-pool-local-dir):
 * only types the agent both can and does manage; a probed-only type is not a promise.
 */
export function poolCapabilityNames(support: readonly PoolTypeSupport[]): string[] {
  return support.filter((s) => s.available && s.managed).map((s) => `storage-pool-${(CONTROL_PLANE_NAME[s.type] ?? s.type).toLowerCase().replace(/_/g, "-")}`);
}
