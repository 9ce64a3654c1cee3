import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BSON } from "bson";
import { ChangeType, MemoryGateway, WriteOutcome } from "@quantix/api/gen/virtualdom/v1/gateway_pb.js";
import { startPostgres, startTestServer, until, type TestPostgres, type TestServer } from "@quantix/testing";
import { covers } from "./clock.js";

const WRITERS = 6;
const WRITES = 15;
const node = new TextEncoder().encode("race/doc");

interface Done {
  readonly writer: string;
  readonly k: number;
  readonly clock: Map<string, bigint>;
  readonly version: bigint;
  readonly outcome: WriteOutcome;
  readonly concurrent: readonly bigint[];
  readonly conflicts: readonly string[];
}

describe("concurrent writers on two replicas of one PostgreSQL: real vector-clock races", () => {
  let pg: TestPostgres;
  const servers: TestServer[] = [];
  before(async () => {
    pg = await startPostgres();
    const url = await pg.createDatabase("race");
    for (let i = 0; i < 2; i++) servers.push(await startTestServer({ demo: false, store: { kind: "postgres", url } }));
  });
  after(async () => {
    for (const s of servers) await s.close();
    await pg?.stop();
  });

  it("every write is applied once, its outcome names exactly the changes it had not seen, and retries are not applied again", async () => {
    const clients: Client<typeof MemoryGateway>[] = servers.map((s) => createClient(MemoryGateway, createGrpcTransport({ baseUrl: s.url })));
    const done: Done[] = [];
    await Promise.all(
      Array.from({ length: WRITERS }, async (_, i) => {
        const me = `w${i}`;
        const gw = clients[i % clients.length]!;
        // What this writer has seen: its own writes, and the node clocks its responses carried.
        const seen = new Map<string, bigint>();
        for (let k = 1; k <= WRITES; k++) {
          seen.set(me, BigInt(k));
          const clock = new Map(seen);
          const req = { nodeId: node, diffBson: BSON.serialize({ $set: { [`${me}.n`]: k, shared: `${me}-${k}` } }), vectorClock: { entries: Object.fromEntries(clock) }, writerId: me };
          const r = await gw.writeDiff(req);
          done.push({ writer: me, k, clock, version: r.newVersion, outcome: r.outcome, concurrent: r.concurrentVersions, conflicts: r.conflicts.map((c) => `${c.path}@${c.concurrentVersion}`) });
          // A retry (the response lost, say) on the other replica: not applied again.
          const again = await clients[(i + 1) % clients.length]!.writeDiff(req);
          assert.equal(again.outcome, WriteOutcome.DUPLICATE, `${me}'s write ${k} retried`);
          // Some writers learn the others' writes from each response (and so descend from them); the others stay blind.
          if (i % 2 === 0) for (const [w, n] of Object.entries(r.vectorClock!.entries)) if (n > (seen.get(w) ?? 0n)) seen.set(w, n);
        }
      }),
    );
    assert.equal(done.length, WRITERS * WRITES);
    const versions = done.map((d) => d.version);
    assert.equal(new Set(versions).size, versions.length, "each write has its own version");
    const byVersion = [...done].sort((a, b) => (a.version < b.version ? -1 : 1));
    let concurrentSeen = 0;
    for (const d of done) {
      // The changes before it whose writer clock it does not cover: exactly what it reports.
      const expected = byVersion.filter((o) => o.version < d.version && !covers(d.clock, o.clock)).map((o) => o.version);
      assert.deepEqual([...d.concurrent], expected, `${d.writer}'s write ${d.k} at ${d.version}`);
      // Every write sets "shared": any concurrent change is a conflict on it.
      assert.equal(d.outcome, expected.length === 0 ? WriteOutcome.APPLIED : WriteOutcome.CONFLICT);
      assert.deepEqual(d.conflicts, expected.map((v) => `shared@${v}`));
      concurrentSeen += expected.length;
    }
    assert.ok(concurrentSeen > 0, "the writers did race");
    const history = await clients[0]!.listVersions({ nodeId: node, pageSize: 1000 });
    assert.equal(history.totalCount, WRITERS * WRITES);
    const snap = BSON.deserialize((await clients[1]!.readSnapshot({ nodeId: node })).snapshotBson) as Record<string, unknown>;
    for (let i = 0; i < WRITERS; i++) assert.deepEqual(snap[`w${i}`], { n: WRITES });
    const last = byVersion[byVersion.length - 1]!;
    assert.equal(snap["shared"], `${last.writer}-${last.k}`, "the latest version wins the path all wrote");
  });

  it("a subscriber on one replica sees the other's writes; killed and resumed on the other replica, it misses nothing", async () => {
    const [one, two] = servers.map((s) => createClient(MemoryGateway, createGrpcTransport({ baseUrl: s.url })));
    const doc = new TextEncoder().encode("race/followed");
    const got: bigint[] = [];
    const ctl = new AbortController();
    let synced = false;
    const following = (async () => {
      try {
        for await (const e of one!.subscribeChanges({ nodeIds: [doc] }, { signal: ctl.signal })) {
          if (e.type === ChangeType.SYNCED) synced = true;
          else got.push(e.version);
        }
      } catch {
        // cut off below
      }
    })();
    await until(() => synced || undefined, "subscribed on replica one");
    const written: bigint[] = [];
    const writing = (async () => {
      for (let i = 1; i <= 40; i++) written.push((await two!.writeDiff({ nodeId: doc, diffBson: BSON.serialize({ $set: { i } }), vectorClock: { entries: { w: BigInt(i) } } })).newVersion);
    })();
    await until(() => got.length >= 10 || undefined, "replica one relays replica two's writes");
    // The subscriber's connection is cut mid-stream; it resumes on the other replica from the last version it got.
    ctl.abort();
    await following;
    const resumeFrom = got[got.length - 1]!;
    await writing;
    const rest: bigint[] = [];
    for await (const e of two!.subscribeChanges({ nodeIds: [doc], fromVersion: resumeFrom })) {
      if (e.type === ChangeType.SYNCED) break;
      rest.push(e.version);
    }
    assert.deepEqual([...got, ...rest], written, "every write, once, in order");
  });
});
