import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BSON } from "bson";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { ConflictPolicy, MemoryGateway, SessionMessageSchema, WriteOutcome, type SessionMessage, type SessionUpdate } from "@quantix/api/gen/virtualdom/v1/gateway_pb.js";
import { startPostgres, startTestServer, until, type TestPostgres, type TestServer } from "@quantix/testing";

const enc = (o: object) => BSON.serialize(o);
const dec = (b: Uint8Array) => BSON.deserialize(b, { promoteValues: true });
const id = (s: string) => new TextEncoder().encode(s);
type Msg = NonNullable<MessageInitShape<typeof SessionMessageSchema>["message"]>;

/** One participant's stream: what it sends, and every update it receives, in order. */
class Participant {
  readonly updates: SessionUpdate[] = [];
  private readonly queue: Msg[] = [];
  private wake: (() => void) | undefined;
  private closed = false;
  readonly done: Promise<unknown>;
  private clockValue = 0n;
  readonly seen = new Map<string, bigint>();

  constructor(
    gw: Client<typeof MemoryGateway>,
    readonly name: string,
  ) {
    const self = this;
    async function* input(): AsyncIterable<SessionMessage> {
      for (;;) {
        while (self.queue.length > 0) yield create(SessionMessageSchema, { message: self.queue.shift()! });
        if (self.closed) return;
        await new Promise<void>((r) => (self.wake = r));
      }
    }
    this.done = (async () => {
      for await (const u of gw.collaborativeSession(input())) {
        this.updates.push(u);
        if (u.update.case === "change") for (const [k, v] of Object.entries(u.update.value.vectorClock?.entries ?? {})) if (v > (this.seen.get(k) ?? 0n)) this.seen.set(k, v);
      }
    })().then(
      () => "ended",
      (err: unknown) => err,
    );
  }

  send(m: Msg): void {
    this.queue.push(m);
    this.wake?.();
  }

  /** Sends an edit with this participant's clock (its own entry incremented, merged with what it has seen). */
  edit(editId: string, diff: object, o: { stale?: boolean; reject?: boolean } = {}): void {
    this.clockValue++;
    const entries: Record<string, bigint> = o.stale ? {} : Object.fromEntries(this.seen);
    entries[this.name] = this.clockValue;
    this.send({ case: "edit", value: { editId, diffBson: enc(diff), vectorClock: { entries }, metadata: {}, onConflict: o.reject ? ConflictPolicy.REJECT : ConflictPolicy.UNSPECIFIED } });
  }

  close(): void {
    this.closed = true;
    this.wake?.();
  }

  of<C extends NonNullable<SessionUpdate["update"]["case"]>>(c: C) {
    return this.updates.filter((u) => u.update.case === c).map((u) => u.update.value) as Extract<SessionUpdate["update"], { case: C }>["value"][];
  }

  ack(editId: string) {
    return until(() => this.of("editAck").find((a) => a.editId === editId), `${this.name}'s ack of ${editId}`);
  }
}

function join(gw: Client<typeof MemoryGateway>, node: string, name: string, fromVersion = 0n): Participant {
  const p = new Participant(gw, name);
  p.send({ case: "join", value: { nodeId: id(node), participantId: name, displayName: name.toUpperCase(), fromVersion, metadata: { color: "red" } } });
  return p;
}

