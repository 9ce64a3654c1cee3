import assert from "node:assert/strict";
import { test } from "node:test";
import { PushIterable, type PushSink } from "@quantix/core";
import { observeStream, STOPPED_BY_CONSUMER } from "./observe-stream.js";

/** A push source that hands out the sink it is piped to. */
function source(): { it: PushIterable<number>; sink: () => PushSink<number>; stopped: () => number } {
  let sink: PushSink<number> | undefined;
  let stopped = 0;
  const it = new PushIterable<number>((s) => {
    sink = s;
    return () => stopped++;
  });
  return { it, sink: () => sink!, stopped: () => stopped };
}

test("piped to a consumer that counts, the layers pass its push on (a fan-out calls the consumer directly) and are told the count once, before the end", () => {
  const src = source();
  const events: string[] = [];
  const hooks = { delivered: (n: number) => events.push(`delivered ${n}`), ended: (r: unknown) => events.push(`ended ${String(r)}`), settle: (e: unknown) => e };
  // Two layers, as observeCalls and mapErrors make.
  const observed = observeStream(observeStream(src.it, { settle: (e) => e }), hooks) as PushIterable<number>;
  const got: number[] = [];
  let taken = 0;
  const consumer: PushSink<number> = {
    push: (items) => {
      got.push(...items);
      taken += items.length;
    },
    fail: (err) => events.push(`failed ${String(err)}`),
    end: () => events.push("end"),
    delivered: () => taken,
  };
  observed.pipe(consumer);
  assert.equal(src.sink().push, consumer.push, "the source pushes to the consumer itself");
  src.sink().push([1, 2]);
  src.sink().push([3]);
  assert.deepEqual(events, []);
  src.sink().end();
  assert.deepEqual(got, [1, 2, 3]);
  assert.deepEqual(events, ["delivered 3", "ended undefined", "end"]);
});

test("piped to a consumer that does not count, the layer counts each batch; stopped by the consumer, it ends once with the reason", () => {
  const src = source();
  const events: string[] = [];
  const observed = observeStream(src.it, { delivered: (n) => events.push(`delivered ${n}`), ended: (r) => events.push(`ended ${r === STOPPED_BY_CONSUMER ? "by consumer" : String(r)}`) }) as PushIterable<number>;
  const got: number[] = [];
  const stop = observed.pipe({ push: (items) => got.push(...items), fail: () => undefined, end: () => undefined });
  src.sink().push([1, 2]);
  src.sink().push([3]);
  stop();
  stop();
  // What a source pushes after it was stopped does not count.
  src.sink().push([4]);
  assert.deepEqual(events, ["delivered 2", "delivered 1", "ended by consumer"]);
  assert.deepEqual(got, [1, 2, 3]);
  assert.ok(src.stopped() >= 1, "the source is stopped");
});

test("a stream that fails is mapped by settle and counted before it ends", () => {
  const src = source();
  const events: string[] = [];
  let taken = 0;
  const observed = observeStream(src.it, { delivered: (n) => events.push(`delivered ${n}`), settle: () => new Error("mapped"), ended: (r) => events.push(`ended ${(r as Error).message}`) }) as PushIterable<number>;
  observed.pipe({ push: (items) => (taken += items.length), fail: (err) => events.push(`failed ${(err as Error).message}`), end: () => undefined, delivered: () => taken });
  src.sink().push([1]);
  src.sink().fail(new Error("raw"));
  assert.deepEqual(events, ["delivered 1", "ended mapped", "failed mapped"]);
});
