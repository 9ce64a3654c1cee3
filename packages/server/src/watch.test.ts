import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport } from "@connectrpc/connect-node";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { VMService, type VmUpdate } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { VM_KIND } from "@quantix/core";
import { collect, startTestServer, synced, until, type TestServer } from "@quantix/testing";
import { MemoryStore } from "./store/memory-store.js";

const spec = { cpu: { cores: 1 }, memory: { sizeMib: 512n } };
const brief = (u: VmUpdate) => `${EventType[u.type]} ${u.vm?.name ?? ""} ${u.resourceVersion}`;

describe("WatchVMs and WatchVM", () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer({ demo: false });
  });
  after(() => s.close());

  test("a watcher sees ADDED, MODIFIED and DELETED made by another client, in revision order", async () => {
    const watcher = createClient(VMService, createGrpcTransport({ baseUrl: s.url }));
    const abort = new AbortController();
    const stream = watcher.watchVMs({ labels: { suite: "watch-1" } }, { signal: abort.signal });
    const it = stream[Symbol.asyncIterator]();
    const first = await it.next();
    assert.equal(first.value?.type, EventType.SYNCED, "an empty snapshot, then SYNCED");
    const vm = await s.vms.createVM({ name: "watched", labels: { suite: "watch-1" }, spec });
    await s.vms.updateVM({ id: vm.id, updateMask: { paths: ["description"] }, description: "changed" });
    await s.vms.deleteVM({ id: vm.id });
    const events = await collect({ [Symbol.asyncIterator]: () => it }, (items) => items.some((u) => u.type === EventType.DELETED));
    abort.abort();
    const changes = events.filter((e) => e.type !== EventType.SYNCED && e.vm?.id === vm.id);
    assert.deepEqual(changes.map((e) => e.type), [EventType.ADDED, EventType.MODIFIED, EventType.DELETED]);
    assert.equal(changes[1]!.vm?.description, "changed");
    const revs = changes.map((e) => e.resourceVersion);
    assert.deepEqual([...revs].sort((a, b) => (a < b ? -1 : 1)), revs, "increasing resource versions");
    assert.equal(changes[0]!.resourceVersion, changes[0]!.vm?.resourceVersion);
  });

  test("resuming from the last resource_version gives exactly the missed changes, no gap, no duplicate", async () => {
    const label = { suite: "resume" };
    const base = await Promise.all([0, 1, 2].map((i) => s.vms.createVM({ name: `resume-${i}`, labels: label, spec })));
    const abort1 = new AbortController();
    const seen = await collect(s.vms.watchVMs({ labels: label }, { signal: abort1.signal }), synced);
    abort1.abort();
    assert.deepEqual(seen.filter((u) => u.type === EventType.ADDED).map((u) => u.vm?.name).sort(), ["resume-0", "resume-1", "resume-2"]);
    const last = seen[seen.length - 1]!.resourceVersion;

    // While disconnected: another client changes things.
    const added = await s.vms.createVM({ name: "resume-3", labels: label, spec });
    await s.vms.updateVM({ id: base[0]!.id, updateMask: { paths: ["description"] }, description: "x" });
    await s.vms.deleteVM({ id: base[1]!.id });
    await s.vms.createVM({ name: "elsewhere", labels: { suite: "other" }, spec });
    const expected = ["ADDED resume-3", "MODIFIED resume-0", "DELETED resume-1"];

    const abort2 = new AbortController();
    const resumed = await collect(s.vms.watchVMs({ labels: label, resourceVersion: last }, { signal: abort2.signal }), synced);
    abort2.abort();
    const changes = resumed.filter((u) => u.type !== EventType.SYNCED);
    assert.deepEqual(changes.map((u) => `${EventType[u.type]} ${u.vm?.name}`), expected, resumed.map(brief).join(", "));
    assert.ok(changes.every((u) => u.resourceVersion > last), "nothing already seen");
    assert.equal(new Set(changes.map((u) => u.resourceVersion)).size, changes.length, "no duplicates");
    assert.equal(changes[0]!.vm?.id, added.id);
  });

  test("a VM that stops matching the filter is DELETED for that watcher", async () => {
    const vm = await s.vms.createVM({ name: "leaver", labels: { team: "a" }, spec });
    const abort = new AbortController();
    const stream = s.vms.watchVMs({ labels: { team: "a" } }, { signal: abort.signal });
    const it = stream[Symbol.asyncIterator]();
    const iterable = { [Symbol.asyncIterator]: () => it };
    await collect(iterable, synced);
    await s.vms.updateVM({ id: vm.id, updateMask: { paths: ["labels"] }, labels: { team: "b" } });
    const [ev] = await collect(iterable, (items) => items.length >= 1);
    abort.abort();
    assert.equal(ev?.type, EventType.DELETED);
    assert.equal(ev?.vm?.labels["team"], "b");
  });

  test("WatchVM streams one VM and ends when it is deleted", async () => {
    const vm = await s.vms.createVM({ name: "single", spec });
    const other = await s.vms.createVM({ name: "single-other", spec });
    const stream = s.vms.watchVM({ vmId: vm.id });
    const done = collect(stream, () => false, 10_000).catch((e: unknown) => e);
    await s.vms.updateVM({ id: other.id, updateMask: { paths: ["description"] }, description: "noise" });
    await s.vms.updateVM({ id: vm.id, updateMask: { paths: ["description"] }, description: "v2" });
    await s.vms.deleteVM({ id: vm.id });
    const events = (await done) as VmUpdate[];
    assert.ok(Array.isArray(events), `stream ended cleanly: ${String(events)}`);
    assert.deepEqual(
      events.filter((e) => e.type !== EventType.SYNCED).map((e) => `${EventType[e.type]} ${e.vm?.description ?? ""}`),
      ["ADDED ", "MODIFIED v2", "DELETED v2"],
    );
  });

  test("WatchVM of an unknown id is NOT_FOUND", async () => {
    const err = await collect(s.vms.watchVM({ vmId: "no-such-vm" }), () => false).catch((e: unknown) => ConnectError.from(e));
    assert.ok(err instanceof ConnectError);
    assert.equal(err.code, Code.NotFound);
    assert.match(err.rawMessage, /no-such-vm/);
  });
});

