import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { NodeSchema, NodeStatus_Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VirtualMachineSchema, VmStatus_State as State, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { NODE_KIND, SCHEDULER, VM_KIND, type Store } from "@quantix/core";
import type { Logger } from "@quantix/rpc";
import { FakeClock } from "@quantix/testing";
import { NodeDrivers } from "../hypervisor/node-drivers.js";
import type { Controller } from "../runtime/controller.js";
import { MemoryStore } from "../store/memory-store.js";
import { nodeAllocationController } from "./node-allocation.js";
import { unmanagedGuestsController } from "./unmanaged-guests.js";

/**
 * The node controllers that follow every VM look again only at changes that can change
 * what they write: a VM's power state or conditions (a StartVM, every status the VM
 * controller writes) cost them no pass; a VM added, moved or resized does.
 */

const silent: Logger = { log: () => {} };
const node = (id: string) => create(NodeSchema, { id, hostname: `host-${id}`, status: { phase: NodeStatus_Phase.READY, allocatable: { cpuCores: 8, memoryMib: 16_384n } } });
const turns = async () => {
  for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve));
};

async function settle(c: Controller): Promise<number> {
  await turns();
  await c.idle();
  return c.reconciles;
}

async function cluster(): Promise<{ store: Store; clock: FakeClock; vm: VirtualMachine }> {
  const clock = new FakeClock();
  const store: Store = new MemoryStore({ clock });
  for (const id of ["n1", "n2"]) await store.of(NODE_KIND).create(node(id));
  const vm = await store.of(VM_KIND).create(create(VirtualMachineSchema, { id: crypto.randomUUID(), projectId: "p", name: "placed", spec: { cpu: { cores: 1 }, memory: { sizeMib: 512n } }, status: { state: State.STOPPED, nodeId: "n1" } }));
  return { store, clock, vm };
}

test("node allocation: a VM's state change costs no pass; a resize and a move recount the nodes", async () => {
  const { store, clock, vm } = await cluster();
  const c = nodeAllocationController({ store, clock, timers: clock, log: silent });
  await c.start();
  try {
    const at = async (id: string) => (await store.of(NODE_KIND).get(id))?.status?.allocated;
    const first = await settle(c);
    assert.equal((await at("n1"))?.cpuCores, 1);
    await store.of(VM_KIND).update(vm.id, (cur) => ((cur.status!.state = State.RUNNING), cur));
    assert.equal(await settle(c), first, "a power state changes no allocation: no pass");
    await store.of(VM_KIND).update(vm.id, (cur) => ((cur.spec!.cpu!.cores = 3), cur));
    assert.ok((await settle(c)) > first, "a resize is counted");
    assert.equal((await at("n1"))?.cpuCores, 3);
    await store.of(VM_KIND).update(vm.id, (cur) => ((cur.status!.nodeId = "n2"), cur), { actor: SCHEDULER });
    await settle(c);
    assert.deepEqual([(await at("n1"))?.cpuCores, (await at("n2"))?.cpuCores], [0, 3], "a move recounts the node it left and the one it joined");
  } finally {
    await c.stop();
  }
});

test("unmanaged guests: a VM's state change costs no pass; a VM moved to another node does", async () => {
  const { store, clock, vm } = await cluster();
  const c = unmanagedGuestsController({ store, drivers: new NodeDrivers(), clock, timers: clock, log: silent });
  await c.start();
  try {
    const first = await settle(c);
    await store.of(VM_KIND).update(vm.id, (cur) => ((cur.status!.state = State.RUNNING), cur));
    assert.equal(await settle(c), first, "a power state changes which guests are managed on no node: no pass");
    await store.of(VM_KIND).update(vm.id, (cur) => ((cur.status!.nodeId = "n2"), cur), { actor: SCHEDULER });
    assert.equal(await settle(c), first + 2, "the node it left and the one it joined");
    await store.of(VM_KIND).delete(vm.id);
    const gone = await store.of(VM_KIND).get(vm.id);
    if (gone) {
      assert.equal(await settle(c), first + 2, "a VM marked for deletion is still managed: no pass");
      await store.of(VM_KIND).update(vm.id, (cur) => ((cur.finalizers = []), cur));
    }
    assert.equal(await store.of(VM_KIND).get(vm.id), undefined);
    assert.equal(await settle(c), first + 3, "a VM gone: its node looks again");
  } finally {
    await c.stop();
  }
});
