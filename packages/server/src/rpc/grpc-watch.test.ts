import assert from "node:assert/strict";
import { VM_KIND } from "@quantix/core";
import * as http2 from "node:http2";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { collect, synced } from "@quantix/testing";
import { startControlPlane, type ControlPlane } from "../app.js";
import { loadConfig } from "../config.js";
import { silentLogger } from "@quantix/rpc";
import { MemoryStore } from "../store/memory-store.js";

const spec = { cpu: { cores: 1 }, memory: { sizeMib: 512n } };

describe("watches over gRPC (the lean path)", () => {
  let cp: ControlPlane;
  let vms: ReturnType<typeof createClient<typeof VMService>>;
  before(async () => {
    cp = await startControlPlane(loadConfig({}, { port: 0, logLevel: "silent", demo: false }), { log: silentLogger, store: new MemoryStore({ limits: { historySize: 20, maxBacklog: 1000 } }) });
    vms = createClient(VMService, createGrpcTransport({ baseUrl: cp.url }));
  });
  after(() => cp.close());

  test("resuming from the last resource_version gives exactly the missed changes", async () => {
    const labels = { suite: "grpc-resume" };
    const a = await vms.createVM({ name: "g-a", labels, spec });
    const abort = new AbortController();
    const first = await collect(vms.watchVMs({ labels }, { signal: abort.signal }), synced);
    abort.abort();
    const last = first[first.length - 1]!.resourceVersion;
    await vms.updateVM({ id: a.id, updateMask: { paths: ["description"] }, description: "x" });
    const b = await vms.createVM({ name: "g-b", labels, spec });
    await vms.deleteVM({ id: a.id });
    const abort2 = new AbortController();
    const resumed = await collect(vms.watchVMs({ labels, resourceVersion: last }, { signal: abort2.signal }), synced);
    abort2.abort();
    assert.deepEqual(
      resumed.filter((u) => u.type !== EventType.SYNCED).map((u) => `${EventType[u.type]} ${u.vm?.name}`),
      ["MODIFIED g-a", "ADDED g-b", "DELETED g-a"],
    );
    await vms.deleteVM({ id: b.id });
  });

  test("a compacted resource_version fails at once with OUT_OF_RANGE, and no watcher is left behind", async () => {
    const vm = await vms.createVM({ name: "g-churn", spec });
    for (let i = 0; i < 30; i++) await vms.updateVM({ id: vm.id, updateMask: { paths: ["description"] }, description: `v${i}` });
    const watchersBefore = (cp.store as MemoryStore).of(VM_KIND).hub.watcherCount;
    const err = await collect(vms.watchVMs({ resourceVersion: 1n }, { timeoutMs: 5000 }), () => false).catch((e: unknown) => ConnectError.from(e));
    assert.ok(err instanceof ConnectError);
    assert.equal(err.code, Code.OutOfRange, err.message);
    assert.equal((cp.store as MemoryStore).of(VM_KIND).hub.watcherCount, watchersBefore);
  });

  test("WatchVM of a VM that has not changed since its history was compacted starts fine", async () => {
    const quiet = await vms.createVM({ name: "g-quiet", spec });
    const busy = await vms.createVM({ name: "g-busy", spec });
    for (let i = 0; i < 30; i++) await vms.updateVM({ id: busy.id, updateMask: { paths: ["description"] }, description: `b${i}` });
    const abort = new AbortController();
    const got = await collect(vms.watchVM({ vmId: quiet.id }, { signal: abort.signal }), synced);
    abort.abort();
    assert.equal(got[0]?.type, EventType.ADDED);
    assert.equal(got[0]?.vm?.name, "g-quiet");
  });

  test("a watch whose grpc-timeout passes ends with DEADLINE_EXCEEDED, not OK", async () => {
    const session = http2.connect(cp.url);
    try {
      const req = session.request({ ":method": "POST", ":path": "/Quantixkvm.compute.v1.VMService/WatchVMs", "content-type": "application/grpc", te: "trailers", "grpc-timeout": "300m" });
      req.end(Buffer.from([0, 0, 0, 0, 0]));
      req.resume();
      const trailers = await new Promise<http2.IncomingHttpHeaders>((resolve, reject) => {
        req.once("trailers", resolve);
        req.once("error", reject);
        setTimeout(() => reject(new Error("no trailers within 5 s")), 5000).unref();
      });
      assert.equal(trailers["grpc-status"], String(Code.DeadlineExceeded));
    } finally {
      session.close();
    }
  });
});
