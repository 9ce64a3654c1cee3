import assert from "node:assert/strict";
import { test } from "node:test";
import { QuantixError } from "./errors.js";
import { PushIterable, type PushSink } from "./push-iterable.js";

test("pulling a push source yields every item in order, then ends", async () => {
  let sink: PushSink<number> | undefined;
  let stopped = 0;
  const it = new PushIterable<number>((s) => {
    sink = s;
    s.push([1, 2]);
    return () => stopped++;
  });
  const got: number[] = [];
  const done = (async () => {
    for await (const x of it) got.push(x);
  })();
  await new Promise((r) => setImmediate(r));
  sink!.push([3]);
  sink!.end();
  await done;
  assert.deepEqual(got, [1, 2, 3]);
  assert.equal(stopped, 1);
});

test("a pulling consumer that falls behind gets what fit, then RESOURCE_EXHAUSTED", async () => {
  const it = new PushIterable<number>((s) => {
    s.push([1, 2, 3, 4, 5]);
    return () => undefined;
  }, 3);
  const got: number[] = [];
  await assert.rejects(
    (async () => {
      for await (const x of it) got.push(x);
    })(),
    (e: unknown) => e instanceof QuantixError && e.code === "resource_exhausted",
  );
  assert.deepEqual(got, [1, 2, 3]);
});

test("breaking out of the loop stops the source", async () => {
  let stopped = false;
  const it = new PushIterable<number>((s) => {
    s.push([1, 2, 3]);
    return () => (stopped = true);
  });
  for await (const x of it) if (x === 1) break;
  assert.ok(stopped);
});
