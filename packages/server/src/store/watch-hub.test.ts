import assert from "node:assert/strict";
import { test } from "node:test";
import type { PushSink, WatchEvent } from "@quantix/core";
import { WatchHub } from "./watch-hub.js";

interface Item {
  id: string;
}

/** A sink that records the revisions it receives. */
function recorder(): PushSink<WatchEvent<Item>> & { revs: bigint[]; synced: number } {
  const r = {
    revs: [] as bigint[],
    synced: 0,
    push(events: readonly WatchEvent<Item>[]) {
      for (const e of events) {
        if (e.type === "SYNCED") r.synced++;
        else r.revs.push(e.revision);
      }
    },
    fail(err: unknown) {
      throw err;
    },
    end() {},
  };
  return r;
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

test("a fan-out larger than one turn reaches every watcher once, in order, also watchers that join midway", async () => {
  let rev = 0n;
  const hub = new WatchHub<Item>("item", () => rev);
  const publish = () => {
    rev += 1n;
    hub.publish({ type: "MODIFIED", object: { id: "x" }, revision: rev });
  };
  const early = Array.from({ length: 3000 }, () => recorder());
  early.forEach((s) => hub.subscribe(0n, s));
  publish();
  publish();
  await turn(); // the first turn's watchers have the first batch; the rest are pending
  const late = recorder();
  hub.subscribe(1n, late); // resumes after revision 1 while revision 2 is still being delivered
  publish();
  // Enough turns for both batches to reach 3,001 watchers in turns of 256.
  for (let i = 0; i < 40; i++) await turn();
  for (const s of early) assert.deepEqual(s.revs, [1n, 2n, 3n]);
  assert.deepEqual(late.revs, [2n, 3n], "history replay, then live changes, with no duplicate");
  assert.ok([...early, late].every((s) => s.synced === 1));
});

test("a watcher that unsubscribes during a fan-out receives nothing more", async () => {
  let rev = 0n;
  const hub = new WatchHub<Item>("item", () => rev);
  const sinks = Array.from({ length: 2000 }, () => recorder());
  const stops = sinks.map((s) => hub.subscribe(0n, s));
  rev += 1n;
  hub.publish({ type: "ADDED", object: { id: "a" }, revision: rev });
  await turn();
  stops[1999]!();
  for (let i = 0; i < 5; i++) await turn();
  assert.deepEqual(sinks[0]!.revs, [1n]);
  assert.deepEqual(sinks[1999]!.revs, []);
  assert.equal(hub.watcherCount, 1999);
});

test("changesOf tells a follower of its object's changes in the publishing call, before any watcher; others' changes and a reset too", async () => {
  let rev = 0n;
  const hub = new WatchHub<Item>("item", () => rev);
  const watcher = recorder();
  hub.subscribe(0n, watcher);
  const told: (string | undefined)[] = [];
  const unfollow = hub.changesOf("x", (ev) => told.push(ev && `${ev.type}:${ev.object.id}@${ev.revision}`));
  hub.changesOf("y", () => {
    throw new Error("a listener that throws fails neither the publish nor the others");
  });
  const publish = (id: string) => {
    rev += 1n;
    hub.publish({ type: "MODIFIED", object: { id }, revision: rev });
  };
  publish("x");
  publish("y");
  publish("x");
  assert.deepEqual(told, ["MODIFIED:x@1", "MODIFIED:x@3"], "told at once, of its own object only");
  assert.deepEqual(watcher.revs, [], "watchers are told on a later turn");
  await turn();
  assert.deepEqual(watcher.revs, [1n, 2n, 3n], "watchers still get every change, in order");
  watcher.fail = () => undefined; // a reset fails every watcher
  hub.reset(3n, new Error("history broken"));
  assert.deepEqual(told.slice(2), [undefined], "a reset tells followers that changes may be missed");
  unfollow();
  publish("x");
  assert.equal(told.length, 3, "nothing after unfollowing");
});
