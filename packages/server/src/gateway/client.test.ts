import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, connect as tcpConnect, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { ChangeType, WriteOutcome, type ChangeEvent } from "@quantix/api/gen/virtualdom/v1/gateway_pb.js";
import { createSimulatedHost } from "@quantix/agent";
import { silentLogger } from "@quantix/rpc";
import { until } from "@quantix/testing";
import { deserialize, serialize } from "bson";
import { startControlPlane, type ControlPlane } from "../app.js";
import { loadConfig } from "../config.js";
import { backoffMs, DEFAULT_RETRY } from "./client-retry.js";
import { GatewayClient, WriterClock, type RetryEvent } from "./client.js";

const id = (s: string) => new TextEncoder().encode(s);
const set = (fields: Record<string, unknown>) => serialize({ $set: fields });
const quick = { initialBackoffMs: 10, maxBackoffMs: 100, maxAttempts: 500, maxTotalMs: 30_000 };

/** A control plane serving the MemoryGateway: memory store, or embedded under `dataDir` (durable across restarts). */
async function startGateway(o: { port?: number; dataDir?: string } = {}): Promise<ControlPlane> {
  const store = o.dataDir ? { kind: "embedded" as const, dataDir: o.dataDir } : { kind: "memory" as const };
  const config = loadConfig({}, { host: "127.0.0.1", port: o.port ?? 0, store, logLevel: "silent", demo: false, defaultDeadlineMs: 10_000, shutdownGraceMs: 500 });
  return startControlPlane(config, { log: silentLogger, simulatedHosts: createSimulatedHost, adminPassword: "client-test-admin-password", announce: () => undefined });
}

/** A TCP relay in front of a server that counts the bytes clients send, and can stop relaying on the connections it has (a peer gone silent). */
async function relay(port: number): Promise<{ port: number; bytesUp: () => number; freeze: () => void; close: () => void }> {
  let up = 0;
  const pairs: [Socket, Socket][] = [];
  const server: Server = createServer((c) => {
    const s = tcpConnect(port, "127.0.0.1");
    const pair: [Socket, Socket] = [c, s];
    pairs.push(pair);
    c.on("data", (d: Buffer) => {
      if (pairs.includes(pair)) s.write(d);
      up += d.length;
    });
    s.on("data", (d: Buffer) => pairs.includes(pair) && c.write(d));
    for (const x of pair) x.on("error", () => undefined).on("close", () => pair.forEach((y) => y.destroy()));
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as { port: number }).port,
    bytesUp: () => up,
    // The frozen connections stay open but carry nothing more: only a keepalive PING can tell.
    freeze: () => void pairs.splice(0),
    close: () => {
      server.close();
      for (const p of pairs) p.forEach((x) => x.destroy());
    },
  };
}

describe("WriterClock", () => {
  test("increments its own entry before each write and merges what it observes", () => {
    const w = new WriterClock("a");
    assert.deepEqual(w.next().entries, { a: 1n });
    w.observe({ b: 3n, a: 0n });
    assert.deepEqual(w.next().entries, { a: 2n, b: 3n });
    assert.ok(w.covers({ a: 2n, b: 1n }));
    assert.ok(!w.covers({ c: 1n }));
    assert.throws(() => new WriterClock(""), /writerId must be 1-128 characters/);
  });

  test("backoff grows exponentially up to its cap, with full jitter", () => {
    assert.equal(backoffMs(DEFAULT_RETRY, 1, () => 1), 50);
    assert.equal(backoffMs(DEFAULT_RETRY, 4, () => 1), 400);
    assert.equal(backoffMs(DEFAULT_RETRY, 20, () => 1), 2000);
    assert.equal(backoffMs(DEFAULT_RETRY, 3, () => 0), 0);
  });
});

