import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { AuditRecordSchema } from "@quantix/api/gen/Quantixkvm/audit/v1/audit_pb.js";
import { AUDIT_RECORD_KIND, QuantixError, type Store } from "@quantix/core";
import { silentLogger } from "@quantix/rpc";
import { FakeClock } from "@quantix/testing";
import { MemoryStore } from "../store/memory-store.js";
import { AuditWriter } from "./audit-writer.js";

const record = () => create(AuditRecordSchema, { id: randomUUID(), procedure: "/x.v1.S/CreateX", code: "ok" });
const count = async (store: Store) => (await store.of(AUDIT_RECORD_KIND).list({ order: { field: "time", desc: false }, limit: 0 })).totalCount;

test("records are written in one commit after at most flushMs, at once when a batch is full, and the rest at close", async () => {
  const clock = new FakeClock();
  const store = new MemoryStore();
  const w = new AuditWriter({ store, log: silentLogger, timers: clock, flushMs: 100, maxBatch: 5 });
  for (let i = 0; i < 3; i++) assert.equal(w.add(record()), undefined, "a caller does not wait");
  assert.equal(await count(store), 0);
  const rev = await store.revision();
  await clock.advance(100);
  await w.flush();
  assert.equal(await count(store), 3);
  assert.equal(await store.revision(), rev + 3n, "one commit, one revision each");
  for (let i = 0; i < 5; i++) w.add(record());
  await clock.advance(0);
  await w.flush();
  assert.equal(await count(store), 8, "a full batch goes without waiting for the period");
  w.add(record());
  await w.close();
  assert.equal(await count(store), 9);
});

test("a batch the store refuses is kept and written later; past maxPending callers wait instead of records being dropped", async () => {
  const clock = new FakeClock();
  const inner = new MemoryStore();
  let failing = true;
  const store = new Proxy(inner, {
    get(target, prop, receiver) {
      if (prop === "commit") return (...args: Parameters<Store["commit"]>) => (failing ? Promise.reject(new QuantixError("unavailable", "the database does not answer")) : target.commit(...args));
      return Reflect.get(target, prop, receiver) as unknown;
    },
  });
  const w = new AuditWriter({ store, log: silentLogger, timers: clock, flushMs: 100, maxBatch: 10, maxPending: 4 });
  for (let i = 0; i < 3; i++) w.add(record());
  await clock.advance(100);
  await w.flush();
  assert.equal(w.waiting, 3, "kept after a refusal");
  const wait = w.add(record());
  assert.ok(wait instanceof Promise, "the fourth waiting record makes its caller wait");
  failing = false;
  await wait;
  await w.flush();
  assert.deepEqual([w.waiting, await count(inner)], [0, 4]);
});
