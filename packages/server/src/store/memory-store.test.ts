import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { describe, it } from "node:test";

import { create } from "@bufbuild/protobuf";
import { VirtualMachineSchema, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { compareCursor, matchesQuery, QuantixError, sortKeyOf, type Query, type WatchEvent, VM_KIND, NODE_KIND } from "@quantix/core";

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

describe("memory store pages: kept orders and indexes", () => {
  // The pages as the store computed them before it kept orders and indexes: filter everything, sort, cut.
  function reference(all: readonly VirtualMachine[], q: Query): { ids: string[]; total: number; hasMore: boolean } {
    const dir = q.order.desc ? -1 : 1;
    const keyed = all.filter((o) => matchesQuery(VM_KIND, o, q)).map((o) => ({ o, p: { key: sortKeyOf(VM_KIND, o, q.order.field), id: o.id } }));
    keyed.sort((a, b) => dir * compareCursor(a.p, b.p));
    const start = q.after ? keyed.filter((x) => dir * compareCursor(x.p, q.after!) > 0) : keyed;
    return { ids: start.slice(0, q.limit).map((x) => x.o.id), total: keyed.length, hasMore: start.length > q.limit };
  }

  it("give the same pages as filtering and sorting everything, through creates, renames, moves and deletes", async () => {
    const store = new MemoryStore();
    const vms = store.of(VM_KIND);
    let seed = 7;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % n;
    };
    const projects = ["p-a", "p-b", "p-c"];
    // Twelve node ids, so a node's VMs are under an eighth of all (read from the node index) while a project's are not (a walk along the order).
    const nodes = ["", ...Array.from({ length: 11 }, (_, n) => `n-${n + 1}`)];
    const ids: string[] = [];
    const vmOf = (i: number) =>
      create(VirtualMachineSchema, { id: `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`, projectId: projects[rand(3)]!, name: `vm-${rand(40)}-${i}`, labels: { tier: ["web", "db"][rand(2)]! }, createdAt: { seconds: BigInt(1_700_000_000 + rand(50)) }, status: { nodeId: nodes[rand(12)]! } });
    let checked = 0;
    const check = async () => {
      const all = [...(await allOfList())];
      const queries: Query[] = [];
      for (const field of ["name", "created_at"])
        for (const desc of [false, true])
          for (const where of [undefined, { project_id: projects[rand(3)]! }, { node_id: nodes[rand(12)]! }, { node_id: [nodes[rand(12)]!, nodes[rand(12)]!] }, { project_id: "p-a", node_id: "n-1" }, { id: [ids[rand(ids.length)] ?? "x", "missing"] }])
            for (const labels of [undefined, { tier: "web" }]) queries.push({ order: { field, desc }, where, labels, limit: 1 + rand(7) });
      for (const q0 of queries) {
        // Walk every page of the query, each page's cursor from the last item, as clients do.
        let q: Query = q0;
        for (let page = 0; page < 100; page++) {
          const got = await vms.list(q);
          const want = reference(all, q);
          assert.deepEqual(got.items.map((o) => o.id), want.ids, JSON.stringify(q));
          assert.equal(got.totalCount, want.total, JSON.stringify(q));
          assert.equal(got.hasMore, want.hasMore, JSON.stringify(q));
          checked++;
          const last = got.items.at(-1);
          if (!got.hasMore || !last) break;
          q = { ...q0, after: { key: sortKeyOf(VM_KIND, last, q0.order.field), id: last.id } };
        }
      }
    };
    const allOfList = async () => (await vms.list({ order: { field: "name", desc: false }, limit: 100_000 })).items;
    for (let round = 0; round < 6; round++) {
      for (let k = 0; k < 40; k++) {
        const i = ids.length;
        const vm = vmOf(i);
        await vms.create(vm);
        ids.push(vm.id);
      }
      // Renames (the name order), moves (the node index) and deletes between the checks.
      for (let k = 0; k < 15; k++) {
        const id = ids[rand(ids.length)]!;
        if (!(await vms.get(id))) continue;
        await vms.update(id, (cur) => {
          cur.name = `renamed-${rand(40)}-${id.slice(-4)}`;
          cur.status = { ...cur.status!, nodeId: nodes[rand(12)]! } as never;
          return cur;
        }, { actor: "scheduler" });
      }
      for (let k = 0; k < 8; k++) {
        const id = ids[rand(ids.length)]!;
        if (await vms.get(id)) await vms.delete(id);
      }
      await check();
    }
    assert.ok(checked > 1000, `${checked} pages compared`);
  });
});