describe("GatewayClient against a control plane", () => {
  let cp: ControlPlane;
  before(async () => {
    cp = await startGateway();
  });
  after(() => cp.close());

  test("spreads concurrent calls over its connections, one TCP connection each", async () => {
    const client = new GatewayClient({ baseUrl: cp.url, connections: 4 });
    try {
      const w = new WriterClock("spread");
      await client.write(w, id("spread"), set({ n: 0 }));
      await Promise.all(Array.from({ length: 64 }, () => client.readSnapshot({ nodeId: id("spread") })));
      const stats = client.stats();
      assert.equal(stats.length, 4);
      for (const s of stats) assert.ok(s.calls >= 8, `connection ${s.index} took ${s.calls} of 65 calls`);
      const ports = new Set(stats.flatMap((s) => s.localPorts));
      assert.equal(ports.size, 4, `four TCP connections: ${[...ports].join(", ")}`);
    } finally {
      client.close();
    }
  });

  test("a retried write with the same clock is not applied twice; DeleteNode and a refused write are not retried", async () => {
    const retries: RetryEvent[] = [];
    const client = new GatewayClient({ baseUrl: cp.url, retry: quick, onRetry: (e) => retries.push(e) });
    try {
      const w = new WriterClock("idem");
      const clock = w.next();
      const req = { nodeId: id("idem"), diffBson: set({ x: 1 }), vectorClock: clock, writerId: "idem" };
      const first = await client.writeDiff(req);
      assert.equal(first.outcome, WriteOutcome.APPLIED);
      const again = await client.writeDiff(req);
      assert.equal(again.outcome, WriteOutcome.DUPLICATE);
      assert.equal(again.newVersion, first.newVersion);
      const bad = await client.writeDiff({ ...req, diffBson: serialize({ $rename: { x: "y" } }), vectorClock: w.next() }).catch((e: unknown) => ConnectError.from(e));
      assert.equal((bad as ConnectError).code, Code.InvalidArgument);
      await client.deleteNode({ nodeId: id("idem") });
      const second = await client.deleteNode({ nodeId: id("idem") }).catch((e: unknown) => ConnectError.from(e));
      assert.equal((second as ConnectError).code, Code.NotFound);
      assert.deepEqual(retries, []);
    } finally {
      client.close();
    }
  });

  test("requests over 1 KiB go gzip-compressed", async () => {
    const r = await relay(cp.port);
    const client = new GatewayClient({ baseUrl: `http://127.0.0.1:${r.port}`, connections: 1 });
    try {
      const big = "quantix ".repeat(128 * 1024); // 1 MiB, compressible
      const w = new WriterClock("gzip");
      const res = await client.write(w, id("gzip"), set({ text: big }));
      assert.equal(res.outcome, WriteOutcome.APPLIED);
      assert.ok(r.bytesUp() < 100 * 1024, `1 MiB diff sent as ${r.bytesUp()} bytes`);
      const back = await client.readSnapshot({ nodeId: id("gzip") });
      assert.equal(deserialize(back.snapshotBson)["text"], big);
    } finally {
      client.close();
      r.close();
    }
  });

  test("a connection gone silent fails its keepalive PING; subscribe() resumes on a new one without a gap", async () => {
    const r = await relay(cp.port);
    const resumes: RetryEvent[] = [];
    const client = new GatewayClient({ baseUrl: `http://127.0.0.1:${r.port}`, connections: 1, pingIntervalMs: 100, pingTimeoutMs: 200, retry: quick, onRetry: (e) => resumes.push(e) });
    const writer = new GatewayClient({ baseUrl: cp.url });
    const abort = new AbortController();
    try {
      const w = new WriterClock("ping");
      const node = id("ping");
      const events: ChangeEvent[] = [];
      const reading = (async () => {
        for await (const ev of client.subscribe({ nodeIds: [node] }, { signal: abort.signal })) events.push(ev);
      })();
      await until(() => events.some((e) => e.type === ChangeType.SYNCED) || undefined, "SYNCED");
      await writer.write(w, node, set({ n: 1 }));
      await until(() => events.filter((e) => e.type === ChangeType.DIFF).length === 1 || undefined, "the first change");
      r.freeze();
      for (let n = 2; n <= 4; n++) await writer.write(w, node, set({ n }));
      await until(() => events.filter((e) => e.type === ChangeType.DIFF).length === 4 || undefined, "the changes made while the connection was silent", 15_000);
      abort.abort();
      await reading;
      assert.ok(resumes.length >= 1, "resumed at least once");
      assert.ok(client.stats()[0]!.replaced >= 1 || client.stats()[0]!.localPorts.length >= 2, JSON.stringify(client.stats()));
      const diffs = events.filter((e) => e.type === ChangeType.DIFF).map((e) => deserialize(e.diffBson)["$set"].n as number);
      assert.deepEqual(diffs, [1, 2, 3, 4]);
    } finally {
      abort.abort();
      client.close();
      writer.close();
      r.close();
    }
  });

  test("subscribe() resumes a subscriber ended RESOURCE_EXHAUSTED for falling behind, without a gap", async () => {
    const resumes: RetryEvent[] = [];
    const client = new GatewayClient({ baseUrl: cp.url, connections: 1, retry: quick, onRetry: (e) => resumes.push(e) });
    const writer = new GatewayClient({ baseUrl: cp.url });
    const abort = new AbortController();
    try {
      const node = id("slow");
      const w = new WriterClock("slow-writer");
      // A subscription that resumes (from a version) reads its history as it consumes it,
      // then follows live changes with a backlog of 1,000 (docs/api/memory-gateway.md).
      const from = (await writer.write(w, node, set({ k: 0 }))).newVersion;
      const it = client.subscribe({ nodeIds: [node], fromVersion: from }, { signal: abort.signal })[Symbol.asyncIterator]();
      assert.equal((await it.next()).value?.type, ChangeType.SYNCED);
      // The subscriber reads nothing while 3,000 changes commit: more than that backlog.
      const n = 3000;
      for (let k = 1; k <= n; k++) await writer.write(w, node, set({ k }));
      const seen: number[] = [];
      const versions: bigint[] = [];
      while (seen.length < n) {
        const ev = (await it.next()).value as ChangeEvent;
        if (ev.type !== ChangeType.DIFF) continue;
        seen.push(deserialize(ev.diffBson)["$set"].k as number);
        versions.push(ev.version);
      }
      abort.abort();
      await it.return?.(undefined);
      assert.ok(resumes.some((r) => r.error.code === Code.ResourceExhausted), `ended for falling behind and resumed: ${resumes.map((r) => r.error.code).join(", ")}`);
      assert.deepEqual(seen, Array.from({ length: n }, (_, i) => i + 1), "every change once, in order");
      assert.ok(versions.every((v, i) => i === 0 || v > versions[i - 1]!), "increasing versions");
    } finally {
      abort.abort();
      client.close();
      writer.close();
    }
  });

  test("a call's deadline bounds its retries against a server that is not there", async () => {
    const retries: RetryEvent[] = [];
    const gone = await startGateway();
    const url = gone.url;
    await gone.close();
    const client = new GatewayClient({ baseUrl: url, retry: quick, onRetry: (e) => retries.push(e) });
    try {
      const t0 = performance.now();
      const err = await client.readSnapshot({ nodeId: id("x") }, { timeoutMs: 400 }).then(() => undefined, (e: unknown) => ConnectError.from(e));
      const took = performance.now() - t0;
      // The last attempt's failure, or the deadline itself when it ran out during an attempt.
      assert.ok(err?.code === Code.Unavailable || err?.code === Code.DeadlineExceeded, String(err));
      assert.ok(took < 2000, `gave up after ${took.toFixed(0)} ms`);
      assert.ok(retries.length >= 2, `${retries.length} retries`);
      retries.length = 0;
      const del = await client.deleteNode({ nodeId: id("x") }).then(() => undefined, (e: unknown) => ConnectError.from(e));
      assert.equal(del?.code, Code.Unavailable);
      assert.equal(retries.length, 0, "DeleteNode is never retried");
    } finally {
      client.close();
    }
  });
});

