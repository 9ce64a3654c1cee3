import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { PowerState, VirtualMachineSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import type { HypervisorPort, ObservedPower, VmObservation } from "@quantix/core";
import { stepVm } from "./vm-step.js";

/** A node whose VMs have a power state; its boot answers what it observes afterwards, or nothing (`answers` false). */
class BootNode {
  readonly kind = "fake";
  readonly capabilities = new Set<never>();
  readonly vms = new Map<string, ObservedPower>();
  constructor(private readonly answers: boolean) {}
  async createVM(vmId: string): Promise<void> {
    if (!this.vms.has(vmId)) this.vms.set(vmId, "created");
  }
  async bootVM(vmId: string): Promise<VmObservation | void> {
    this.vms.set(vmId, "running");
    if (this.answers) return { vmId, power: "running", startedAt: 1_000 };
  }
  async observe(vmId: string): Promise<VmObservation> {
    return { vmId, power: this.vms.get(vmId) ?? "absent" };
  }
  get port(): HypervisorPort {
    return this as unknown as HypervisorPort;
  }
}

const vm = create(VirtualMachineSchema, { id: "vm-1", generation: 2n, spec: { desiredPowerState: PowerState.RUNNING }, status: { nodeId: "node-1" } });
const nics = [{ id: "eth0", portId: "p1" }];

describe("stepVm: a boot's answer is the observation afterwards", () => {
  it("a stopped VM booted by a node that answers its state is observed from that answer, with the NICs observed before", async () => {
    const node = new BootNode(true);
    node.vms.set("vm-1", "shutdown");
    const r = await stepVm(vm, PowerState.RUNNING, node.port, { vmId: "vm-1", power: "shutdown", nics });
    assert.equal(r.step, true);
    assert.deepEqual(r.observed, { vmId: "vm-1", power: "running", startedAt: 1_000, nics });
    assert.equal(node.vms.get("vm-1"), "running");
  });

  it("a node whose boot answers nothing leaves the caller to observe", async () => {
    const node = new BootNode(false);
    node.vms.set("vm-1", "created");
    const r = await stepVm(vm, PowerState.RUNNING, node.port, { vmId: "vm-1", power: "created", nics: [] });
    assert.equal(r.step, true);
    assert.equal(r.observed, undefined);
    assert.equal(node.vms.get("vm-1"), "running");
  });

  it("a VM just defined on its node is observed afresh (its NICs there are not known before)", async () => {
    const node = new BootNode(true);
    const r = await stepVm(vm, PowerState.RUNNING, node.port, { vmId: "vm-1", power: "absent" });
    assert.equal(r.step, true);
    assert.equal(r.observed, undefined);
    assert.equal(node.vms.get("vm-1"), "running");
  });

  it("a running VM takes no step", async () => {
    const node = new BootNode(true);
    node.vms.set("vm-1", "running");
    assert.deepEqual(await stepVm(vm, PowerState.RUNNING, node.port, { vmId: "vm-1", power: "running" }), { step: false });
  });
});
