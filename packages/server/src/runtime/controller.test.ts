import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { NodeSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { allOf, NODE_KIND, QuantixError, type Store } from "@quantix/core";
import { FakeClock, until } from "@quantix/testing";
import { silentLogger } from "@quantix/rpc";
import { MemoryStore } from "../store/memory-store.js";
import { Controller, TerminalError, watching, type ReconcileResult } from "./controller.js";
import { ControllerManager } from "./manager.js";

/** A controller over nodes whose reconcile does what `behave` says, recording each pass. */
function nodeController(store: Store, clock: FakeClock, behave: (key: string, pass: number) => ReconcileResult | Promise<ReconcileResult>, onTerminal?: (key: string, err: TerminalError) => Promise<void>) {
  const passes: string[] = [];
  const nodes = store.of(NODE_KIND);
  const c = new Controller(
    {
      name: "test",
      watches: [watching(nodes, (ev) => [ev.object.id])],
      keys: async function* () {
        for await (const n of allOf(nodes)) yield n.id;
      },
      reconcile: async (key) => {
        passes.push(key);
        return behave(key, passes.filter((k) => k === key).length);
      },
      ...(onTerminal ? { onTerminal } : {}),
      resyncMs: 30_000,
    },
    { clock, timers: clock, log: silentLogger, revision: () => store.revision() },
  );
  return { c, passes, nodes };
}

const node = () => create(NodeSchema, { id: randomUUID(), hostname: `h-${randomUUID().slice(0, 8)}` });

test("a store change reconciles its key; requeueAfterMs runs it again when the (fake) time comes", async () => {
  const store = new MemoryStore();
  const clock = new FakeClock();
  const { c, passes, nodes } = nodeController(store, clock, (_k, n) => (n === 1 ? { requeueAfterMs: 5000 } : undefined));
  await c.start();
  const a = await nodes.create(node());
  await until(() => (passes.length === 1 ? true : undefined), "the first pass");
  await clock.advance(4999);
  assert.equal(passes.length, 1, "not before its time");
  await clock.advance(1);
  await c.idle();
  assert.deepEqual(passes, [a.id, a.id]);
  await c.stop();
});

test("a failing pass is retried with backoff on the injected timers; a TerminalError goes to onTerminal and is not retried", async () => {
  const store = new MemoryStore();
  const clock = new FakeClock();
  const terminal: string[] = [];
  const { c, passes, nodes } = nodeController(
    store,
    clock,
    (key, n) => {
      if (key.endsWith("!")) throw new TerminalError("Refused", "cannot ever");
      if (n < 3) throw new QuantixError("unavailable", "node down");
      return undefined;
    },
    async (key, err) => void terminal.push(`${key}:${err.reason}`),
  );
  await c.start();
  const a = await nodes.create(node());
  await until(() => (passes.length === 1 ? true : undefined), "the first pass");
  await clock.advance(199);
  assert.equal(passes.length, 1);
  await clock.advance(1);
  assert.equal(passes.length, 2, "retried after 200 ms");
  await clock.advance(400);
  await c.idle();
  assert.equal(passes.length, 3, "again after 400 ms, then it succeeds");
  await clock.advance(10_000);
  assert.equal(passes.length, 3, "a success is not retried");

  const refused = `${a.id}!`;
  c.enqueue(refused);
  await c.idle();
  await clock.advance(20_000);
  assert.deepEqual(terminal, [`${refused}:Refused`]);
  assert.equal(passes.filter((k) => k === refused).length, 1, "a terminal error is not retried");
  await c.stop();
});

test("the resync reconciles every key again; a stopped controller takes no work", async () => {
  const store = new MemoryStore();
  const clock = new FakeClock();
  const { c, passes, nodes } = nodeController(store, clock, () => undefined);
  const a = await nodes.create(node());
  await c.start();
  await c.idle();
  assert.deepEqual(passes, [a.id], "the initial pass covers existing objects");
  await clock.advance(30_000);
  await c.idle();
  assert.deepEqual(passes, [a.id, a.id], "the resync");
  await c.stop();
  await nodes.create(node());
  c.enqueue("x");
  await clock.advance(60_000);
  assert.equal(passes.length, 2);
  assert.equal(c.reconciles, 2);
});

test("the manager runs controllers only while the store says this replica leads", async () => {
  const store = new MemoryStore();
  let onChange: ((leader: boolean) => void) | undefined;
  // A store shared with another replica that leads first.
  const shared = Object.assign(Object.create(store) as Store, {
    lead: (cb: (leader: boolean) => void) => {
      onChange = cb;
      return async () => undefined;
    },
  });
  const clock = new FakeClock();
  const { c, passes, nodes } = nodeController(shared, clock, () => undefined);
  let lost = 0;
  const manager = new ControllerManager({ store: shared, log: silentLogger, onLost: () => void lost++ });
  manager.add(c);
  await manager.start();
  assert.equal(manager.leading, false);
  await nodes.create(node());
  c.enqueue("anything");
  await clock.advance(60_000);
  assert.deepEqual(passes, [], "a follower never reconciles");
  onChange!(true);
  await until(() => (passes.length > 0 ? true : undefined), "reconciles once it leads");
  assert.equal(manager.leading, true);
  onChange!(false);
  assert.equal(lost, 1, "losing the lead is reported");
  await manager.stop();
});