describe("GatewayClient across a server restart (embedded store)", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "quantix-gw-client-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("a write retried while the server restarts on the same port: UNAVAILABLE first, then applied once", async () => {
    const dataDir = join(dir, "retry");
    let cp = await startGateway({ dataDir });
    const port = cp.port;
    const retries: RetryEvent[] = [];
    const client = new GatewayClient({ baseUrl: cp.url, retry: quick, onRetry: (e) => retries.push(e) });
    try {
      const w = new WriterClock("restart");
      await client.write(w, id("restart"), set({ n: 1 }));
      await cp.close();
      const pending = client.write(w, id("restart"), set({ n: 2 }));
      await until(() => retries.find((r) => r.error.code === Code.Unavailable), "a retry after UNAVAILABLE");
      cp = await startGateway({ port, dataDir });
      const res = await pending;
      assert.equal(res.outcome, WriteOutcome.APPLIED);
      assert.equal(deserialize((await client.readSnapshot({ nodeId: id("restart") })).snapshotBson)["n"], 2);
      const versions = await client.listVersions({ nodeId: id("restart") });
      assert.equal(versions.versions.length, 2, "each write applied once");
    } finally {
      client.close();
      await cp.close();
    }
  });

  test("subscribe() resumes after the server restarts, from the last version it saw, with no gap", async () => {
    const dataDir = join(dir, "resume");
    let cp = await startGateway({ dataDir });
    const port = cp.port;
    const resumes: RetryEvent[] = [];
    const client = new GatewayClient({ baseUrl: cp.url, retry: quick, onRetry: (e) => resumes.push(e) });
    const abort = new AbortController();
    const node = id("resume");
    const w = new WriterClock("resume-writer");
    const events: ChangeEvent[] = [];
    const diffs = () => events.filter((e) => e.type === ChangeType.DIFF);
    try {
      const reading = (async () => {
        for await (const ev of client.subscribe({ nodeIds: [node] }, { signal: abort.signal })) events.push(ev);
      })();
      await until(() => events.some((e) => e.type === ChangeType.SYNCED) || undefined, "SYNCED");
      for (let n = 1; n <= 3; n++) await client.write(w, node, set({ n }));
      await until(() => diffs().length === 3 || undefined, "three changes");
      await cp.close();
      await until(() => resumes.length > 0 || undefined, "a resume attempt while the server is down");
      // While the subscriber cannot reach it: the same store, served on another port, takes three more writes.
      const other = await startGateway({ dataDir });
      const side = new GatewayClient({ baseUrl: other.url });
      for (let n = 4; n <= 6; n++) await side.write(w, node, set({ n }));
      side.close();
      await other.close();
      cp = await startGateway({ port, dataDir });
      await until(() => diffs().length === 6 || undefined, "the three missed changes", 15_000);
      await client.write(w, node, set({ n: 7 }));
      await until(() => diffs().length === 7 || undefined, "a live change after the resume");
      abort.abort();
      await reading;
      assert.deepEqual(diffs().map((e) => deserialize(e.diffBson)["$set"].n as number), [1, 2, 3, 4, 5, 6, 7]);
      const versions = diffs().map((e) => e.version);
      assert.deepEqual(versions, [...versions].sort((a, b) => (a < b ? -1 : 1)), "in version order");
      assert.equal(new Set(versions).size, 7, "no duplicate");
      assert.ok(resumes.some((r) => r.fromVersion === versions[2]), `resumed from version ${versions[2]}: ${resumes.map((r) => r.fromVersion).join(", ")}`);
    } finally {
      abort.abort();
      client.close();
      await cp.close();
    }
  });
});
