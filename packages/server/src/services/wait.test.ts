import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { getEventListeners } from "node:events";
import { describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { VirtualMachineSchema, VmStatus_State as State, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { QuantixError, VM_KIND, type WatchEvent } from "@quantix/core";
import { MemoryStore } from "../store/memory-store.js";
import { waitFor, waitGone } from "./wait.js";

function newVm(): VirtualMachine {
  return create(VirtualMachineSchema, {
    id: randomUUID(),
    projectId: randomUUID(),
    name: "waiting",
    spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n } },
    status: { state: State.STOPPED },
    createdAt: timestampFromMs(0),
    updatedAt: timestampFromMs(0),
    generation: 1n,
  });
}

const setState = (state: State) => (cur: VirtualMachine) => ((cur.status!.state = state), cur);
const running = (vm: VirtualMachine) => vm.status?.state === State.RUNNING;
const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** A VM in a memory store, and what a watcher from its creation hears (`seen`, as `label` names each event) until `stop`. */
async function watchedVm(label: (ev: WatchEvent<VirtualMachine>) => string | undefined) {
  const store = new MemoryStore();
  const vms = store.of(VM_KIND);
  const vm = await vms.create(newVm());
  const seen: string[] = [];
  const watching = new AbortController();
  void (async () => {
    for await (const ev of vms.watch(vm.resourceVersion, watching.signal)) {
      const l = label(ev);
      if (l) seen.push(l);
    }
  })();
  return { vms, vm, seen, stop: () => watching.abort() };
}

describe("waitFor", () => {
  it("wakes in the write that makes the predicate hold, before the store's watchers are told of it", async () => {
    const { vms, vm, seen, stop } = await watchedVm((ev) => (ev.type === "MODIFIED" ? `watcher@${ev.revision}` : undefined));
    const done = waitFor(vms, "VM", vm.id, running, 10_000, new AbortController().signal).then((x) => seen.push(`waitFor@${x.resourceVersion}`));
    await turn();
    await vms.update(vm.id, setState(State.STARTING));
    await turn();
    const up = await vms.update(vm.id, setState(State.RUNNING));
    await done;
    await turn();
    stop();
    assert.deepEqual(seen, [`watcher@${up.resourceVersion - 1n}`, `waitFor@${up.resourceVersion}`, `watcher@${up.resourceVersion}`]);
  });

  it("returns at once when the predicate holds, the object as it is when the budget ends, and NOT_FOUND once it is deleted", async () => {
    const store = new MemoryStore();
    const vms = store.of(VM_KIND);
    const vm = await vms.create(newVm());
    const stopped = await waitFor(vms, "VM", vm.id, (x) => x.status?.state === State.STOPPED, 10_000, new AbortController().signal);
    assert.equal(stopped.resourceVersion, vm.resourceVersion);
    const caller = new AbortController();
    const late = await waitFor(vms, "VM", vm.id, running, 30, caller.signal);
    assert.equal(late.status?.state, State.STOPPED, "the budget ran out: the object as it is");
    assert.equal(getEventListeners(caller.signal, "abort").length, 0, "a wait that ended leaves no listener on the caller's signal");
    const aborted = new AbortController();
    const cut = waitFor(vms, "VM", vm.id, running, 10_000, aborted.signal);
    await turn();
    aborted.abort();
    assert.equal((await cut).status?.state, State.STOPPED, "the caller went away: the object as it is");
    const t0 = performance.now();
    const gone1 = await waitFor(vms, "VM", vm.id, running, 10_000, aborted.signal);
    assert.equal(gone1.status?.state, State.STOPPED);
    assert.ok(performance.now() - t0 < 5_000, "a signal aborted before the call ends the wait at once, not at the budget");
    const gone = waitFor(vms, "VM", vm.id, running, 10_000, new AbortController().signal);
    await turn();
    await vms.delete(vm.id);
    await assert.rejects(gone, (e: unknown) => e instanceof QuantixError && e.code === "not_found");
  });
});

describe("waitGone", () => {
  it("wakes in the delete, before the store's watchers are told of it", async () => {
    const { vms, vm, seen, stop } = await watchedVm((ev) => (ev.type !== "SYNCED" ? `watcher:${ev.type}` : undefined));
    const done = waitGone(vms, vm.id, 10_000, new AbortController().signal).then((gone) => seen.push(`waitGone:${gone}`));
    await turn();
    await vms.update(vm.id, setState(State.STOPPING));
    await turn();
    await vms.delete(vm.id);
    await done;
    await turn();
    stop();
    assert.deepEqual(seen, ["watcher:MODIFIED", "waitGone:true", "watcher:DELETED"]);
  });

  it("is true at once for an object that is not there, and false when the budget or the caller ends the wait", async () => {
    const store = new MemoryStore();
    const vms = store.of(VM_KIND);
    assert.equal(await waitGone(vms, randomUUID(), 10_000, new AbortController().signal), true);
    const vm = await vms.create(newVm());
    assert.equal(await waitGone(vms, vm.id, 0, new AbortController().signal), false, "no budget: the answer as it is");
    assert.equal(await waitGone(vms, vm.id, 30, new AbortController().signal), false, "the budget ran out");
    const aborted = new AbortController();
    aborted.abort();
    const t0 = performance.now();
    assert.equal(await waitGone(vms, vm.id, 10_000, aborted.signal), false);
    assert.ok(performance.now() - t0 < 5_000, "a signal aborted before the call ends the wait at once, not at the budget");
    assert.ok(await vms.get(vm.id), "waiting changed nothing");
  });
});
