import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor, type Transport } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { RetryInfoSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { NodeSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { NodeService } from "@quantix/api/gen/Quantixkvm/compute/v1/node_service_pb.js";
import { LOCAL_PRINCIPAL, type Principal } from "@quantix/core";
import { principalKey, rateLimit, route, servedByFastPath, silentLogger, startRpcServer, type RpcServer } from "./index.js";

// Per-caller token buckets, on every protocol path: 1 call a second, 3 at once, on a clock
// the test moves (no sleeps, no timing assertions).

let nowMs = 1_000_000;
const paths: boolean[] = [];
// As the authentication interceptor will: a principal from the call (here a test header).
const authenticate: Interceptor = (next) => (req) => {
  paths.push(req.contextValues.get(servedByFastPath));
  const who = req.header.get("x-test-principal");
  if (who) req.contextValues.set(principalKey, { ...LOCAL_PRINCIPAL, kind: "user", id: who, name: who } as Principal);
  return next(req);
};

let server: RpcServer;
before(async () => {
  const nodes = route(NodeService, { getNode: (req) => create(NodeSchema, { id: req.id }) });
  server = await startRpcServer({ host: "127.0.0.1", port: 0, routes: [nodes], log: silentLogger, interceptors: [authenticate, rateLimit({ rps: 1, burst: 3, now: () => nowMs })] });
});
after(() => server.close(1000));

const protocols: Record<string, { transport: () => Transport; fast: boolean }> = {
  "Connect over HTTP/1.1 (the Connect fast path)": { transport: () => createConnectTransport({ baseUrl: server.url, httpVersion: "1.1" }), fast: true },
  "gRPC-Web over HTTP/1.1": { transport: () => createGrpcWebTransport({ baseUrl: server.url, httpVersion: "1.1" }), fast: false },
  "gRPC over h2c (the fast path)": { transport: () => createGrpcTransport({ baseUrl: server.url }), fast: true },
};

async function outcome(p: Promise<unknown>): Promise<"ok" | ConnectError> {
  try {
    await p;
    return "ok";
  } catch (err) {
    return ConnectError.from(err);
  }
}

for (const [name, { transport, fast }] of Object.entries(protocols)) {
  describe(name, () => {
    test("a caller gets its burst, then RESOURCE_EXHAUSTED with RetryInfo until a token is back; others are not affected", async () => {
      const client = createClient(NodeService, transport());
      const me = { headers: { "x-test-principal": `u-${name}` } };
      paths.length = 0;
      const first = await Promise.all([1, 2, 3].map(() => outcome(client.getNode({ id: "n" }, me))));
      assert.deepEqual(first, ["ok", "ok", "ok"]);
      const refused = await outcome(client.getNode({ id: "n" }, me));
      assert.ok(refused instanceof ConnectError);
      assert.equal(refused.code, Code.ResourceExhausted);
      assert.match(refused.rawMessage, /rate limit exceeded: at most 1 calls a second \(3 at once\) per caller; retry in 1\.000 s/);
      const [retry] = refused.findDetails(RetryInfoSchema);
      assert.deepEqual([retry?.retryDelay?.seconds, retry?.retryDelay?.nanos], [1n, 0]);
      assert.ok(paths.every((p) => p === fast), `served by the ${fast ? "fast path" : "Connect router"}`);

      // Another principal has its own bucket; an anonymous caller is keyed by its address.
      assert.equal(await outcome(client.getNode({ id: "n" }, { headers: { "x-test-principal": `other-${name}` } })), "ok");

      // Half a token later, still refused (retry in 0.5 s); a whole token later, one call passes.
      nowMs += 500;
      const half = await outcome(client.getNode({ id: "n" }, me));
      assert.ok(half instanceof ConnectError && /retry in 0\.500 s/.test(half.rawMessage));
      nowMs += 500;
      assert.equal(await outcome(client.getNode({ id: "n" }, me)), "ok");
      assert.notEqual(await outcome(client.getNode({ id: "n" }, me)), "ok");
      nowMs += 10_000;
    });
  });
}

test("anonymous callers are keyed by their address", async () => {
  const client = createClient(NodeService, protocols["gRPC over h2c (the fast path)"]!.transport());
  nowMs += 10_000;
  const results = [];
  for (let i = 0; i < 4; i++) results.push(await outcome(client.getNode({ id: "n" })));
  assert.deepEqual(results.slice(0, 3), ["ok", "ok", "ok"]);
  assert.ok(results[3] instanceof ConnectError && results[3].code === Code.ResourceExhausted);
});

test("idle buckets are forgotten and the number kept is bounded", async () => {
  let t = 0;
  const limit = rateLimit({ rps: 10, burst: 2, maxCallers: 100, now: () => t });
  let calls = 0;
  const call = limit(async () => (calls++, {}) as never);
  const req = (id: string) => ({ contextValues: { get: (k: unknown) => (k === principalKey ? ({ kind: "user", id } as Principal) : { address: "" }) } }) as never;
  // 1,000 callers, one call each: at most 100 buckets, and none of the callers is refused.
  for (let i = 0; i < 1000; i++) await call(req(`u${i}`));
  assert.equal(calls, 1000);
  assert.ok(limit.tracked() <= 100, `${limit.tracked()} buckets`);
  // A caller that used up its bucket is still limited until it refills, despite the churn.
  await call(req("busy"));
  await call(req("busy"));
  assert.throws(() => call(req("busy")), (e: unknown) => e instanceof ConnectError && e.code === Code.ResourceExhausted);
  t += 200;
  await call(req("busy"));
  // Once every bucket has had time to refill, the next call sweeps them all away.
  t += 1000;
  await call(req("last"));
  assert.equal(limit.tracked(), 1);
});
