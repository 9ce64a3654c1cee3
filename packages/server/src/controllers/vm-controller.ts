import { allOf, PORT_KIND, QuantixError, VM_KIND, VOLUME_KIND, type Clock, type Store, type Timers, type VmObservation } from "@quantix/core";
import { PortDeviceOwner, PortState } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";
import type { Logger } from "@quantix/rpc";
import { Controller, watching } from "../runtime/controller.js";
import { finalizeVm } from "./vm-finalize.js";
import { StepFailure, stepVm, type Step, type VolumePathResolver } from "./vm-step.js";
import { VmStatusWriter } from "./vm-status-writer.js";
import { NicStepFailure, stepNics, type NicStep } from "./vm-nic-step.js";
import { desiredOf } from "./vm-status.js";
import { NotReadyYet } from "./not-ready.js";

/** How soon a VM waiting for its volumes is looked at again without a volume event. */
const PROVISIONING_RECHECK_MS = 5_000;

/** How soon a VM whose new NIC waits for its port is looked at again without a port event. */
const NIC_RECHECK_MS = 5_000;

/** The actor name of the VM controller (it owns a VM's observed state, conditions and hypervisor fields). */
export const VM_CONTROLLER = "vm-controller";

/** Dependencies of the VM controller. */
export interface VmControllerDeps {
  readonly store: Store;
  readonly drivers: NodeDrivers;
  readonly clock: Clock;
  readonly timers?: Timers;
  readonly log: Logger;
  /** Every VM is reconciled at least this often, as a safety net. */
  readonly resyncMs?: number;
  /** The files of a VM's volume disks on its node, when it is defined there (default: none). */
  readonly volumePaths?: VolumePathResolver;
}

/**
 * The VM controller (STYLE rule 1): `reconcile(id)` reads the VM and what its node's
 * hypervisor observes, takes one idempotent step towards the spec (power state, stop
 * options, reboots), and writes the status rebuilt from the observation. A VM being
 * deleted has its guest powered off and removed from its node before its finalizer is
 * removed (vm-finalize.ts), whatever events were missed. Store changes, hypervisor events
 * and the resync only enqueue ids. Runs on the leader only (ControllerManager).
 */
export class VmController {
  readonly controller: Controller;
  private readonly status: VmStatusWriter;
  /** VMs a live migration owns for now: the controller neither steps nor writes their status. */
  private readonly migrating = new Set<string>();

  constructor(private readonly deps: VmControllerDeps) {
    const vms = deps.store.of(VM_KIND);
    this.status = new VmStatusWriter(deps.store, deps.clock, (id) => this.migrating.has(id));
    this.controller = new Controller(
      {
        name: VM_CONTROLLER,
        watches: [
          watching(vms, (ev) => [ev.object.id]),
          // A VM waiting for its volumes goes on as soon as one of them changes.
          watching(deps.store.of(VOLUME_KIND), (ev) => (ev.type === "DELETED" ? [] : (ev.object.status?.attachments ?? []).map((a) => a.vmId))),
          // A VM waiting for its NICs (to be defined, or a NIC to be hot-plugged) goes on as soon as a port of its turns ACTIVE on its node.
          watching(deps.store.of(PORT_KIND), (ev) => (ev.type !== "DELETED" && ev.object.status?.deviceOwner === PortDeviceOwner.VM && ev.object.status.state === PortState.ACTIVE && ev.previous?.status?.state !== PortState.ACTIVE ? [ev.object.status.deviceId] : [])),
        ],
        events: [(enqueue) => deps.drivers.onChange((_node, vmId) => enqueue(vmId))],
        keys: async function* () {
          for await (const vm of allOf(vms)) yield vm.id;
          for (const [, driver] of deps.drivers.entries()) for (const obs of await driver.list()) yield obs.vmId;
        },
        reconcile: (id) => this.reconcile(id),
        onTerminal: async (id, err) => {
          const vm = await vms.get(id);
          if (vm) await this.status.rejected(vm, err.message);
        },
        ...(deps.resyncMs !== undefined ? { resyncMs: deps.resyncMs } : {}),
      },
      { clock: deps.clock, ...(deps.timers ? { timers: deps.timers } : {}), log: deps.log, revision: () => deps.store.revision() },
    );
  }

