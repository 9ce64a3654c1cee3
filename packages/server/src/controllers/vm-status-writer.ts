import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ConditionStatus } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { PowerState, VmNicStatusSchema, VmStatus_State as State, type VirtualMachine, type VmStatus } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { VM_KIND, type Clock, type HypervisorPort, type Store, type VmObservation } from "@quantix/core";
import { updateWithEvents } from "../events/record.js";
import { vmEvents } from "../events/vm-events.js";
import { removeCondition, setCondition } from "./conditions.js";
import { rebootDue } from "./vm-step.js";
import { NICS_PLUGGED } from "./vm-nic-step.js";
import { editedStatus, stateOf, withStatus } from "./vm-status.js";

/** The condition a failed step of the VM's node sets (False, with the step's reason). */
export const POWER_STATE_REACHED = "PowerStateReached";
/** The condition a VM waiting for its volumes carries (PROVISIONING). */
export const VOLUMES_READY = "VolumesReady";
/** The condition of a VM whose NICs' ports are being set up on its node (False while it waits). */
export const NETWORKS_READY = "NetworksReady";

/** The VM controller's writer of a VM's observed status (one owner, STYLE rule 2). */
export class VmStatusWriter {
  constructor(
    private readonly store: Store,
    private readonly clock: Clock,
    /** Whether a local migration holds the VM: a status read before it took the VM is not written over its own. */
    private readonly held: (vmId: string) => boolean,
  ) {}

  /** A VM without a node: STOPPED when it should be off, else PENDING until the scheduler places it. */
  unplaced(vm: VirtualMachine, desired: PowerState): Promise<void> {
    if (desired === PowerState.STOPPED) {
      return this.write(vm, (s) => {
        s.state = State.STOPPED;
        s.nics = [];
        // A stopped VM needs no placement; keep only the reason it lost its node, if any.
        if (s.conditions.find((c) => c.type === "Scheduled")?.reason !== "NodeDecommissioned") s.conditions = removeCondition(s.conditions, "Scheduled");
        if (rebootDue(vm)) s.rebootSequence = vm.spec!.reboot!.sequence;
      });
    }
    // Placement is the scheduler's (vm-scheduler.ts): it sets the node and the Scheduled
    // condition. Until then the VM waits.
    return this.write(vm, (s) => {
      if (!s.nodeId) s.state = State.PENDING;
    });
  }

  /** The VM's node has no connected hypervisor: its state cannot be observed. */
  notConnected(vm: VirtualMachine, nodeId: string): Promise<void> {
    return this.write(vm, (s) => {
      s.state = State.UNKNOWN;
      s.errorMessage = `node '${nodeId}' is not connected; the VM's state cannot be observed`;
    });
  }

  /** The status rebuilt from what the node's hypervisor observes. */
  observed(vm: VirtualMachine, desired: PowerState, driver: HypervisorPort, obs: VmObservation): Promise<void> {
    const now = this.clock.now();
    return this.write(vm, (s) => {
      s.state = stateOf(obs.power, desired);
      s.hypervisor = driver.kind;
      s.errorMessage = obs.power === "crashed" ? `the hypervisor process ended unexpectedly${obs.error ? `: ${obs.error}` : ""}; StartVM restarts it` : "";
      if (obs.power === "crashed") {
        if (!s.conditions.some((c) => c.type === "Crashed")) {
          s.conditions = setCondition(s.conditions, { type: "Crashed", status: true, reason: "ProcessExited", message: s.errorMessage, generation: vm.generation }, now);
        }
      } else if (obs.power === "running") {
        s.conditions = removeCondition(s.conditions, "Crashed");
      }
      s.conditions = [NETWORKS_READY, VOLUMES_READY, POWER_STATE_REACHED, "SpecAccepted", "NodeReachable"].reduce((list, type) => removeCondition(list, type), s.conditions);
      // Migrating=True outside a running migration is left from a control plane that stopped mid-way.
      if (s.conditions.some((c) => c.type === "Migrating" && c.status === ConditionStatus.TRUE)) {
        s.conditions = setCondition(s.conditions, { type: "Migrating", status: false, reason: "Interrupted", message: `the control plane stopped during the migration; the VM is observed on node '${s.nodeId}'`, generation: vm.generation }, now);
      }
      // The NICs the node has for it: a removed NIC's port is released once it is gone from here (network-controller.ts).
      if (obs.power === "absent") s.nics = [];
      else if (obs.nics) s.nics = obs.nics.map((n) => create(VmNicStatusSchema, { id: n.id, portId: n.portId }));
      if (obs.startedAt !== undefined) s.startedAt = timestampFromMs(obs.startedAt);
      else delete s.startedAt;
      // A reboot asked for while the guest was not running has nothing to do.
      if (rebootDue(vm) && obs.power !== "running" && obs.power !== "starting") s.rebootSequence = vm.spec!.reboot!.sequence;
      s.observedGeneration = vm.generation;
    });
  }

