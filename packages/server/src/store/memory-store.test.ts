import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";

import { create } from "@bufbuild/protobuf";
import { VirtualMachineSchema, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { QuantixError, type WatchEvent, VM_KIND, NODE_KIND } from "@quantix/core";

import { MemoryStore } from "./memory-store.js";
import { kindContract } from "./kind.contract.js";
import { storeContract } from "./store.contract.js";

storeContract(
  "memory",
  async () => {
    const store = new MemoryStore({ limits: { historySize: 50, maxBacklog: 1000 } });
    return { store, close: () => store.close() };
  },
  { historySize: 50 },
);

function newVm(): VirtualMachine {
  return create(VirtualMachineSchema, { id: randomUUID(), projectId: randomUUID(), name: `vm-${randomUUID().slice(0, 8)}` });
}

/** next() of a watch, failing after 5 s instead of hanging. */
function nextWithin<T>(it: AsyncIterator<WatchEvent<T>>): Promise<IteratorResult<WatchEvent<T>>> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("no watch event within 5000 ms")), 5000);
  });
  return Promise.race([it.next(), timeout]).finally(() => clearTimeout(timer));
}

describe("MemoryStore", () => {
  it("cuts off a watcher more than maxBacklog changes behind with RESOURCE_EXHAUSTED, after what was queued", async () => {
    const store = new MemoryStore({ limits: { historySize: 50, maxBacklog: 5 } });
    const controller = new AbortController();
    try {
      const it = store.of(VM_KIND).watch(await store.revision(), controller.signal)[Symbol.asyncIterator]();
      assert.equal((await nextWithin(it)).value?.type, "SYNCED");
      // The watcher reads nothing while eight changes happen: five fit in its backlog.
      const created: VirtualMachine[] = [];
      for (let i = 0; i < 8; i++) created.push(await store.of(VM_KIND).create(newVm()));
      const received: string[] = [];
      for (let i = 0; i < 5; i++) {
        const r = await nextWithin(it);
        assert.ok(!r.done && r.value.type === "ADDED", `event ${i}: ${JSON.stringify(r.value?.type)}`);
        received.push(r.value.object.id);
      }
      assert.deepEqual(received, created.slice(0, 5).map((v) => v.id));
      await assert.rejects(nextWithin(it), (e: unknown) => e instanceof QuantixError && e.code === "resource_exhausted");
      assert.equal(store.of(VM_KIND).hub.watcherCount, 0);
      // The store itself is unaffected, and a new watch from the last revision received works.
      const resumed = store.of(VM_KIND).watch(created[4]!.resourceVersion, controller.signal)[Symbol.asyncIterator]();
      const rest: string[] = [];
      for (let i = 0; i < 3; i++) {
        const r = await nextWithin(resumed);
        assert.ok(!r.done && r.value.type === "ADDED");
        rest.push(r.value.object.id);
      }
      assert.deepEqual(rest, created.slice(5).map((v) => v.id));
    } finally {
      controller.abort();
    }
  });

  it("aborting a watch releases its subscription", async () => {
    const store = new MemoryStore();
    const controller = new AbortController();
    const it = store.of(NODE_KIND).watch(await store.revision(), controller.signal)[Symbol.asyncIterator]();
    assert.equal((await nextWithin(it)).value?.type, "SYNCED");
    assert.equal(store.of(NODE_KIND).hub.watcherCount, 1);
    const pending = nextWithin(it);
    controller.abort();
    assert.equal((await pending).done, true);
    assert.equal(store.of(NODE_KIND).hub.watcherCount, 0);
  });

  it("reports its kind and revision as health", async () => {
    const store = new MemoryStore();
    const vm = await store.of(VM_KIND).create(newVm());
    assert.deepEqual(await store.health(), { ok: true, kind: "memory", revision: vm.resourceVersion.toString() });
  });
});

kindContract("memory", async () => {
  const store = new MemoryStore({ limits: { historySize: 1000, maxBacklog: 1000 } });
  return { store, close: () => store.close() };
});
