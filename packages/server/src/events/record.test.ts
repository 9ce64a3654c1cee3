import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { NodeSchema, NodeStatusSchema, NodeStatus_Phase as Phase, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { EVENT_KIND, NODE_KIND, type Store } from "@quantix/core";
import { MemoryStore } from "../store/memory-store.js";
import { nodeEvents } from "./node-events.js";
import { updateWithEvents } from "./record.js";

const at = (phase: Phase) => (n: Node) => {
  n.status = n.status ?? create(NodeStatusSchema);
  n.status.phase = phase;
  return n;
};
const options = { actor: "node-agent", nowMs: 1_000 };

async function storeWithNode(phase: Phase): Promise<MemoryStore> {
  const store = new MemoryStore();
  await store.of(NODE_KIND).create(create(NodeSchema, { id: "n1", hostname: "h1", status: { phase } }));
  return store;
}

const eventTypes = async (store: Store) => (await store.of(EVENT_KIND).list({ order: { field: "time", desc: false }, limit: 100 })).items.map((e) => e.type);

test("a write that means no event is stored without one; one that means an event is stored with it", async () => {
  const store = await storeWithNode(Phase.READY);
  const quiet = await updateWithEvents(store, NODE_KIND, "n1", (n) => ((n.managementIp = "10.0.0.9"), n), nodeEvents, options);
  assert.equal(quiet.managementIp, "10.0.0.9");
  assert.deepEqual(await eventTypes(store), []);
  const told = await updateWithEvents(store, NODE_KIND, "n1", at(Phase.NOT_READY), nodeEvents, options);
  assert.equal(told.status?.phase, Phase.NOT_READY);
  assert.deepEqual(await eventTypes(store), ["NotReady"]);
  assert.equal((await store.of(NODE_KIND).get("n1"))?.resourceVersion, told.resourceVersion);
});

test("the events are those of the change from the object as the write finds it, not as it was first read", async () => {
  // The node was READY when read, and another writer made it NOT_READY before the update:
  // making it READY again is a change, and its event is recorded.
  const store = await storeWithNode(Phase.READY);
  const stale = (await store.of(NODE_KIND).get("n1"))!;
  await store.of(NODE_KIND).update("n1", at(Phase.NOT_READY));
  // The first read is the stale one; the writes and the transaction's reads see the store.
  let staleRead = false;
  const lagging = new Proxy(store, {
    get: (target, prop, receiver) =>
      prop === "of"
        ? (kind: typeof NODE_KIND) => {
            const coll = target.of(kind);
            return new Proxy(coll, {
              get: (c, p) => {
                if (p === "get" && !staleRead) return async () => ((staleRead = true), stale);
                const v = Reflect.get(c, p, c) as unknown;
                return typeof v === "function" ? (v as (...a: unknown[]) => unknown).bind(c) : v;
              },
            });
          }
        : (Reflect.get(target, prop, receiver) as unknown),
  }) as Store;
  const node = await updateWithEvents(lagging, NODE_KIND, "n1", at(Phase.READY), nodeEvents, options);
  assert.equal(node.status?.phase, Phase.READY);
  assert.deepEqual(await eventTypes(store), ["Ready"]);
});

test("a mutate that changes nothing writes nothing", async () => {
  const store = await storeWithNode(Phase.READY);
  const before = (await store.of(NODE_KIND).get("n1"))!;
  const same = await updateWithEvents(store, NODE_KIND, "n1", () => undefined, nodeEvents, options);
  assert.equal(same.resourceVersion, before.resourceVersion);
  assert.equal(await store.revision(), before.resourceVersion);
});

test("changes: false ends the update on the stored object, with no mutate and no write; true, or an expected version, goes on as usual", async () => {
  const store = await storeWithNode(Phase.READY);
  const before = (await store.of(NODE_KIND).get("n1"))!;
  let mutated = 0;
  const mutate = (n: Node) => (mutated++, at(Phase.NOT_READY)(n));
  let seen: Node | undefined;
  const kept = await updateWithEvents(store, NODE_KIND, "n1", mutate, nodeEvents, { ...options, changes: (n) => ((seen = n), false) });
  assert.equal(kept, before, "the stored object itself");
  assert.equal(seen, before, "changes reads the stored object, not a copy");
  assert.equal(mutated, 0);
  assert.equal(await store.revision(), before.resourceVersion);
  // A stale expected version still fails, whatever changes says.
  await assert.rejects(updateWithEvents(store, NODE_KIND, "n1", mutate, nodeEvents, { ...options, expectedVersion: before.resourceVersion + 5n, changes: () => false }), /version|ABORTED|aborted/i);
  const moved = await updateWithEvents(store, NODE_KIND, "n1", mutate, nodeEvents, { ...options, changes: () => true });
  assert.equal(moved.status?.phase, Phase.NOT_READY);
  assert.equal(mutated, 1);
  assert.deepEqual(await eventTypes(store), ["NotReady"]);
});

test("a change with an event is committed on the version it was made from; if the object moved on by then, it is made again from the object as it is", async () => {
  const store = await storeWithNode(Phase.READY);
  let commits = 0;
  const racing = new Proxy(store, {
    get: (target, prop, receiver) =>
      prop === "commit"
        ? async (...args: Parameters<Store["commit"]>) => {
            // Another writer gets in between the update given up and its commit, once.
            if (commits++ === 0) await target.of(NODE_KIND).update("n1", (n) => ((n.managementIp = "10.0.0.7"), n));
            return target.commit(...args);
          }
        : (Reflect.get(target, prop, receiver) as unknown),
  }) as Store;
  const node = await updateWithEvents(racing, NODE_KIND, "n1", at(Phase.NOT_READY), nodeEvents, options);
  assert.ok(commits >= 1, "a commit was tried");
  assert.equal(node.status?.phase, Phase.NOT_READY);
  assert.equal(node.managementIp, "10.0.0.7", "the other writer's change is kept");
  assert.deepEqual(await eventTypes(store), ["NotReady"], "one event, for the change that was made");
  assert.equal((await store.of(NODE_KIND).get("n1"))?.resourceVersion, node.resourceVersion);
  const direct = await updateWithEvents(store, NODE_KIND, "n1", at(Phase.READY), nodeEvents, { ...options, nowMs: 2_000 });
  assert.equal(direct.status?.phase, Phase.READY);
  assert.deepEqual(await eventTypes(store), ["NotReady", "Ready"]);
});
