import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { VirtualMachineSchema, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { PortDeviceOwner, PortSchema, PortState } from "@quantix/api/gen/Quantixkvm/network/v1/port_pb.js";
import { PORT_KIND, QuantixError, type Capability, type HypervisorPort, type ObservedNic, type ObservedPower, type Store, type VmObservation } from "@quantix/core";
import { MemoryStore } from "../store/memory-store.js";
import { NicStepFailure, stepNics } from "./vm-nic-step.js";

const NODE = "node-1";
const PORT = "0e0e0e0e-0000-4000-8000-000000000001";

/** A node's hypervisor as far as NICs go: its VMs' power and NICs (a fake, not a mock: tests read its state). */
class NicNode {
  readonly kind = "fake";
  readonly vms = new Map<string, { power: ObservedPower; nics: ObservedNic[] }>();
  refuse: QuantixError | undefined;
  constructor(readonly capabilities: ReadonlySet<Capability>) {}
  readonly nics = {
    attach: async (vmId: string, nic: { id: string; portId: string }) => {
      if (this.refuse) throw this.refuse;
      const vm = this.vms.get(vmId)!;
      if (!vm.nics.some((n) => n.id === nic.id)) vm.nics.push({ id: nic.id, portId: nic.portId });
    },
    detach: async (vmId: string, nicId: string) => {
      const vm = this.vms.get(vmId)!;
      vm.nics = vm.nics.filter((n) => n.id !== nicId);
    },
  };
  async deleteVM(vmId: string): Promise<void> {
    this.vms.delete(vmId);
  }
  async observe(vmId: string): Promise<VmObservation> {
    const vm = this.vms.get(vmId);
    return vm ? { vmId, power: vm.power, nics: [...vm.nics] } : { vmId, power: "absent" };
  }
  get port(): HypervisorPort {
    return this as unknown as HypervisorPort;
  }
}

const vmWith = (nics: { id: string; portId: string }[]): VirtualMachine =>
  create(VirtualMachineSchema, { id: "vm-1", spec: { nics: nics.map((n) => ({ ...n, macAddress: "52:54:00:00:00:01" })) }, status: { nodeId: NODE } });

async function portOf(store: Store, state: PortState, nodeId: string): Promise<void> {
  const p = create(PortSchema, { id: PORT, spec: { networkId: "net" }, status: { state, nodeId, deviceOwner: PortDeviceOwner.VM, deviceId: "vm-1", nicId: "eth0" } });
  if (await store.of(PORT_KIND).get(PORT)) await store.of(PORT_KIND).update(PORT, (cur) => ({ ...cur, status: p.status }));
  else await store.of(PORT_KIND).create(p as never);
}

async function step(store: Store, node: NicNode, vm: VirtualMachine) {
  return stepNics(store, vm, node.port, await node.observe(vm.id));
}

describe("stepNics: a VM's NICs on its node brought to its spec", () => {
  it("a VM defined on its node but stopped, from a spec without the NIC, has its definition dropped (its next start has the NIC)", async () => {
    const store = new MemoryStore();
    const node = new NicNode(new Set(["nic-hotplug"]));
    node.vms.set("vm-1", { power: "shutdown", nics: [] });
    const r = await step(store, node, vmWith([{ id: "eth0", portId: PORT }]));
    assert.equal(r.stepped, true);
    assert.equal(node.vms.has("vm-1"), false);
  });

  it("a running VM: the new NIC waits for its port ACTIVE on the VM's node, then is plugged; a removed one is unplugged", async () => {
    const store = new MemoryStore();
    const node = new NicNode(new Set(["nic-hotplug"]));
    node.vms.set("vm-1", { power: "running", nics: [] });
    const vm = vmWith([{ id: "eth0", portId: PORT }]);
    await portOf(store, PortState.DOWN, "");
    const waiting = await step(store, node, vm);
    assert.equal(waiting.pending?.reason, "WaitingForNetwork");
    assert.match(waiting.pending!.message, new RegExp(`NIC 'eth0' \\(port '${PORT}'\\): not ACTIVE on node '${NODE}'`));
    assert.deepEqual(node.vms.get("vm-1")!.nics, []);
    await portOf(store, PortState.ACTIVE, "node-2");
    assert.equal((await step(store, node, vm)).pending?.reason, "WaitingForNetwork", "ACTIVE on another node is not enough");
    await portOf(store, PortState.ACTIVE, NODE);
    const plugged = await step(store, node, vm);
    assert.deepEqual([plugged.stepped, plugged.pending], [true, undefined]);
    assert.deepEqual(node.vms.get("vm-1")!.nics, [{ id: "eth0", portId: PORT }]);
    assert.deepEqual(await step(store, node, vm), { stepped: false }, "in sync: nothing to do");
    const unplugged = await step(store, node, vmWith([]));
    assert.equal(unplugged.stepped, true);
    assert.deepEqual(node.vms.get("vm-1")!.nics, []);
  });

  it("a node that cannot hot-plug leaves the running guest as it is and says why; a refused plug is a NicStepFailure with the node's words", async () => {
    const store = new MemoryStore();
    await portOf(store, PortState.ACTIVE, NODE);
    const old = new NicNode(new Set());
    old.vms.set("vm-1", { power: "running", nics: [] });
    const r = await step(store, old, vmWith([{ id: "eth0", portId: PORT }]));
    assert.equal(r.stepped, false);
    assert.equal(r.pending?.reason, "HotplugUnsupported");
    assert.match(r.pending!.message, /lacks the 'nic-hotplug' capability: to add NIC 'eth0', stop the VM/);
    const node = new NicNode(new Set(["nic-hotplug"]));
    node.vms.set("vm-1", { power: "running", nics: [] });
    node.refuse = new QuantixError("failed_precondition", "QEMU refused device_add: no free slot");
    await assert.rejects(step(store, node, vmWith([{ id: "eth0", portId: PORT }])), (err: unknown) => err instanceof NicStepFailure && err.reason === "NicAttachFailed" && /no free slot/.test(err.message));
    node.vms.set("vm-1", { power: "suspended", nics: [] });
    assert.equal((await step(store, node, vmWith([{ id: "eth0", portId: PORT }]))).pending?.reason, "WaitingForState");
  });
});