  /**
   * Whether the VM's NICs on its node are its spec's (vm-nic-step.ts): NicsPlugged=False
   * with the reason while NICs are being plugged or unplugged or cannot be, removed once
   * they are.
   */
  nics(vm: VirtualMachine, pending: { reason: string; message: string } | undefined): Promise<void> {
    const now = this.clock.now();
    return this.write(vm, (s) => {
      s.conditions = pending ? setCondition(s.conditions, { type: NICS_PLUGGED, status: false, reason: pending.reason, message: pending.message, generation: vm.generation }, now) : removeCondition(s.conditions, NICS_PLUGGED);
    });
  }

  /** The node rebooted the guest as spec.reboot asked. */
  rebooted(vm: VirtualMachine): Promise<void> {
    return this.write(vm, (s) => {
      s.rebootSequence = vm.spec?.reboot?.sequence ?? s.rebootSequence;
    });
  }

  /**
   * Placed, and waiting for its volumes to be made on its node (a VM's own new disks, an
   * image being copied there): PROVISIONING with VolumesReady=False saying which. Removed
   * once the VM is observed on its node.
   */
  provisioning(vm: VirtualMachine, why: string, condition: { type: string; reason: string } = { type: VOLUMES_READY, reason: "WaitingForVolumes" }): Promise<void> {
    const now = this.clock.now();
    return this.write(vm, (s) => {
      s.state = State.PROVISIONING;
      s.errorMessage = "";
      s.conditions = setCondition(s.conditions, { type: condition.type, status: false, reason: condition.reason, message: why, generation: vm.generation }, now);
    });
  }

  /** The node cannot be asked: the status says so instead of repeating the last state seen. */
  unreachable(vm: VirtualMachine, why: string): Promise<void> {
    const now = this.clock.now();
    return this.write(vm, (s) => {
      s.state = State.UNKNOWN;
      s.errorMessage = `${why}; the VM's state cannot be observed until the node is back`;
      s.conditions = setCondition(s.conditions, { type: "NodeReachable", status: false, reason: "NodeUnreachable", message: s.errorMessage, generation: vm.generation }, now);
    });
  }

  /**
   * A step the node failed (vm-step.ts StepFailure): ERROR with the node's words and a
   * PowerStateReached=False condition whose reason names the step, at the VM's generation,
   * so that a power action waiting for the outcome answers with it. Cleared by the next
   * pass that observes the VM without a failure.
   */
  failed(vm: VirtualMachine, reason: string, why: string): Promise<void> {
    const now = this.clock.now();
    return this.write(vm, (s) => {
      s.state = State.ERROR;
      s.errorMessage = why;
      s.conditions = setCondition(removeCondition(s.conditions, "NodeReachable"), { type: POWER_STATE_REACHED, status: false, reason, message: why, generation: vm.generation }, now);
      s.observedGeneration = vm.generation;
    });
  }

  /** The node's hypervisor refused the VM's spec: ERROR until the spec changes. */
  rejected(vm: VirtualMachine, why: string): Promise<void> {
    const now = this.clock.now();
    return this.write(vm, (s) => {
      s.state = State.ERROR;
      s.errorMessage = why;
      s.conditions = setCondition(s.conditions, { type: "SpecAccepted", status: false, reason: "HypervisorRejected", message: why, generation: vm.generation }, now);
      s.observedGeneration = vm.generation;
    });
  }

  /**
   * Applies `edit` to the VM's current status; writes only when something changed. Most
   * passes change nothing: the edit is tried on the stored VM's status first, so those
   * copy no VM and write nothing; one that changes it is written from that try.
   */
  async write(vm: VirtualMachine, edit: (s: VmStatus) => void): Promise<void> {
    const now = this.clock.now();
    let tried: { version: bigint; status: VmStatus } | undefined;
    await updateWithEvents(
      this.store,
      VM_KIND,
      vm.id,
      (cur) => {
        if (this.held(vm.id)) return undefined;
        // The try's status, once, when made from this very version; else the edit again.
        const t = tried;
        tried = undefined;
        return withStatus(cur, t?.version === cur.resourceVersion ? t.status : editedStatus(cur, edit), now);
      },
      vmEvents,
      {
        actor: "vm-controller",
        nowMs: now,
        changes: (current) => {
          if (this.held(vm.id)) return false;
          const status = editedStatus(current, edit);
          if (status) tried = { version: current.resourceVersion, status };
          return status !== undefined;
        },
      },
    );
  }
}
