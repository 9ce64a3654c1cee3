import assert from "node:assert/strict";
import { test } from "node:test";
import { KeyedLock } from "./keyed-lock.js";

test("work on one key runs one at a time in arrival order; other keys run alongside", async () => {
  const lock = new KeyedLock();
  const log: string[] = [];
  let releaseFirst!: () => void;
  const gate = new Promise<void>((r) => (releaseFirst = r));
  const a1 = lock.with(["a"], async () => {
    log.push("a1 start");
    await gate;
    log.push("a1 end");
  });
  const a2 = lock.with(["a"], async () => void log.push("a2"));
  const b = lock.with(["b"], async () => void log.push("b"));
  await b;
  assert.deepEqual(log, ["a1 start", "b"], "b did not wait for a; a2 did");
  assert.equal(lock.holds("a"), true);
  releaseFirst();
  await Promise.all([a1, a2]);
  assert.deepEqual(log, ["a1 start", "b", "a1 end", "a2"]);
  assert.equal(lock.size, 0, "no key stays held");
});

test("a failing holder releases its keys; several keys are taken in sorted order", async () => {
  const lock = new KeyedLock();
  await assert.rejects(lock.with(["x", "y"], async () => Promise.reject(new Error("boom"))), /boom/);
  const order: string[] = [];
  await Promise.all([lock.with(["y", "x"], async () => void order.push("yx")), lock.with(["x", "y"], async () => void order.push("xy"))]);
  assert.deepEqual(order, ["yx", "xy"]);
  assert.equal(lock.size, 0);
});
