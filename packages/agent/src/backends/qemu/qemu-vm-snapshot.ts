import { notFound, QuantixError } from "@quantix/core";
import type { VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import type { VmSnapshotInfo } from "../../backend.js";
import type { QemuImg } from "../../storage/qemu-img.js";
import { detectDiskFormat, type DiskFormat } from "./disk-format.js";
import type { QmpClient } from "./qmp-client.js";

/**
 * Snapshots of a whole QEMU VM, consistent across its disks: internal qcow2 snapshots
 * tagged with the snapshot's id (a UUID, checked by the caller) in every writable disk.
 * With QEMU running they are QMP's: `snapshot-save` / `snapshot-load` / `snapshot-delete`
 * jobs (QEMU >= 6.0; memory and device state saved into the first disk, `vmstate`), or,
 * without memory, the guest paused for one `transaction` of
 * `blockdev-snapshot-internal-sync` over every disk. With QEMU not running, `qemu-img
 * snapshot` on each file. Read-only disks are left out (they do not change); raw disks
 * have no internal snapshots and are refused, naming the disk.
 */

/** One disk a VM snapshot covers. */
export interface SnapshotDisk {
  /** StorageDevice.id. */
  readonly id: string;
  /** The qcow2 format node's name on QEMU's command line (qemu-args.ts: `disk<i>`). */
  readonly node: string;
  readonly path: string;
}

/** How long one snapshot job may take before it is reported as failed (memory saves of large guests take a while). */
const JOB_TIMEOUT_MS = 600_000;
const POLL_MS = 50;

/**
 * The VM's writable disks, all qcow2 (FAILED_PRECONDITION naming a raw one), or only those
 * named by `only` (NOT_FOUND for a disk the VM lacks); `raw: "skip"` leaves raw disks out
 * instead (they hold no snapshots: for listing and deleting). `formats` are the formats detected
 * at first boot, when known; `nodeOf` names a disk's format node in the running QEMU
 * (hot-plugged disks are not positional), by default `disk<i>`.
 */
export async function snapshotDisks(vmId: string, config: VmConfig, formats: readonly { format: DiskFormat }[] | undefined, nodeOf: (diskId: string, index: number) => string = (_id, i) => `disk${i}`, only: readonly string[] = [], raw: "refuse" | "skip" = "refuse"): Promise<SnapshotDisk[]> {
  for (const id of only) {
    const d = config.storage.find((x) => x.id === id);
    if (!d) throw new QuantixError("not_found", `VM '${vmId}' has no disk '${id}'`);
    if (d.readOnly) throw new QuantixError("failed_precondition", `disk '${id}' of VM '${vmId}' is read-only: it has nothing to snapshot`);
  }
  const out: SnapshotDisk[] = [];
  for (const [i, d] of config.storage.entries()) {
    if (d.readOnly || (only.length > 0 && !only.includes(d.id))) continue;
    const format = formats?.[i]?.format ?? (await detectDiskFormat(d.path));
    if (format !== "qcow2" && raw === "skip") continue;
    if (format !== "qcow2") throw new QuantixError("failed_precondition", `disk '${d.id}' of VM '${vmId}' is ${format}: internal snapshots need every writable disk in qcow2 (convert it, or attach it read-only)`);
    out.push({ id: d.id, node: nodeOf(d.id, i), path: d.path });
  }
  if (out.length === 0) throw new QuantixError("failed_precondition", `VM '${vmId}' has no writable disk to snapshot`);
  return out;
}

/** The snapshots (UUID tags) the disks hold, oldest first, read from the images (`-U`: QEMU may hold them). */
export async function listVmSnapshots(img: QemuImg, disks: readonly SnapshotDisk[]): Promise<VmSnapshotInfo[]> {
  const byTag = new Map<string, { disks: string[]; vmState: bigint; createdAtMs: number }>();
  for (const d of disks) {
    for (const s of (await img.info(d.path, "qcow2")).snapshots ?? []) {
      if (!UUID.test(s.name)) continue;
      const e = byTag.get(s.name) ?? { disks: [], vmState: 0n, createdAtMs: s["date-sec"] * 1000 + Math.floor(s["date-nsec"] / 1e6) };
      e.disks.push(d.id);
      e.vmState += BigInt(s["vm-state-size"]);
      byTag.set(s.name, e);
    }
  }
  return [...byTag.entries()]
    .map(([id, e]) => ({ snapshotId: id, memoryIncluded: e.vmState > 0n, vmStateBytes: e.vmState, diskIds: e.disks, createdAtMs: e.createdAtMs, complete: e.disks.length === disks.length }))
    .sort((a, b) => a.createdAtMs - b.createdAtMs);
}

/** Takes the snapshot with QEMU running: a `snapshot-save` job with memory, else one transaction with the guest paused. */
export async function saveLive(qmp: QmpClient, disks: readonly SnapshotDisk[], tag: string, includeMemory: boolean, paused: boolean): Promise<void> {
  if (includeMemory) {
    await runJob(qmp, "snapshot-save", { tag, vmstate: disks[0]!.node, devices: disks.map((d) => d.node) });
    return;
  }
  // Paused, so that every disk captures the same instant; QEMU flushes each before its snapshot.
  if (!paused) await qmp.execute("stop");
  try {
    await qmp.execute("transaction", { actions: disks.map((d) => ({ type: "blockdev-snapshot-internal-sync", data: { device: d.node, name: tag } })) });
  } finally {
    if (!paused) await qmp.execute("cont");
  }
}

/** Loads a snapshot with memory into the running QEMU (`snapshot-load`); the guest then runs from the snapshot point. */
export async function loadLive(qmp: QmpClient, disks: readonly SnapshotDisk[], tag: string, vmstateDisk: string): Promise<void> {
  const vmstate = disks.find((d) => d.id === vmstateDisk) ?? disks[0]!;
  await runJob(qmp, "snapshot-load", { tag, vmstate: vmstate.node, devices: disks.map((d) => d.node) });
  const status = await qmp.execute<{ running: boolean }>("query-status");
  if (!status.running) await qmp.execute("cont");
}

/** Deletes the snapshot from the disks with QEMU running (`snapshot-delete`). */
export async function deleteLive(qmp: QmpClient, disks: readonly SnapshotDisk[], tag: string): Promise<void> {
  await runJob(qmp, "snapshot-delete", { tag, devices: disks.map((d) => d.node) });
}

/** Takes the snapshot offline on every disk; a failure removes what it had taken, so no disk keeps a partial snapshot. */
export async function saveOffline(img: QemuImg, disks: readonly SnapshotDisk[], tag: string): Promise<void> {
  const done: SnapshotDisk[] = [];
  try {
    for (const d of disks) {
      await img.snapshot(d.path, "create", tag);
      done.push(d);
    }
  } catch (err) {
    for (const d of done) await img.snapshot(d.path, "delete", tag).catch(() => {});
    throw err;
  }
}

/** Reverts (or deletes) the snapshot offline on every disk that holds it. */
export async function applyOffline(img: QemuImg, disks: readonly SnapshotDisk[], tag: string, op: "apply" | "delete", holding: readonly string[]): Promise<void> {
  for (const d of disks) if (holding.includes(d.id)) await img.snapshot(d.path, op, tag);
}

/** The snapshot among the disks', NOT_FOUND naming it when none holds it. */
export function findSnapshot(list: readonly VmSnapshotInfo[], tag: string): VmSnapshotInfo {
  const s = list.find((x) => x.snapshotId === tag);
  if (!s) throw notFound("VM snapshot", tag);
  return s;
}

/**
 * Starts a snapshot job and waits until it concludes (query-jobs), then dismisses it;
 * its error becomes ABORTED with QEMU's words. The job id derives from the tag (a UUID).
 */
async function runJob(qmp: QmpClient, command: string, args: Record<string, unknown>, timeoutMs = JOB_TIMEOUT_MS): Promise<void> {
  const id = `${command}-${String(args["tag"])}`;
  await qmp.execute(command, { "job-id": id, ...args });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const jobs = await qmp.execute<{ id: string; status: string; error?: string }[]>("query-jobs");
    const job = jobs.find((j) => j.id === id);
    if (!job) throw new QuantixError("internal", `QEMU lost the ${command} job`);
    if (job.status === "concluded" || job.status === "null") {
      await qmp.execute("job-dismiss", { id }).catch(() => {});
      if (job.error) throw new QuantixError("aborted", `${command} failed: ${job.error}`);
      return;
    }
    if (Date.now() > deadline) throw new QuantixError("deadline_exceeded", `${command} took longer than ${Math.round(timeoutMs / 1000)} s`);
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