  start(): Promise<void> {
    return this.controller.start();
  }

  stop(): Promise<void> {
    return this.controller.stop();
  }

  enqueue(vmId: string): void {
    this.controller.enqueue(vmId);
  }

  /** Resolves when no work is pending (tests). */
  idle(): Promise<void> {
    return this.controller.idle();
  }

  /**
   * Hands a VM to a live migration until the returned release is called: reconciling it
   * would observe a VM that is in two places at once. Release reconciles the VM again.
   */
  holdForMigration(vmId: string): () => void {
    this.migrating.add(vmId);
    return () => {
      this.migrating.delete(vmId);
      this.enqueue(vmId);
    };
  }

  /** One level-based pass for one VM. */
  private async reconcile(vmId: string): Promise<void | { requeueAfterMs: number }> {
    if (this.migrating.has(vmId)) return;
    const vm = await this.deps.store.of(VM_KIND).get(vmId);
    if (!vm) return;
    if (vm.deletionRequestedAt) return finalizeVm(vm, { store: this.deps.store, drivers: this.deps.drivers, clock: this.deps.clock, log: this.deps.log, status: this.status });
    // A migration holds the VM (the scheduler reserved its target): the migration controller
    // runs it and the scheduler moves the VM when it ends; nothing is stepped meanwhile.
    if (vm.status?.migrationTargetNodeId) return;
    const desired = desiredOf(vm);
    const nodeId = vm.status?.nodeId ?? "";
    if (!nodeId) return this.status.unplaced(vm, desired);
    const driver = this.deps.drivers.get(nodeId);
    if (!driver) return this.status.notConnected(vm, nodeId);
    let obs: VmObservation;
    let stepped: Step = false;
    let nics: NicStep = { stepped: false };
    try {
      // The node's watch stands for a GetVmInfo when an answer of the node confirmed it and
      // nothing but its events can have changed the VM since; else the node is asked.
      obs = driver.observeWatched?.(vm.id) ?? (await driver.observe(vm.id));
      // NICs added or removed since the node got the VM: hot-plugged, or its stale definition dropped (vm-nic-step.ts).
      nics = await stepNics(this.deps.store, vm, driver, obs);
      if (nics.stepped) obs = await driver.observe(vm.id);
      const step = await stepVm(vm, desired, driver, obs, this.deps.volumePaths);
      stepped = step.step;
      // The node's answer to the step may already say where the VM is (BootVm does): no second look then.
      if (step.observed) obs = step.observed;
      else if (stepped) obs = await driver.observe(vm.id);
    } catch (err) {
      if (err instanceof NotReadyYet) {
        // Its volumes are being made on the node: PROVISIONING, looked at again when one changes (and soon anyway).
        await this.status.provisioning(vm, err.message, err.condition);
        return { requeueAfterMs: PROVISIONING_RECHECK_MS };
      }
      if (err instanceof NicStepFailure) {
        // The guest keeps running as it is; the reason is on the VM and the pass is retried with backoff.
        await this.status.nics(vm, { reason: err.reason, message: err.message });
        throw err;
      }
      if (err instanceof QuantixError && err.code === "unavailable") {
        // Retryable: say so in status, then fail the pass so the queue retries with backoff.
        await this.status.unreachable(vm, err.message);
        throw err;
      }
      // Whatever else the node reports reaches the VM's status with its reason (the API
      // says what the log says), and the pass is retried with backoff.
      if (err instanceof StepFailure) await this.status.failed(vm, err.reason, err.message);
      else if (err instanceof QuantixError) await this.status.failed(vm, "ObserveFailed", `the node could not report the VM's state: ${err.message}`);
      throw err;
    }
    if (stepped === "rebooted") await this.status.rebooted(vm);
    await this.status.observed(vm, desired, driver, obs);
    await this.status.nics(vm, nics.pending);
    if (nics.pending?.reason === "WaitingForNetwork") return { requeueAfterMs: NIC_RECHECK_MS };
  }
}
