import assert from "node:assert/strict";
import { test } from "node:test";
import type { Resource } from "@quantix/core";
import { WatchHub } from "../store/watch-hub.js";
import { SharedUpdates, watchFiltered, type FilteredEvent } from "./watch-filter.js";

interface Item extends Resource {
  readonly color: string;
}

const item = (rev: bigint, color: string): Item => Object.freeze({ id: "a", color, resourceVersion: rev }) as unknown as Item;

test("watchers with one filter key share each batch's view; another filter gets its own, with DELETED for an object that stops matching", async () => {
  let rev = 1n;
  const hub = new WatchHub<Item>("item", () => rev);
  const updates = new SharedUpdates<Item, FilteredEvent<Item>>((f) => ({ ...f }));
  const abort = new AbortController();
  const received = (key: string | undefined, color: string) => {
    const got: (readonly FilteredEvent<Item>[])[] = [];
    watchFiltered({ watch: (from, signal) => hub.watch(from, signal) }, 1n, () => Promise.reject(new Error("no snapshot")), (o) => o.color === color, updates, abort.signal, key).pipe({
      push: (batch) => void got.push(batch),
      fail: (err) => assert.fail(String(err)),
      end: () => undefined,
    });
    return got;
  };
  const red1 = received("red", "red");
  const red2 = received("red", "red");
  const blue = received("blue", "blue");
  const unkeyed = received(undefined, "red");
  await new Promise((r) => setImmediate(r));
  const before = item(1n, "red");
  rev = 2n;
  hub.publish({ type: "MODIFIED", object: item(2n, "blue"), previous: before, revision: 2n });
  for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
  const live = (got: (readonly FilteredEvent<Item>[])[]) => got.slice(1); // after SYNCED
  assert.equal(live(red1).length, 1);
  assert.equal(live(red1)[0], live(red2)[0], "one array for both watchers of the key");
  assert.ok(Object.isFrozen(live(red1)[0]));
  assert.deepEqual(live(red1)[0]!.map((u) => u.type), ["DELETED"]);
  assert.deepEqual(live(blue)[0]!.map((u) => u.type), ["ADDED"]);
  assert.deepEqual(live(unkeyed)[0]!.map((u) => u.type), ["DELETED"]);
  assert.notEqual(live(unkeyed)[0], live(red1)[0], "a watcher without a key gets a view of its own");
  assert.equal(live(red1)[0]![0], live(unkeyed)[0]![0], "the update messages themselves are shared");
  abort.abort();
});
