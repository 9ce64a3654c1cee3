import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { VmStatus_State as State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { EventSchema, Severity } from "@quantix/api/gen/Quantixkvm/event/v1/event_pb.js";
import { EventService } from "@quantix/api/gen/Quantixkvm/event/v1/event_service_pb.js";
import { EVENT_KIND } from "@quantix/core";
import { collect, FakeClock, ON_SIMULATED_NODES, startTestServer, until, type TestServer } from "@quantix/testing";
import { silentLogger } from "@quantix/rpc";
import { MemoryStore } from "../store/memory-store.js";
import { EventRetention } from "./retention.js";

describe("lifecycle events through the API", () => {
  let s: TestServer;
  let events: Client<typeof EventService>;
  before(async () => {
    s = await startTestServer({ simBootMs: 20 });
    events = createClient(EventService, createConnectTransport({ baseUrl: s.url, httpVersion: "1.1" }));
  });
  after(() => s.close());

  test("a VM's life is told by its events, with reason, actor and time, listed and watched", async () => {
    const from = (await events.listEvents({ pageSize: 1 })).resourceVersion;
    const live = collect(events.watchEvents({ objectKind: "VM", resourceVersion: from }), (u) => u.some((x) => x.event?.type === "Deleted"), 20_000);
    const vm = await s.vms.createVM({ name: "told", spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, placement: ON_SIMULATED_NODES }, startOnCreate: true });
    await until(async () => ((await s.vms.getVM({ id: vm.id })).status?.state === State.RUNNING ? true : undefined), "RUNNING");
    await s.vms.stopVM({ id: vm.id });
    await s.vms.deleteVM({ id: vm.id });
    const listed = (await events.listEvents({ objectId: vm.id, orderBy: "time" })).events;
    const types = listed.map((e) => e.type);
    for (const t of ["Scheduled", "Started", "Stopped", "Deleted"]) assert.ok(types.includes(t), `${t} in ${types.join(", ")}`);
    assert.ok(types.indexOf("Scheduled") < types.indexOf("Started") && types.indexOf("Started") < types.indexOf("Stopped"), types.join(", "));
    const scheduled = listed.find((e) => e.type === "Scheduled")!;
    assert.equal(scheduled.actor, "scheduler");
    assert.equal(scheduled.objectKind, "VM");
    assert.equal(scheduled.objectName, "told");
    assert.notEqual(scheduled.nodeId, "");
    assert.ok(scheduled.time, "a time");
    assert.equal(listed.find((e) => e.type === "Started")!.actor, "vm-controller");
    const watched = (await live).filter((u) => u.type === EventType.ADDED && u.event?.objectId === vm.id).map((u) => u.event!.type);
    assert.deepEqual(watched, types, "the watch saw the same events, in order");

    const newestFirst = (await events.listEvents({ objectId: vm.id, orderBy: "time desc", pageSize: 1 })).events;
    assert.equal(newestFirst[0]?.type, "Deleted");
    const onlyStarted = (await events.listEvents({ objectId: vm.id, types: ["Started"] })).events;
    assert.deepEqual(onlyStarted.map((e) => e.type), ["Started"]);
  });

  test("a node's events: disabled and enabled", async () => {
    const node = (await s.nodes.listNodes({})).nodes[0]!;
    await s.nodes.disableNode({ id: node.id });
    await s.nodes.enableNode({ id: node.id });
    const got = (await events.listEvents({ objectKind: "node", objectId: node.id })).events.map((e) => e.type);
    assert.deepEqual(got.slice(-2), ["Disabled", "Enabled"]);
  });

  test("bad filters are INVALID_ARGUMENT naming the field", async () => {
    const err = await events.listEvents({ objectId: "bad\u0000id" }).catch((e: unknown) => e as Error);
    assert.match(String(err), /object_id/);
  });
});

test("events older than the retention are deleted, oldest first; newer ones stay", async () => {
  const clock = new FakeClock();
  const store = new MemoryStore();
  const at = (ageSec: number) => create(EventSchema, { id: randomUUID(), objectKind: "VM", objectId: "x", type: "Started", severity: Severity.NORMAL, time: timestampFromMs(clock.now() - ageSec * 1000) });
  const old = [await store.of(EVENT_KIND).create(at(7200)), await store.of(EVENT_KIND).create(at(3601))];
  const fresh = await store.of(EVENT_KIND).create(at(10));
  const retention = new EventRetention({ store, clock, timers: clock, log: silentLogger, retentionSec: 3600 });
  await retention.start();
  await retention.idle();
  for (const e of old) assert.equal(await store.of(EVENT_KIND).get(e.id), undefined);
  assert.ok(await store.of(EVENT_KIND).get(fresh.id));
  // An hour later the fresh one has expired too, at the next sweep.
  await clock.advance(3600 * 1000);
  await retention.idle();
  assert.equal(await store.of(EVENT_KIND).get(fresh.id), undefined);
  await retention.stop();
});
