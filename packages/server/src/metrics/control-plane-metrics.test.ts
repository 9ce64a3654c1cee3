import assert from "node:assert/strict";
import { after, before, test } from "node:test";
import { Code, createClient } from "@connectrpc/connect";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { rejection, startTestServer, transports, until, type TestServer, parsePrometheus, sampleValue, type PromExposition } from "@quantix/testing";

let server: TestServer;
before(async () => {
  server = await startTestServer();
});
after(async () => {
  await server.close();
});

async function scrape(): Promise<PromExposition> {
  const res = await fetch(`${server.url}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
  return parsePrometheus(await res.text());
}

const GET_VM = "Quantixkvm.compute.v1.VMService/GetVM";
const LIST_VMS = "Quantixkvm.compute.v1.VMService/ListVMs";

test("after N calls over Connect and over gRPC (the fast path) the counters say N, by code, with the histogram agreeing", async () => {
  const before = await scrape();
  const okBefore = sampleValue(before, "quantix_rpc_calls_total", { procedure: LIST_VMS, code: "ok" }) ?? 0;
  const nfBefore = sampleValue(before, "quantix_rpc_calls_total", { procedure: GET_VM, code: "not_found" }) ?? 0;
  const t = transports(server.url);
  const connect = createClient(VMService, t["connect-json-h1"]!);
  const grpc = createClient(VMService, t["grpc-h2"]!);
  for (let i = 0; i < 3; i++) await connect.listVMs({});
  for (let i = 0; i < 4; i++) await grpc.listVMs({});
  for (const c of [connect, grpc]) assert.equal((await rejection(c.getVM({ id: "no-such-vm" }))).code, Code.NotFound);

  const e = await scrape();
  assert.equal(sampleValue(e, "quantix_rpc_calls_total", { procedure: LIST_VMS, code: "ok" }), okBefore + 7);
  assert.equal(sampleValue(e, "quantix_rpc_calls_total", { procedure: GET_VM, code: "not_found" }), nfBefore + 2);
  assert.equal(e.types.get("quantix_rpc_duration_seconds"), "histogram");
  const count = sampleValue(e, "quantix_rpc_duration_seconds_count", { procedure: LIST_VMS });
  assert.equal(sampleValue(e, "quantix_rpc_duration_seconds_bucket", { procedure: LIST_VMS, le: "+Inf" }), count);
  assert.ok((count ?? 0) >= 7);
  // Buckets are cumulative: never decreasing with le.
  const buckets = e.samples.filter((s) => s.name === "quantix_rpc_duration_seconds_bucket" && s.labels["procedure"] === LIST_VMS).map((s) => s.value);
  assert.deepEqual(buckets, [...buckets].sort((a, b) => a - b));
});

test("VMs by state, the store revision and open watches are the world's", async () => {
  await server.vms.createVM({ name: "metrics-a", spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n } } });
  await server.vms.createVM({ name: "metrics-b", spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n } } });
  const total = (await server.vms.listVMs({ pageSize: 1 })).totalCount;
  const revision = await server.cp.store.revision();
  let e = await scrape();
  const vms = e.samples.filter((s) => s.name === "quantix_vms").reduce((sum, s) => sum + s.value, 0);
  assert.equal(vms, total);
  assert.ok(total >= 2);
  assert.ok((sampleValue(e, "quantix_store_revision") ?? 0) >= Number(revision));
  assert.equal(sampleValue(e, "quantix_watches_open"), 0);

  const grpc = createClient(VMService, transports(server.url)["grpc-h2"]!);
  const connect = createClient(VMService, transports(server.url)["connect-json-h1"]!);
  const ac = new AbortController();
  const streams = [grpc.watchVMs({}, { signal: ac.signal }), connect.watchVMs({}, { signal: ac.signal })];
  const pumps = streams.map(async (s) => {
    try {
      for await (const _ of s) void _;
    } catch {
      // Cancelled below.
    }
  });
  await until(async () => ((sampleValue(await scrape(), "quantix_watches_open") ?? 0) === 2 ? true : undefined), "two open watches", 5_000);
  ac.abort();
  await Promise.all(pumps);
  await until(async () => ((sampleValue(await scrape(), "quantix_watches_open") ?? -1) === 0 ? true : undefined), "the watches closed", 5_000);
  e = await scrape();
  // A watch the client cancels ends as its log line says (the handler returns); count it by any code.
  const watchCalls = e.samples.filter((s) => s.name === "quantix_rpc_calls_total" && s.labels["procedure"] === "Quantixkvm.compute.v1.VMService/WatchVMs");
  assert.equal(watchCalls.reduce((sum, s) => sum + s.value, 0), 2);
});
