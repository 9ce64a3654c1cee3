import { fromJsonString, toJsonString } from "@bufbuild/protobuf";
import { mkdir, readFile, readdir, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { QuantixError } from "@quantix/core";
import { VmConfigSchema, type VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { VM_ID_PATTERN } from "../../vm-id.js";
import type { PciPlacement } from "@quantix/core";
import type { DiskSource } from "./qemu-args.js";

/**
 * One VM's state directory, `<stateDir>/vms/<vmId>/`: the QMP and console sockets, the
 * pid file, QEMU's log, the cloud-init seed, the saved memory of a suspended VM, and
 * `vm.json` (config, detected disk formats and the last state the agent knew), which
 * lets a restarted agent re-adopt or report the VM.
 */


/** What the agent keeps on disk about a VM. */
export interface VmRecord {
  readonly config: VmConfig;
  /** Formats detected before the guest first ran; undefined until then. */
  disks: DiskSource[] | undefined;
  /**
   * The last state the agent set or saw: "running" means it should be up; "suspended"
   * means no QEMU runs and `VmPaths.stateFile` holds the guest's saved memory.
   */
  state: "created" | "running" | "shutdown" | "crashed" | "suspended";
  crashReason: string | undefined;
  startedAtMs: number | undefined;
  /**
   * The ids of config.storage when QEMU last started, in order: those disks carry
   * positional names in that QEMU (disk<i>), disks hot-plugged since id-derived ones
   * (qemu-disk-hotplug.ts). Undefined before the first start.
   */
  launchedDiskIds?: string[] | undefined;
  /** The ids of config.network when QEMU last started, in order: positional names (net<i>, nic<i>) there, id-derived for NICs hot-plugged since (qemu-nic-hotplug.ts). */
  launchedNicIds?: string[] | undefined;
  /**
   * Where the VM's disks, cloud-init seed and NICs sit on pci.0 (qemu-pci-layout.ts): set
   * when QEMU starts (each start keeps the slots recorded here), changed by hot-plug and
   * unplug, and given by a migration's source on an incoming VM. Undefined before the
   * first start (and on records of agents from before explicit addresses).
   */
  pciSlots?: PciPlacement[] | undefined;
  /**
   * Disk files an incoming migration created here and the source is still filling: they
   * are removed with the VM until the migration completed (then the list is emptied and
   * the disks are the VM's, which deleting it never removes).
   */
  incomingCopies?: string[] | undefined;
}

/** The files of one VM. */
export interface VmPaths {
  readonly dir: string;
  readonly qmpSocket: string;
  readonly consoleSocket: string;
  readonly pidFile: string;
  readonly logFile: string;
  readonly recordFile: string;
  /** The cloud-init NoCloud seed (ISO 9660, label "cidata"), when the config has cloud_init. */
  readonly seedFile: string;
  /** The saved memory and device state of a suspended VM (QEMU's migration stream). */
  readonly stateFile: string;
  /** The unix socket QEMU sends that stream to while suspending. */
  readonly suspendSocket: string;
}

/** The paths of VM `vmId` under `stateDir`; INVALID_ARGUMENT for an id outside the pattern. */
export function vmPaths(stateDir: string, vmId: string): VmPaths {
  if (!VM_ID_PATTERN.test(vmId)) throw new QuantixError("invalid_argument", `invalid VM id: must match ${VM_ID_PATTERN.source}`, [{ field: "vm_id", reason: "INVALID_FORMAT", description: `must match ${VM_ID_PATTERN.source}` }]);
  const dir = path.join(stateDir, "vms", vmId);
  return {
    dir,
    qmpSocket: path.join(dir, "qmp.sock"),
    consoleSocket: path.join(dir, "console.sock"),
    pidFile: path.join(dir, "qemu.pid"),
    logFile: path.join(dir, "qemu.log"),
    recordFile: path.join(dir, "vm.json"),
    seedFile: path.join(dir, "cidata.iso"),
    stateFile: path.join(dir, "suspend.state"),
    suspendSocket: path.join(dir, "suspend.sock"),
  };
}

/** Ids of every VM directory under `stateDir` whose name fits the pattern. */
export async function listVmDirs(stateDir: string): Promise<string[]> {
  const entries = await readdir(path.join(stateDir, "vms"), { withFileTypes: true }).catch(() => []);
  return entries.filter((e) => e.isDirectory() && VM_ID_PATTERN.test(e.name)).map((e) => e.name).sort();
}

/** Writes the record atomically (temp file + rename), creating the directory if needed. */
export async function saveRecord(paths: VmPaths, record: VmRecord): Promise<void> {
  await mkdir(paths.dir, { recursive: true, mode: 0o700 });
  const json = JSON.stringify({
    config: JSON.parse(toJsonString(VmConfigSchema, record.config)) as unknown,
    disks: record.disks,
    state: record.state,
    crashReason: record.crashReason,
    startedAtMs: record.startedAtMs,
    launchedDiskIds: record.launchedDiskIds,
    launchedNicIds: record.launchedNicIds,
    pciSlots: record.pciSlots,
    incomingCopies: record.incomingCopies?.length ? record.incomingCopies : undefined,
  });
  const tmp = `${paths.recordFile}.tmp`;
  await writeFile(tmp, json, { mode: 0o600 });
  await rename(tmp, paths.recordFile);
}

/** Reads the record; undefined when absent or unreadable (a half-created directory). */
export async function loadRecord(paths: VmPaths): Promise<VmRecord | undefined> {
  try {
    const raw = JSON.parse(await readFile(paths.recordFile, "utf8")) as Record<string, unknown>;
    const state = raw["state"];
    return {
      config: fromJsonString(VmConfigSchema, JSON.stringify(raw["config"] ?? {})),
      disks: Array.isArray(raw["disks"]) ? (raw["disks"] as DiskSource[]) : undefined,
      state: state === "running" || state === "shutdown" || state === "crashed" || state === "suspended" ? state : "created",
      crashReason: typeof raw["crashReason"] === "string" ? raw["crashReason"] : undefined,
      startedAtMs: typeof raw["startedAtMs"] === "number" ? raw["startedAtMs"] : undefined,
      launchedDiskIds: Array.isArray(raw["launchedDiskIds"]) ? (raw["launchedDiskIds"] as unknown[]).filter((x): x is string => typeof x === "string") : undefined,
      launchedNicIds: Array.isArray(raw["launchedNicIds"]) ? (raw["launchedNicIds"] as unknown[]).filter((x): x is string => typeof x === "string") : undefined,
      ...(Array.isArray(raw["pciSlots"]) ? { pciSlots: (raw["pciSlots"] as unknown[]).filter(isPlacement) } : {}),
      ...(Array.isArray(raw["incomingCopies"]) ? { incomingCopies: (raw["incomingCopies"] as unknown[]).filter((p): p is string => typeof p === "string") } : {}),
    };
  } catch {
    return undefined;
  }
}

function isPlacement(x: unknown): x is PciPlacement {
  const p = x as Partial<PciPlacement> | null;
  return typeof p === "object" && p !== null && (p.kind === "disk" || p.kind === "nic" || p.kind === "cloud-init-seed") && typeof p.id === "string" && Number.isInteger(p.slot);
}

/** Removes the sockets and pid file a previous QEMU left, before starting a new one. */
export async function clearRuntimeFiles(paths: VmPaths): Promise<void> {
  await Promise.all([paths.qmpSocket, paths.consoleSocket, paths.pidFile].map((f) => rm(f, { force: true })));
}

/** Removes the whole VM directory. */
export async function removeVmDir(paths: VmPaths): Promise<void> {
  await rm(paths.dir, { recursive: true, force: true });
}