describe("watch history limits", () => {
  test("a resource_version older than the retained history is OUT_OF_RANGE", async () => {
    const s = await startTestServer({ demo: false }, new MemoryStore({ limits: { historySize: 10, maxBacklog: 1000 } }));
    try {
      const vm = await s.vms.createVM({ name: "churn", spec });
      // The revision of the update to v11: other kinds' writes (the calls' audit records) may come between the VM's.
      let afterV11 = 0n;
      for (let i = 0; i < 15; i++) {
        const u = await s.vms.updateVM({ id: vm.id, updateMask: { paths: ["description"] }, description: `v${i}` });
        if (i === 11) afterV11 = u.resourceVersion;
      }
      const err = await collect(s.vms.watchVMs({ resourceVersion: 1n }), () => false).catch((e: unknown) => ConnectError.from(e));
      assert.ok(err instanceof ConnectError);
      assert.equal(err.code, Code.OutOfRange);
      assert.match(err.rawMessage, /list again/);
      const ok = await collect(s.vms.watchVMs({ resourceVersion: afterV11 }), synced);
      assert.deepEqual(ok.filter((u) => u.type === EventType.MODIFIED).map((u) => u.vm?.description), ["v12", "v13", "v14"]);
    } finally {
      await s.close();
    }
  });
});

// WatchVMs over Connect (the dashboard's protocol, on the Connect fast path): a client that
// goes away ends the call, and its watcher leaves the store's hub.
describe("WatchVMs over Connect: a client that goes away releases its watcher", () => {
  let s: TestServer;
  before(async () => {
    s = await startTestServer({ demo: false });
  });
  after(() => s.close());

  for (const [name, o] of [
    ["HTTP/1.1, JSON", { httpVersion: "1.1", useBinaryFormat: false }],
    ["HTTP/2, binary", { httpVersion: "2", useBinaryFormat: true }],
  ] as const) {
    test(name, async () => {
      const hub = (s.cp.store as MemoryStore).of(VM_KIND).hub;
      const before = hub.watcherCount;
      const client = createClient(VMService, createConnectTransport({ baseUrl: s.url, ...o }));
      const abort = new AbortController();
      const it = client.watchVMs({ labels: { suite: `connect-cancel ${name}` } }, { signal: abort.signal })[Symbol.asyncIterator]();
      assert.equal((await it.next()).value?.type, EventType.SYNCED);
      assert.equal(hub.watcherCount, before + 1);
      abort.abort();
      await it.next().catch(() => undefined);
      await until(() => (hub.watcherCount === before ? true : undefined), "the watcher to leave the hub", 5000);
    });
  }
});
