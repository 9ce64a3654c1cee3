import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { BSON } from "bson";
import { ChangeType, ConflictPolicy, MemoryGateway, WriteOutcome, type ChangeEvent } from "@quantix/api/gen/virtualdom/v1/gateway_pb.js";
import { rejection, startTestServer, until, type TestServer } from "@quantix/testing";
import { startOnEngine, STORE_ENGINES } from "../testing/engine-server.js";

const enc = (o: object) => BSON.serialize(o);
const dec = (b: Uint8Array) => BSON.deserialize(b, { promoteValues: true });
const id = (s: string) => new TextEncoder().encode(s);
const clock = (entries: Record<string, number>) => ({ entries: Object.fromEntries(Object.entries(entries).map(([k, v]) => [k, BigInt(v)])) });

for (const engine of STORE_ENGINES) describe(`MemoryGateway on the control plane (${engine} store)`, () => {
  let s: TestServer;
  let gw: Client<typeof MemoryGateway>;
  let stop: () => Promise<void>;
  before(async () => {
    const started = await startOnEngine(engine);
    s = started.server;
    stop = () => started.close();
    gw = createClient(MemoryGateway, createGrpcTransport({ baseUrl: s.url }));
  });
  after(() => stop?.());

  it("writes, reads back, and says what happened to each write", async () => {
    const node = id("doc/outcomes");
    const a1 = await gw.writeDiff({ nodeId: node, diffBson: enc({ $set: { title: "hello", "body.text": "x" } }), vectorClock: clock({ a: 1 }), writerId: "a", metadata: { message: "first" } });
    assert.equal(a1.success, true);
    assert.equal(a1.outcome, WriteOutcome.APPLIED);
    // A retry with the same clock is not applied again.
    const again = await gw.writeDiff({ nodeId: node, diffBson: enc({ $set: { title: "hello" } }), vectorClock: clock({ a: 1 }), writerId: "a" });
    assert.equal(again.outcome, WriteOutcome.DUPLICATE);
    assert.equal(again.newVersion, a1.newVersion);
    // b has not seen a's write: concurrent, on another path → merged.
    const b1 = await gw.writeDiff({ nodeId: node, diffBson: enc({ $set: { tags: ["x"] } }), vectorClock: clock({ b: 1 }), writerId: "b" });
    assert.equal(b1.outcome, WriteOutcome.MERGED);
    assert.deepEqual(b1.concurrentVersions, [a1.newVersion]);
    // b again, still without a's write, on a's path → a conflict naming both versions.
    const b2 = await gw.writeDiff({ nodeId: node, diffBson: enc({ $set: { "body.text": "from b" } }), vectorClock: clock({ b: 2 }), writerId: "b" });
    assert.equal(b2.outcome, WriteOutcome.CONFLICT);
    assert.deepEqual(
      b2.conflicts.map((c) => [c.path, c.concurrentVersion]),
      [["body.text", a1.newVersion]],
    );
    // Under REJECT the same kind of write changes nothing.
    const err = await rejection(gw.writeDiff({ nodeId: node, diffBson: enc({ $set: { title: "from c" } }), vectorClock: clock({ c: 1 }), writerId: "c", onConflict: ConflictPolicy.REJECT }));
    assert.equal(err.code, 10 /* ABORTED */);
    assert.match(err.rawMessage, /'title' \(version \d+\)/);
    // a, having seen everything, writes on top: applied.
    const merged = await gw.readSnapshot({ nodeId: node });
    const a2 = await gw.writeDiff({ nodeId: node, diffBson: enc({ $inc: { n: 1 } }), vectorClock: { entries: { ...merged.vectorClock!.entries, a: 2n } }, writerId: "a" });
    assert.equal(a2.outcome, WriteOutcome.APPLIED);
    const snap = await gw.readSnapshot({ nodeId: node });
    assert.deepEqual(dec(snap.snapshotBson), { title: "hello", body: { text: "from b" }, tags: ["x"], n: 1 });
    assert.equal(snap.version, a2.newVersion);
    assert.deepEqual(snap.vectorClock!.entries, { a: 2n, b: 2n });
    // Older versions stay readable.
    const old = await gw.readSnapshot({ nodeId: node, version: a1.newVersion });
    assert.deepEqual(dec(old.snapshotBson), { title: "hello", body: { text: "x" } });
    assert.equal(old.metadata["message"], "first");
    const versions = await gw.listVersions({ nodeId: node });
    assert.deepEqual(
      versions.versions.map((v) => v.version),
      [a2.newVersion, b2.newVersion, b1.newVersion, a1.newVersion],
    );
    assert.equal(versions.versions[0]!.author, "local operator");
    assert.equal(versions.versions[0]!.writerId, "a");
  });

  it("refuses bad input, naming the field, and changes nothing", async () => {
    const node = id("doc/bad");
    const cases: [string, Promise<unknown>, RegExp][] = [
      ["not BSON", gw.writeDiff({ nodeId: node, diffBson: new Uint8Array([1, 2, 3]), vectorClock: clock({ a: 1 }) }), /diff_bson/],
      ["a replacement", gw.writeDiff({ nodeId: node, diffBson: enc({ title: "x" }), vectorClock: clock({ a: 1 }) }), /diff_bson/],
      ["no clock", gw.writeDiff({ nodeId: node, diffBson: enc({ $set: { a: 1 } }) }), /vector_clock/],
      ["no node id", gw.writeDiff({ nodeId: new Uint8Array(0), diffBson: enc({ $set: { a: 1 } }), vectorClock: clock({ a: 1 }) }), /node_id/],
      ["writer without its entry", gw.writeDiff({ nodeId: node, diffBson: enc({ $set: { a: 1 } }), vectorClock: clock({ b: 1 }), writerId: "a" }), /vector_clock/],
    ];
    for (const [what, call, field] of cases) {
      const e = await rejection(call);
      assert.equal(e.code, 3, `${what}: ${e.message}`);
      assert.match(e.rawMessage, field, what);
    }
    assert.equal((await rejection(gw.readSnapshot({ nodeId: node }))).code, 5);
    // A clock gone backwards: a's second write claims to be its first.
    await gw.writeDiff({ nodeId: node, diffBson: enc({ $set: { a: 1 } }), vectorClock: clock({ a: 2 }), writerId: "a" });
    const back = await rejection(gw.writeDiff({ nodeId: node, diffBson: enc({ $set: { b: 1 } }), vectorClock: clock({ a: 1, z: 1 }), writerId: "a" }));
    assert.equal(back.code, 3);
    assert.match(back.rawMessage, /clock never goes backwards/);
    assert.deepEqual(dec((await gw.readSnapshot({ nodeId: node })).snapshotBson), { a: 1 });
  });

  it("deletes a node, lists what is left, and a later write creates it afresh", async () => {
    const node = id("list/one");
    const w = await gw.writeDiff({ nodeId: node, diffBson: enc({ $set: { v: 1 } }), vectorClock: clock({ a: 1 }) });
    await gw.writeDiff({ nodeId: id("list/two"), diffBson: enc({ $set: { v: 2 } }), vectorClock: clock({ a: 1 }) });
    assert.equal((await rejection(gw.deleteNode({ nodeId: node, expectedVersion: w.newVersion + 100n }))).code, 10);
    await gw.deleteNode({ nodeId: node, expectedVersion: w.newVersion });
    assert.equal((await rejection(gw.deleteNode({ nodeId: node }))).code, 5);
    const listed = await gw.listNodes({ nodeIdPrefix: id("list/") });
    assert.deepEqual(
      listed.nodes.map((n) => new TextDecoder().decode(n.nodeId)),
      ["list/two"],
    );
    assert.equal((await rejection(gw.readSnapshot({ nodeId: node }))).code, 5);
    assert.deepEqual(dec((await gw.readSnapshot({ nodeId: node, version: w.newVersion })).snapshotBson), { v: 1 });
    await gw.writeDiff({ nodeId: node, diffBson: enc({ $set: { w: 1 } }), vectorClock: clock({ a: 1 }) });
    assert.deepEqual(dec((await gw.readSnapshot({ nodeId: node })).snapshotBson), { w: 1 });
  });

  it("pages nodes by id and by update time", async () => {
    for (let i = 0; i < 7; i++) await gw.writeDiff({ nodeId: id(`page/${i}`), diffBson: enc({ $set: { i } }), vectorClock: clock({ p: 1 }) });
    const seen: string[] = [];
    let token = "";
    do {
      const page = await gw.listNodes({ nodeIdPrefix: id("page/"), pageSize: 3, pageToken: token, orderBy: "updated_at desc" });
      assert.equal(page.totalCount, 7);
      seen.push(...page.nodes.map((n) => new TextDecoder().decode(n.nodeId)));
      token = page.nextPageToken;
    } while (token !== "");
    assert.equal(seen.length, 7);
    assert.deepEqual([...seen].sort(), ["page/0", "page/1", "page/2", "page/3", "page/4", "page/5", "page/6"]);
  });

  it("streams changes in order, and a subscriber that resumes from its last version misses nothing", async () => {
    const node = id("sub/a");
    const other = id("sub/b");
    const ctl = new AbortController();
    const got: ChangeEvent[] = [];
    let synced = false;
    const first = (async () => {
      try {
        for await (const e of gw.subscribeChanges({ nodeIds: [node] }, { signal: ctl.signal })) {
          if (e.type === ChangeType.SYNCED) synced = true;
          else got.push(e);
        }
      } catch {
        // cancelled
      }
    })();
    while (!synced) await new Promise((r) => setTimeout(r, 5));
    for (let i = 1; i <= 5; i++) {
      await gw.writeDiff({ nodeId: node, diffBson: enc({ $set: { i } }), vectorClock: clock({ w: i }) });
      await gw.writeDiff({ nodeId: other, diffBson: enc({ $set: { i } }), vectorClock: clock({ w: i }) });
    }
    while (got.length < 3) await new Promise((r) => setTimeout(r, 5));
    ctl.abort();
    await first;
    const last = got[2]!.version;
    // Resume after the third change: the fourth and fifth come, and nothing of the other node.
    const resumed: ChangeEvent[] = [];
    const ctl2 = new AbortController();
    for await (const e of gw.subscribeChanges({ nodeIds: [node], fromVersion: last }, { signal: ctl2.signal })) {
      if (e.type === ChangeType.SYNCED) break;
      resumed.push(e);
    }
    ctl2.abort();
    const all = [...got.slice(0, 3), ...resumed];
    assert.deepEqual(
      all.map((e) => dec(e.diffBson)),
      [1, 2, 3, 4, 5].map((i) => ({ $set: { i } })),
    );
    for (let i = 1; i < all.length; i++) assert.ok(all[i]!.version > all[i - 1]!.version);
  });

  it("compaction keeps the last versions, every node still readable after the mark, and says OUT_OF_RANGE before it", async () => {
    const a = id("compact/a");
    const b = id("compact/b");
    const big = "x".repeat(300 * 1024); // over the inline limit: a blob on the SQL engines
    const a1 = await gw.writeDiff({ nodeId: a, diffBson: enc({ $set: { big, n: 1 } }), vectorClock: clock({ c: 1 }) });
    const b1 = await gw.writeDiff({ nodeId: b, diffBson: enc({ $set: { n: 1 } }), vectorClock: clock({ c: 1 }) });
    let last = b1;
    for (let i = 2; i <= 6; i++) last = await gw.writeDiff({ nodeId: b, diffBson: enc({ $set: { n: i } }), vectorClock: clock({ c: i }) });
    const gone = id("compact/gone");
    await gw.writeDiff({ nodeId: gone, diffBson: enc({ $set: { n: 1 } }), vectorClock: clock({ c: 1 }) });
    await gw.deleteNode({ nodeId: gone });
    const tail = await gw.writeDiff({ nodeId: b, diffBson: enc({ $set: { n: 7 } }), vectorClock: clock({ c: 7 }) });
    // Keep only the last version: everything before it is compacted.
    const removed = await s.cp.gateway.docs.compact(1n, 1_000_000n);
    assert.ok(removed > 0);
    // a's only change is below the mark: it stays readable (its base kept, with its document).
    const aNow = await gw.readSnapshot({ nodeId: a });
    assert.equal(aNow.version, a1.newVersion);
    assert.equal((dec(aNow.snapshotBson) as { big: string }).big.length, big.length);
    const bAt = await gw.readSnapshot({ nodeId: b, version: tail.newVersion });
    assert.deepEqual(dec(bAt.snapshotBson), { n: 7 });
    // Before the mark: OUT_OF_RANGE, for reads and resumes alike.
    assert.equal((await rejection(gw.readSnapshot({ nodeId: b, version: last.newVersion }))).code, 11);
    const resume = gw.subscribeChanges({ fromVersion: last.newVersion - 1n })[Symbol.asyncIterator]();
    assert.equal((await rejection(resume.next())).code, 11);
    // Only b's last version is listed; the deleted node's history is gone.
    assert.deepEqual((await gw.listVersions({ nodeId: b })).versions.map((v) => v.version), [tail.newVersion]);
    assert.equal((await rejection(gw.listVersions({ nodeId: gone }))).code, 5);
    // Writes go on as before.
    const after = await gw.writeDiff({ nodeId: a, diffBson: enc({ $inc: { n: 1 } }), vectorClock: clock({ c: 2 }) });
    assert.equal(after.outcome, WriteOutcome.APPLIED);
    assert.equal((dec((await gw.readSnapshot({ nodeId: a, version: after.newVersion })).snapshotBson) as { n: number }).n, 2);
  });

  it("browsers' protocols reach it on the same port: Connect JSON over HTTP/1.1 and gRPC-Web", async () => {
    const node = id("browser/doc");
    const json = createClient(MemoryGateway, createConnectTransport({ baseUrl: s.url, httpVersion: "1.1" }));
    const w = await json.writeDiff({ nodeId: node, diffBson: enc({ $set: { from: "connect" } }), vectorClock: clock({ b: 1 }), writerId: "b" });
    const web = createClient(MemoryGateway, createGrpcWebTransport({ baseUrl: s.url, httpVersion: "1.1" }));
    const r = await web.readSnapshot({ nodeId: node });
    assert.equal(r.version, w.newVersion);
    assert.deepEqual(dec(r.snapshotBson), { from: "connect" });
    // A server stream over Connect on HTTP/1.1 too (what a browser's fetch can do).
    const ctl = new AbortController();
    for await (const e of json.subscribeChanges({ nodeIds: [node], includeSnapshots: true }, { signal: ctl.signal })) {
      if (e.type === ChangeType.SYNCED) break;
      assert.equal(e.type, ChangeType.SNAPSHOT);
    }
    ctl.abort();
  });

  it("a subscriber resuming far behind (more changes than a live backlog may hold) gets them all, then SYNCED", async () => {
    const node = id("behind/doc");
    const first = await gw.writeDiff({ nodeId: node, diffBson: enc({ $set: { i: 0 } }), vectorClock: clock({ w: 1 }) });
    for (let i = 1; i <= 1100; i++) await gw.writeDiff({ nodeId: node, diffBson: enc({ $set: { i } }), vectorClock: clock({ w: i + 1 }) });
    const ctl = new AbortController();
    const seen: bigint[] = [];
    for await (const e of gw.subscribeChanges({ nodeIds: [node], fromVersion: first.newVersion }, { signal: ctl.signal })) {
      if (e.type === ChangeType.SYNCED) break;
      seen.push(e.version);
      // A slow reader: the history is read as it is consumed.
      if (seen.length % 500 === 0) await new Promise((r) => setTimeout(r, 50));
    }
    ctl.abort();
    assert.equal(seen.length, 1100);
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i]! > seen[i - 1]!);
  });
});

