import assert from "node:assert/strict";
import { test } from "node:test";
import { until } from "@quantix/testing";
import { WorkQueue, type ScheduleFn } from "./work-queue.js";

/** Timers a test fires by hand: records each requested delay. */
function manualTimers() {
  const due: { fn: () => void; ms: number; cancelled: boolean }[] = [];
  const schedule: ScheduleFn = (fn, ms) => {
    const t = { fn, ms, cancelled: false };
    due.push(t);
    return () => void (t.cancelled = true);
  };
  /** Fires every live timer once, as if time passed. */
  const fire = () => due.splice(0).filter((t) => !t.cancelled).forEach((t) => t.fn());
  return { schedule, due, fire };
}

test("a failing key is retried after 200 ms doubling to 30 s, and a success resets the delay", async () => {
  const timers = manualTimers();
  let failing = true;
  const runs: string[] = [];
  const q = new WorkQueue(async (key) => {
    runs.push(key);
    if (failing) throw new Error("agent busy");
  }, () => {}, { schedule: timers.schedule });
  q.add("vm:a");
  const delays: number[] = [];
  for (let i = 0; i < 10; i++) {
    await q.idle();
    assert.equal(timers.due.length, 1, "one retry scheduled per failure");
    delays.push(timers.due[0]!.ms);
    if (i < 9) timers.fire();
  }
  assert.deepEqual(delays, [200, 400, 800, 1600, 3200, 6400, 12_800, 25_600, 30_000, 30_000]);
  assert.equal(runs.length, 10);
  failing = false;
  timers.fire();
  await q.idle();
  assert.equal(runs.length, 11);
  assert.equal(timers.due.length, 0, "no retry after a success");
  failing = true;
  q.add("vm:a");
  await q.idle();
  assert.equal(timers.due[0]!.ms, 200, "the delay starts over after a success");
  await q.close();
});

test("keys back off independently, and a success cancels the key's scheduled retry", async () => {
  const timers = manualTimers();
  const bad = new Set(["vm:a", "vm:b"]);
  const q = new WorkQueue(async (key) => {
    if (bad.has(key)) throw new Error("no");
  }, () => {}, { schedule: timers.schedule });
  q.add("vm:a");
  await q.idle();
  timers.fire();
  await q.idle();
  q.add("vm:b");
  await q.idle();
  assert.deepEqual(timers.due.map((t) => t.ms), [400, 200]);
  bad.delete("vm:a");
  q.add("vm:a");
  await q.idle();
  assert.equal(timers.due[0]!.cancelled, true, "vm:a's retry is cancelled by its success");
  assert.equal(timers.due[1]!.cancelled, false);
  await q.close();
  assert.equal(timers.due[1]!.cancelled, true, "close drops scheduled retries");
});

test("with real timers a passing failure is retried within a second, not at the next resync", async () => {
  let calls = 0;
  const errors: number[] = [];
  const q = new WorkQueue(async () => {
    calls++;
    if (calls < 3) throw new Error("transient");
  }, (_key, _err, retryInMs) => errors.push(retryInMs));
  q.add("vm:x");
  await until(() => (calls === 3 ? true : undefined), "the third attempt", 5000);
  assert.deepEqual(errors, [200, 400]);
  await q.close();
});

test("a pass starts in a turn of its own, after the enqueuing turn's code and microtasks; keys added within one turn share one pass", async () => {
  const order: string[] = [];
  const q = new WorkQueue(async (key) => {
    order.push(`pass ${key}`);
  }, () => {});
  // As a store write's watch event enqueues a key in the middle of an RPC about to answer.
  q.add("vm:a");
  q.add("vm:a");
  q.add("vm:b");
  order.push("answer");
  await Promise.resolve();
  await Promise.resolve();
  order.push("microtasks of the turn");
  await q.idle();
  assert.deepEqual(order, ["answer", "microtasks of the turn", "pass vm:a", "pass vm:b"]);
  await q.close();
});

test("a key added while its pass runs is passed again afterwards, once", async () => {
  let release!: () => void;
  const runs: string[] = [];
  const q = new WorkQueue(async (key) => {
    runs.push(key);
    if (runs.length === 1) await new Promise<void>((r) => (release = r));
  }, () => {});
  q.add("vm:a");
  await until(() => (runs.length === 1 ? true : undefined), "the first pass", 5000);
  q.add("vm:a");
  q.add("vm:a");
  release();
  await q.idle();
  assert.deepEqual(runs, ["vm:a", "vm:a"]);
  await q.close();
});

test("close() wakes an idle() waiter whose keys it dropped before their pass started", async () => {
  const runs: string[] = [];
  const q = new WorkQueue(async (key) => {
    runs.push(key);
  }, () => {});
  q.add("vm:a");
  const waiting = q.idle();
  await q.close();
  await waiting;
  assert.deepEqual(runs, [], "a key dropped by close is not passed");
});
