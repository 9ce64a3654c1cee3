import assert from "node:assert/strict";
import { it } from "node:test";
import { RowQueue } from "./row-queue.js";

it("runs calls on one key one at a time, in order, and other keys alongside; a failure does not block the next", async () => {
  const q = new RowQueue();
  const log: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const first = q.run("a", async () => {
    log.push("a1 start");
    await gate;
    log.push("a1 end");
    throw new Error("a1 failed");
  });
  const second = q.run("a", async () => (log.push("a2"), 2));
  const other = await q.run("b", async () => (log.push("b1"), 1));
  assert.equal(other, 1);
  assert.deepEqual(log, ["a1 start", "b1"]);
  release();
  await assert.rejects(first, /a1 failed/);
  assert.equal(await second, 2);
  assert.deepEqual(log, ["a1 start", "b1", "a1 end", "a2"]);
  await new Promise((r) => setImmediate(r));
  assert.equal(q.size, 0, "no key is kept once its calls are done");
});
