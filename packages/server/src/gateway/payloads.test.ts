import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { createClient, type Client } from "@connectrpc/connect";
import { compressionGzip, createGrpcTransport } from "@connectrpc/connect-node";
import { Binary, BSON } from "bson";
import { MemoryGateway } from "@quantix/api/gen/virtualdom/v1/gateway_pb.js";
import { gzipWherePays } from "@quantix/rpc";
import { rejection, startTestServer, type TestServer } from "@quantix/testing";
import { startOnEngine, STORE_ENGINES } from "../testing/engine-server.js";

const id = (s: string) => new TextEncoder().encode(s);
const clock = (n: number) => ({ entries: { w: BigInt(n) } });
const MB100 = 100_000_000;
/** BSON.serialize writes through an internal buffer of 17 MB: a larger document needs a larger one. */
function serialize(doc: object): Uint8Array {
  BSON.setInternalBufferSize(BSON.calculateObjectSize(doc) + 1024);
  const out = BSON.serialize(doc);
  BSON.setInternalBufferSize(17 * 1024 * 1024);
  return out;
}

for (const engine of STORE_ENGINES) {
  describe(`MemoryGateway payloads (${engine} store)`, () => {
    let s: TestServer;
    let gw: Client<typeof MemoryGateway>;
    let stop: () => Promise<void>;
    before(async () => {
      const started = await startOnEngine(engine, { defaultDeadlineMs: 120_000 });
      s = started.server;
      stop = () => started.close();
      gw = createClient(MemoryGateway, createGrpcTransport({ baseUrl: s.url, readMaxBytes: 200 * 1024 * 1024, writeMaxBytes: 200 * 1024 * 1024 }));
    });
    after(() => stop?.());

    it("a 100 MB document is written and read back byte-identical, also at its older version", async () => {
      const node = id("big/one");
      const payload = randomBytes(MB100);
      const first = await gw.writeDiff({ nodeId: node, diffBson: serialize({ $set: { blob: new Binary(payload), name: "big" } }), vectorClock: clock(1) }, { timeoutMs: 120_000 });
      const second = await gw.writeDiff({ nodeId: node, diffBson: BSON.serialize({ $set: { name: "bigger" } }), vectorClock: clock(2) }, { timeoutMs: 120_000 });
      const now = await gw.readSnapshot({ nodeId: node }, { timeoutMs: 120_000 });
      assert.equal(now.version, second.newVersion);
      const doc = BSON.deserialize(now.snapshotBson, { promoteBuffers: true }) as { blob: Buffer; name: string };
      assert.equal(doc.name, "bigger");
      assert.ok(Buffer.compare(doc.blob, payload) === 0, "the payload comes back byte for byte");
      const then = await gw.readSnapshot({ nodeId: node, version: first.newVersion }, { timeoutMs: 120_000 });
      const old = BSON.deserialize(then.snapshotBson, { promoteBuffers: true }) as { blob: Buffer; name: string };
      assert.equal(old.name, "big");
      assert.ok(Buffer.compare(old.blob, payload) === 0);
      const listed = await gw.listNodes({ nodeIdPrefix: id("big/") });
      assert.ok(Number(listed.nodes[0]!.sizeBytes) > MB100);
      await gw.deleteNode({ nodeId: node });
    });

    it("a diff over 100 MiB is refused, saying the limit, and nothing is written", async () => {
      const node = id("big/too-large");
      const err = await rejection(gw.writeDiff({ nodeId: node, diffBson: serialize({ $set: { blob: new Binary(Buffer.alloc(101 * 1024 * 1024)) } }), vectorClock: clock(1) }, { timeoutMs: 120_000 }));
      assert.ok(err.code === 8 || err.code === 3, err.message);
      assert.match(err.rawMessage, /104857600|100 MiB|larger than/);
      assert.equal((await rejection(gw.readSnapshot({ nodeId: node }))).code, 5);
    });
  });
}

describe("MemoryGateway compression", () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer({ demo: false });
  });
  after(() => s.close());

  it("gzips a compressible response over 1 KiB, not an incompressible one; accepts gzipped requests", async () => {
    // Requests gzipped whatever their size (they take the Connect router)...
    const writer = createClient(MemoryGateway, createGrpcTransport({ baseUrl: s.url, acceptCompression: [compressionGzip], sendCompression: compressionGzip, compressMinBytes: 0 }));
    const text = "the same words again and again ".repeat(1000);
    await writer.writeDiff({ nodeId: id("z/text"), diffBson: BSON.serialize({ $set: { text } }), vectorClock: clock(1) });
    await writer.writeDiff({ nodeId: id("z/noise"), diffBson: BSON.serialize({ $set: { noise: new Binary(randomBytes(64 * 1024)) } }), vectorClock: clock(1) });
    // ...reads not (the gRPC fast path), accepting gzip: it is used where it pays.
    const reader = createClient(MemoryGateway, createGrpcTransport({ baseUrl: s.url, acceptCompression: [compressionGzip] }));
    const encodings: string[] = [];
    const read = async (name: string) => {
      const r = await reader.readSnapshot({ nodeId: id(name) }, { onHeader: (h) => encodings.push(`${name}:${h.get("grpc-encoding") ?? "identity"}`) });
      return r.snapshotBson.length;
    };
    assert.ok((await read("z/text")) > 30_000);
    assert.ok((await read("z/noise")) > 64 * 1024);
    assert.deepEqual(encodings, ["z/text:gzip", "z/noise:identity"]);
  });

  it("on the Connect router, incompressible messages go in gzip's stored blocks, compressible ones shrink", async () => {
    const noise = randomBytes(256 * 1024);
    const stored = await gzipWherePays.compress(noise);
    assert.ok(stored.length >= noise.length && stored.length < noise.length + 1024, `stored: ${stored.length}`);
    const text = Buffer.from("the same words again and again ".repeat(8000));
    const packed = await gzipWherePays.compress(text);
    assert.ok(packed.length < text.length / 10, `packed: ${packed.length}`);
    assert.ok(Buffer.from(await gzipWherePays.decompress(stored, 1 << 20)).equals(noise));
  });
});
