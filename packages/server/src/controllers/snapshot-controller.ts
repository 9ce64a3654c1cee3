import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { PowerState, VmStatus_State, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { SnapshotState, type Snapshot } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_pb.js";
import { allOf, QuantixError, SNAPSHOT_CONTROLLER, SNAPSHOT_FINALIZER, SNAPSHOT_KIND, SNAPSHOT_TAKING_PERCENT, STORAGE_POOL_KIND, VM_KIND, VOLUME_KIND, type Clock, type HypervisorVmSnapshots, type Kind, type Resource, type Store, type Timers } from "@quantix/core";
import type { Logger } from "@quantix/rpc";
import { Controller, watching } from "../runtime/controller.js";
import type { SnapshotRef } from "../storage/node-storage.js";
import type { NodeStorages } from "../storage/node-storages.js";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";
import { VM_STOPPED } from "../services/snapshot-service.js";
import { vmsNamingVolume } from "../services/volume-service.js";
import { setCondition } from "./conditions.js";
import { reasonOf, transient, volumeNode, writeStatusOf } from "./storage-steps.js";

/** How soon a step that failed for a passing reason (a node away) is tried again. */
const RETRY_MS = 15_000;
/** Keys that name a deleted volume or VM, whose snapshots go with it. */
const GONE_KEYS = [
  { prefix: "volume/", kind: VOLUME_KIND, field: "volume_id" },
  { prefix: "vm/", kind: VM_KIND, field: "vm_id" },
] as const;

/** The steps on the node that holds a snapshot. */
interface Site {
  take(): Promise<{ readonly takenAtMs: number; readonly vmStateBytes: bigint; readonly memoryIncluded: boolean }>;
  revert(): Promise<void>;
  remove(): Promise<void>;
}

type S = Snapshot & Resource;

/**
 * Makes each volume snapshot's node match it, level-based, one target volume at a time:
 * - CREATING: records its parent (the snapshot of the volume that is current), takes the
 *   snapshot on the volume's node (idempotent: tagged with the snapshot's id), makes it
 *   the volume's current snapshot, AVAILABLE;
 * - generation above status.observed_generation (RevertToSnapshot): REVERTING, the volume
 *   rolled back on its node, the snapshot current again, AVAILABLE;
 * - being deleted: DELETING, removed from the node, its children re-parented to its
 *   parent (which becomes current if it was), the finalizer dropped;
 * - its volume gone: deleted too (the snapshot lived in the volume's file).
 * A failure that may pass (node unavailable) keeps the state with Ready=False and is
 * tried again; any other is final: a create goes ERROR, a revert leaves the snapshot
 * AVAILABLE with Reverted=False; each with its reason (`CreateFailedPrecondition`, ...).
 */
export function snapshotController(deps: { store: Store; storages: NodeStorages; drivers: NodeDrivers; clock: Clock; timers?: Timers; log: Logger; resyncMs?: number }): Controller {
  const snaps = deps.store.of(SNAPSHOT_KIND);
  const writeStatus = (id: string, change: (s: S) => void) => writeStatusOf(deps.store, SNAPSHOT_KIND, SNAPSHOT_CONTROLLER, id, change);
  const chains = new Map<string, Promise<unknown>>();

  /** Runs `fn` after every earlier step on the same volume: parents and "current" are decided one at a time. */
  function serial<R>(key: string, fn: () => Promise<R>): Promise<R> {
    const next = (chains.get(key) ?? Promise.resolve()).then(fn, fn);
    const tail = next.catch(() => undefined);
    chains.set(key, tail);
    void tail.then(() => chains.get(key) === tail && chains.delete(key));
    return next;
  }

  /** The other snapshots of the same volume or VM. */
  async function siblings(s: S): Promise<S[]> {
    const out: S[] = [];
    const where = s.spec?.target.case === "vmId" ? { vm_id: targetOf(s) } : { volume_id: targetOf(s) };
    for await (const x of allOf(snaps, { where })) if (x.id !== s.id) out.push(x);
    return out;
  }

  /** Makes `s` its volume's or VM's only current snapshot (the others first, so that a crash leaves none rather than two). */
  async function makeCurrent(s: S): Promise<void> {
    for (const x of await siblings(s)) if (x.status?.current) await writeStatus(x.id, (cur) => void (cur.status!.current = false));
  }

  /**
   * Where the snapshot lives and the steps there: the volume's node storage, or the VM's
   * node hypervisor; undefined when its volume or VM is gone.
   */
  async function locate(s: S): Promise<Site | undefined> {
    const t = s.spec?.target;
    if (t?.case === "vmId") {
      const vm = await deps.store.of(VM_KIND).get(t.value);
      if (!vm) return undefined;
      const snaps = vmSnapshotsOf(vm);
      const disks = snapshotDiskIds(vm, s.spec?.excludedDiskIds ?? []);
      return {
        take: async () => snaps.take(vm.id, s.id, s.spec?.includeMemory ?? false, disks),
        revert: async () => void (await snaps.revert(vm.id, s.id, disks)),
        remove: () => snaps.delete(vm.id, s.id),
      };
    }
    const volume = await deps.store.of(VOLUME_KIND).get(targetOf(s));
    if (!volume) return undefined;
    // A volume a running VM holds open is snapshotted (and its snapshot deleted) through that VM's QEMU, on that disk alone.
    const holder = await liveHolder(volume);
    if (holder) {
      const snaps = vmSnapshotsOf(holder.vm);
      return {
        take: async () => ({ ...(await snaps.take(holder.vm.id, s.id, false, [holder.diskId])), memoryIncluded: false }),
        revert: async () => {
          throw new QuantixError("failed_precondition", `volume '${volume.id}' is in use by running VM '${holder.vm.id}': stop the VM or detach the volume to revert it`);
        },
        remove: () => snaps.delete(holder.vm.id, s.id),
      };
    }
    const pool = await deps.store.of(STORAGE_POOL_KIND).get(volume.spec?.poolId ?? "");
    if (!pool) throw new QuantixError("failed_precondition", `storage pool '${volume.spec?.poolId}' of volume '${volume.id}' not found`);
    const storage = deps.storages.of(await volumeNode(deps.store, deps.storages, volume.status?.nodeId ?? "", pool));
    const ref: SnapshotRef = { poolId: pool.id, volumeId: volume.id, snapshotId: s.id };
    return {
      take: async () => ({ ...(await storage.createSnapshot(ref)), memoryIncluded: false, diskIds: [] }),
      revert: async () => void (await storage.revertSnapshot(ref)),
      remove: () => storage.deleteSnapshot(ref),
    };
  }

  /**
   * RevertToSnapshot's start_after_revert: asks for the VM to run (desired power state
   * RUNNING, a new generation), as StartVM would; the VM controller starts it. A VM that
   * already runs (a snapshot with memory) or is asked to is left as it is.
   */
  async function startVm(vmId: string): Promise<void> {
    await deps.store
      .of(VM_KIND)
      .update(
        vmId,
        (vm) => {
          if (vm.deletionRequestedAt || !vm.spec || vm.spec.desiredPowerState === PowerState.RUNNING) return undefined;
          vm.spec.desiredPowerState = PowerState.RUNNING;
          vm.generation += 1n;
          return vm;
        },
        { actor: SNAPSHOT_CONTROLLER },
      )
      .catch((err: unknown) => {
        if (!(err instanceof QuantixError && err.code === "not_found")) throw err;
      });
  }

  /** The VM snapshot steps of the VM's node; UNAVAILABLE while it is on no connected node. */
  function vmSnapshotsOf(vm: VirtualMachine & Resource): HypervisorVmSnapshots {
    const nodeId = vm.status?.nodeId ?? "";
    const driver = nodeId === "" ? undefined : deps.drivers.get(nodeId);
    if (!driver) throw new QuantixError("unavailable", nodeId === "" ? `VM '${vm.id}' is on no node` : `node '${nodeId}' of VM '${vm.id}' is not connected`);
    const snaps = driver.vmSnapshots;
    if (!snaps || !driver.capabilities.has("vm-snapshot")) throw new QuantixError("failed_precondition", `node '${nodeId}''s ${driver.kind} hypervisor lacks the capability "vm-snapshot"`);
    return snaps;
  }

  /**
   * The VM whose QEMU holds the volume open (RUNNING or PAUSED), with the disk it is there;
   * undefined when no VM runs with it. A VM between states is UNAVAILABLE: tried again.
   */
  async function liveHolder(volume: Resource & { projectId: string }): Promise<{ vm: VirtualMachine & Resource; diskId: string } | undefined> {
    for (const vm of await vmsNamingVolume(deps.store, volume)) {
      const state = vm.status?.state ?? VmStatus_State.STATE_UNSPECIFIED;
      if (OFFLINE.has(state)) continue;
      if (state !== VmStatus_State.RUNNING && state !== VmStatus_State.PAUSED) throw new QuantixError("unavailable", `VM '${vm.id}', which uses volume '${volume.id}', is ${VmStatus_State[state]}: tried again once it runs or stops`);
      const disk = vm.spec?.disks.find((d) => d.volumeId === volume.id);
      if (disk) return { vm, diskId: disk.id };
    }
    return undefined;
  }

  async function fail(s: S, step: "Create" | "Revert" | "Delete", err: unknown): Promise<{ requeueAfterMs: number } | void> {
    const { reason, message } = reasonOf(step, err, "snapshot");
    if (!(err instanceof QuantixError)) deps.log.log("warn", "a snapshot step failed on its node", { snapshot_id: s.id, step, error: String(err) });
    const again = transient(err) || step === "Delete";
    const nowMs = deps.clock.now();
    await writeStatus(s.id, (cur) => {
      const st = cur.status!;
      st.errorMessage = message;
      if (step === "Revert") {
        st.conditions = setCondition(st.conditions, { type: "Reverted", status: false, reason, message, generation: cur.generation }, nowMs);
        if (!again) {
          st.state = SnapshotState.AVAILABLE;
          st.observedGeneration = cur.generation;
        }
        return;
      }
      st.conditions = setCondition(st.conditions, { type: "Ready", status: false, reason, message, generation: cur.generation }, nowMs);
      if (!again) st.state = SnapshotState.ERROR;
    });
    return again ? { requeueAfterMs: RETRY_MS } : undefined;
  }

  async function remove(s: S): Promise<{ requeueAfterMs: number } | void> {
    if (!s.finalizers.includes(SNAPSHOT_FINALIZER)) return;
    if (s.status?.state !== SnapshotState.DELETING) await writeStatus(s.id, (cur) => void (cur.status!.state = SnapshotState.DELETING));
    try {
      await (await locate(s))?.remove();
    } catch (err) {
      if (!(err instanceof QuantixError && err.code === "not_found")) return fail(s, "Delete", err);
    }
    const parent = s.status?.parentId ?? "";
    for (const x of await siblings(s)) {
      if (x.status?.parentId === s.id) await writeStatus(x.id, (cur) => void (cur.status!.parentId = parent));
      if (x.id === parent && s.status?.current) await writeStatus(x.id, (cur) => void (cur.status!.current = true));
    }
    await snaps
      .update(s.id, (cur) => (cur.finalizers.includes(SNAPSHOT_FINALIZER) ? Object.assign(cur, { finalizers: cur.finalizers.filter((f) => f !== SNAPSHOT_FINALIZER) }) : undefined), { actor: SNAPSHOT_CONTROLLER })
      .catch((err: unknown) => {
        if (!(err instanceof QuantixError && err.code === "not_found")) throw err;
      });
  }

  async function take(s: S): Promise<{ requeueAfterMs: number } | void> {
    // The parent is fixed before the snapshot exists (progress 10: taking), so that a retry after a crash keeps it.
    if ((s.status?.progressPercent ?? 0) < SNAPSHOT_TAKING_PERCENT) {
      const parent = (await siblings(s)).find((x) => x.status?.current && x.status.state === SnapshotState.AVAILABLE)?.id ?? "";
      const fixed = await writeStatus(s.id, (cur) => {
        cur.status!.parentId = parent;
        cur.status!.progressPercent = SNAPSHOT_TAKING_PERCENT;
      });
      if (!fixed) return;
      s = fixed;
    }
    let taken;
    try {
      const at = await locate(s);
      if (!at) return;
      taken = await at.take();
    } catch (err) {
      return fail(s, "Create", err);
    }
    await makeCurrent(s);
    const nowMs = deps.clock.now();
    await writeStatus(s.id, (cur) => {
      const st = cur.status!;
      st.state = SnapshotState.AVAILABLE;
      st.current = true;
      st.takenAt = timestampFromMs(taken.takenAtMs || nowMs);
      st.memoryIncluded = taken.memoryIncluded;
      st.memorySizeBytes = taken.vmStateBytes;
      st.errorMessage = "";
      st.progressPercent = 100;
      st.observedGeneration = cur.generation;
      // No guest agent is asked to freeze file systems yet: the contract's answer for one that does not answer.
      if (cur.spec?.quiesce && cur.spec.target.case === "vmId") st.conditions = setCondition(st.conditions, { type: "Quiesced", status: false, reason: "NoGuestAgent", message: "no guest agent froze the file systems: the snapshot is crash-consistent", generation: cur.generation }, nowMs);
      st.conditions = setCondition(st.conditions, { type: "Ready", status: true, reason: "Taken", message: `snapshot of volume '${targetOf(cur)}' taken`, generation: cur.generation }, nowMs);
    });
  }

  async function revert(s: S): Promise<{ requeueAfterMs: number } | void> {
    if (s.status?.state !== SnapshotState.REVERTING) await writeStatus(s.id, (cur) => void (cur.status!.state = SnapshotState.REVERTING));
    try {
      const at = await locate(s);
      if (!at) return;
      await at.revert();
    } catch (err) {
      return fail(s, "Revert", err);
    }
    await makeCurrent(s);
    if (s.startAfterRevert && s.spec?.target.case === "vmId") await startVm(s.spec.target.value);
    const nowMs = deps.clock.now();
    await writeStatus(s.id, (cur) => {
      const st = cur.status!;
      st.state = SnapshotState.AVAILABLE;
      st.current = true;
      st.errorMessage = "";
      st.observedGeneration = cur.generation;
      st.conditions = setCondition(st.conditions, { type: "Reverted", status: true, reason: "Reverted", message: `${what(cur)} rolled back to this snapshot`, generation: cur.generation }, nowMs);
    });
  }

  return new Controller(
    {
      name: SNAPSHOT_CONTROLLER,
      watches: [
        watching(snaps, (e) => (e.type === "DELETED" ? [] : [e.object.id])),
        watching(deps.store.of(VOLUME_KIND), (e) => (e.type === "DELETED" ? [`${GONE_KEYS[0].prefix}${e.object.id}`] : [])),
        watching(deps.store.of(VM_KIND), (e) => (e.type === "DELETED" ? [`${GONE_KEYS[1].prefix}${e.object.id}`] : [])),
      ],
      keys: async function* () {
        for await (const s of allOf(snaps)) yield s.id;
      },
      reconcile: async (key) => {
        const gone = GONE_KEYS.find((g) => key.startsWith(g.prefix));
        if (gone) {
          const id = key.slice(gone.prefix.length);
          if (await deps.store.of(gone.kind as unknown as Kind<Resource>).get(id)) return;
          for await (const s of allOf(snaps, { where: { [gone.field]: id } })) if (!s.deletionRequestedAt) await snaps.delete(s.id, undefined, { actor: SNAPSHOT_CONTROLLER }).catch(() => undefined);
          return;
        }
        const first = await snaps.get(key);
        if (!first?.spec?.target.case) return;
        return serial(`${first.spec.target.case}/${targetOf(first)}`, async () => {
          const s = await snaps.get(key);
          if (!s) return;
          if (s.deletionRequestedAt) return remove(s);
          // A volume's snapshots lived in its file; a VM's are recorded no more once the VM is gone.
          const kind = (s.spec?.target.case === "vmId" ? VM_KIND : VOLUME_KIND) as unknown as Kind<Resource>;
          if (!(await deps.store.of(kind).get(targetOf(s)))) {
            await snaps.delete(s.id, undefined, { actor: SNAPSHOT_CONTROLLER }).catch(() => undefined);
            return;
          }
          const state = s.status?.state ?? SnapshotState.UNSPECIFIED;
          if (state === SnapshotState.CREATING || state === SnapshotState.UNSPECIFIED) return take(s);
          if ((state === SnapshotState.AVAILABLE || state === SnapshotState.REVERTING) && (s.status?.observedGeneration ?? 0n) < s.generation) return revert(s);
          return undefined;
        });
      },
      resyncMs: deps.resyncMs ?? 60_000,
      concurrency: 4,
    },
    { clock: deps.clock, ...(deps.timers ? { timers: deps.timers } : {}), log: deps.log, revision: () => deps.store.revision() },
  );
}

/** VM states in which no QEMU holds the VM's disks: a volume there is snapshotted on its own node, offline. */
const OFFLINE: ReadonlySet<VmStatus_State> = new Set([VmStatus_State.STATE_UNSPECIFIED, ...VM_STOPPED]);

/** The disks a VM snapshot is taken on: empty (every writable disk) unless some are excluded. */
function snapshotDiskIds(vm: VirtualMachine, excluded: readonly string[]): string[] {
  if (excluded.length === 0) return [];
  return (vm.spec?.disks ?? []).filter((d) => !d.readonly && !excluded.includes(d.id)).map((d) => d.id);
}

function targetOf(s: S): string {
  return s.spec?.target.value ?? "";
}

function what(s: S): string {
  return `${s.spec?.target.case === "vmId" ? "VM" : "volume"} '${targetOf(s)}'`;
}