describe("MemoryGateway rate limit per caller", () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer({ demo: false, rateLimitRps: 2, rateLimitBurst: 3 });
  });
  after(() => s.close());

  it("a caller over its rate gets RESOURCE_EXHAUSTED, and what it refused was not applied", async () => {
    const gw = createClient(MemoryGateway, createGrpcTransport({ baseUrl: s.url }));
    const node = id("limited/doc");
    const outcomes: string[] = [];
    for (let i = 1; i <= 8; i++) {
      try {
        await gw.writeDiff({ nodeId: node, diffBson: enc({ $inc: { n: 1 } }), vectorClock: clock({ w: i }) });
        outcomes.push("ok");
      } catch (err) {
        const e = err as { code?: number; rawMessage?: string };
        assert.equal(e.code, 8, String(e.rawMessage));
        outcomes.push("limited");
      }
    }
    assert.ok(outcomes.includes("limited"), outcomes.join(","));
    const accepted = outcomes.filter((o) => o === "ok").length;
    // Reads are limited too: wait for the bucket to refill.
    const snap = await until(async () => {
      try {
        return await gw.readSnapshot({ nodeId: node });
      } catch {
        return undefined;
      }
    }, "a read once the rate allows", 10_000, 200);
    assert.equal((dec(snap.snapshotBson) as { n: number }).n, accepted);
  });
});