describe("CollaborativeSession (memory store)", () => {
  let s: TestServer;
  let gw: Client<typeof MemoryGateway>;
  before(async () => {
    s = await startTestServer({ demo: false });
    gw = createClient(MemoryGateway, createGrpcTransport({ baseUrl: s.url }));
  });
  after(() => s.close());

  it("two participants: presence, edits in one order with acks after their change, cursors, leave", async () => {
    const alice = join(gw, "session/one", "alice");
    await until(() => alice.of("joined")[0], "alice joined");
    const bob = join(gw, "session/one", "bob");
    const joined = await until(() => bob.of("joined")[0], "bob joined");
    assert.deepEqual(
      joined.participants.map((p) => [p.participantId, p.displayName, p.metadata["color"]]),
      [["alice", "ALICE", "red"]],
    );
    assert.equal(joined.snapshotBson.length, 0, "nothing to show yet: the node does not exist");
    await until(() => alice.of("participantJoined").find((p) => p.participantId === "bob"), "alice sees bob arrive");

    alice.edit("a1", { $set: { title: "draft" } });
    bob.edit("b1", { $set: { body: "text" } });
    const [a1, b1] = [await alice.ack("a1"), await bob.ack("b1")];
    assert.ok(a1.accepted && b1.accepted);
    // Both see both changes, in the same order; each ack follows its own change.
    for (const p of [alice, bob]) {
      await until(() => (p.of("change").length >= 2 ? true : undefined), `${p.name} gets both changes`);
      assert.deepEqual(
        p.of("change").map((c) => c.version),
        [a1.version, b1.version].sort((x, y) => (x < y ? -1 : 1)),
      );
    }
    const order = alice.updates.map((u) => (u.update.case === "change" ? `change@${u.update.value.version}` : u.update.case === "editAck" ? `ack@${u.update.value.version}` : u.update.case));
    assert.ok(order.indexOf(`change@${a1.version}`) < order.indexOf(`ack@${a1.version}`), order.join(" "));

    alice.send({ case: "cursor", value: { path: "title", anchorOffset: 1, headOffset: 3 } });
    const moved = await until(() => bob.of("cursorMoved")[0], "bob sees alice's cursor");
    assert.deepEqual([moved.participantId, moved.cursor?.path, moved.cursor?.headOffset], ["alice", "title", 3]);

    // A bad edit is refused in its ack; the session goes on.
    bob.send({ case: "edit", value: { editId: "bad", diffBson: new Uint8Array([9, 9]), vectorClock: { entries: { bob: 99n } }, metadata: {} } });
    const bad = await bob.ack("bad");
    assert.equal(bad.accepted, false);
    assert.equal(bad.rejectionCode, "INVALID_ARGUMENT");
    // An edit from a stale view on a path changed since: under REJECT refused naming the version, by default applied and reported.
    bob.edit("stale-r", { $set: { title: "bob's" } }, { stale: true, reject: true });
    const r = await bob.ack("stale-r");
    assert.equal(r.accepted, false);
    assert.equal(r.rejectionCode, "ABORTED");
    bob.edit("stale", { $set: { title: "bob's" } }, { stale: true });
    const st = await bob.ack("stale");
    assert.equal(st.outcome, WriteOutcome.CONFLICT);
    assert.deepEqual(
      st.conflicts.map((c) => [c.path, c.concurrentVersion]),
      [["title", a1.version]],
    );

    bob.send({ case: "leave", value: { reason: "done" } });
    assert.equal(await bob.done, "ended");
    const left = await until(() => alice.of("participantLeft")[0], "alice sees bob leave");
    assert.deepEqual([left.participantId, left.reason], ["bob", "done"]);
    alice.close();
    await alice.done;
  });

  it("a participant that rejoins with from_version catches up on what it missed", async () => {
    const carol = join(gw, "session/two", "carol");
    await until(() => carol.of("joined")[0], "carol joined");
    carol.edit("c1", { $set: { n: 1 } });
    const c1 = await carol.ack("c1");
    carol.close();
    await carol.done;
    // While carol is away, dave edits twice.
    const dave = join(gw, "session/two", "dave");
    const dj = await until(() => dave.of("joined")[0], "dave joined");
    assert.deepEqual(dec(dj.snapshotBson), { n: 1 });
    dave.edit("d1", { $inc: { n: 1 } });
    dave.edit("d2", { $set: { m: true } });
    const d2 = await dave.ack("d2");
    const back = join(gw, "session/two", "carol", c1.version);
    const bj = await until(() => back.of("joined")[0], "carol rejoined");
    assert.equal(bj.snapshotBson.length, 0);
    const caught = await until(() => (back.of("change").length >= 2 ? back.of("change") : undefined), "carol catches up");
    assert.deepEqual(
      caught.map((c) => dec(c.diffBson)),
      [{ $inc: { n: 1 } }, { $set: { m: true } }],
    );
    assert.equal(caught[1]!.version, d2.version);
    back.close();
    dave.close();
    await Promise.all([back.done, dave.done]);
  });

  it("a first message other than join fails with FAILED_PRECONDITION", async () => {
    const p = new Participant(gw, "eve");
    p.edit("x", { $set: { a: 1 } });
    const err = (await p.done) as { code?: number; rawMessage?: string };
    assert.equal(err.code, 9);
    assert.match(String(err.rawMessage), /first message of a session must be join/);
    p.close();
  });
});

describe("CollaborativeSession across two replicas on one PostgreSQL", () => {
  let pg: TestPostgres;
  let one: TestServer;
  let two: TestServer;
  before(async () => {
    pg = await startPostgres();
    const url = await pg.createDatabase("sessions");
    one = await startTestServer({ demo: false, store: { kind: "postgres", url } });
    two = await startTestServer({ demo: false, store: { kind: "postgres", url } });
  });
  after(async () => {
    await two?.close();
    await one?.close();
    await pg?.stop();
  });

  it("participants on different replicas see each other and every edit in one order", async () => {
    const gw1 = createClient(MemoryGateway, createGrpcTransport({ baseUrl: one.url }));
    const gw2 = createClient(MemoryGateway, createGrpcTransport({ baseUrl: two.url }));
    const a = join(gw1, "shared/doc", "a");
    await until(() => a.of("joined")[0], "a joined on replica one");
    const b = join(gw2, "shared/doc", "b");
    const bj = await until(() => b.of("joined")[0], "b joined on replica two");
    assert.deepEqual(
      bj.participants.map((p) => p.participantId),
      ["a"],
    );
    await until(() => a.of("participantJoined").find((p) => p.participantId === "b"), "a (replica one) sees b (replica two) arrive");
    for (let i = 0; i < 10; i++) {
      a.edit(`a${i}`, { $push: { log: `a${i}` } });
      b.edit(`b${i}`, { $push: { log: `b${i}` } });
    }
    await b.ack("b9");
    await a.ack("a9");
    const seenBy = async (p: Participant) => (await until(() => (p.of("change").length >= 20 ? p.of("change") : undefined), `${p.name} gets all 20 changes`, 20_000)).map((c) => c.version);
    const [va, vb] = [await seenBy(a), await seenBy(b)];
    assert.deepEqual(va, vb, "one total order on both replicas");
    assert.deepEqual(va, [...va].sort((x, y) => (x < y ? -1 : 1)));
    // The document has all 20 entries (concurrent pushes merge: $push on one array is a conflict reported, and each applies).
    const snap = await gw2.readSnapshot({ nodeId: id("shared/doc") });
    assert.equal((dec(snap.snapshotBson) as { log: string[] }).log.length, 20);
    b.send({ case: "cursor", value: { path: "log", anchorOffset: 0, headOffset: 0 } });
    await until(() => a.of("cursorMoved").find((c) => c.participantId === "b"), "a sees b's cursor across replicas");
    b.send({ case: "leave", value: { reason: "bye" } });
    await until(() => a.of("participantLeft").find((p) => p.participantId === "b" && p.reason === "bye"), "a sees b leave across replicas");
    a.close();
    await Promise.all([a.done, b.done]);
  });
});
