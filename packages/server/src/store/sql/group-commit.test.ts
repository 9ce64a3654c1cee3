import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";

import { create } from "@bufbuild/protobuf";
import { VirtualMachineSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { QuotaLimitsSchema } from "@quantix/api/gen/Quantixkvm/quota/v1/quota_pb.js";
import { newQuota, QUOTA_KIND, QuantixError, VM_KIND, type Resource } from "@quantix/core";
import { migrate } from "./migrations.js";
import { PgliteDriver } from "./pglite-driver.js";
import type { Param } from "./sql-driver.js";
import { SqlStore } from "./sql-store.js";

// Group commit on the embedded engine: concurrent writes share transactions, and a write
// that fails inside a shared transaction fails alone. (The store contract checks outcomes,
// revisions and watch order on every engine; this checks that writes really are batched.)

describe("group commit", () => {
  let dir: string;
  let driver: PgliteDriver;
  let store: SqlStore;
  let transactions = 0;
  let statements: string[] = [];
  /** The statements' parameters, by statement text (the last sent). */
  const paramsOf = new Map<string, readonly Param[] | undefined>();
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "quantix-group-"));
    driver = await PgliteDriver.open(dir);
    await migrate(driver, () => undefined);
    store = await SqlStore.open(driver, { historyRevisions: 10_000, maxBacklog: 10_000, pollMs: 1000, onError: () => undefined });
    const transaction = driver.transaction.bind(driver);
    driver.transaction = ((fn, options) => {
      transactions++;
      return transaction(async (tx) => fn({ ...tx, query: (sql, params) => (statements.push(sql), paramsOf.set(sql, params), tx.query(sql, params)) }), options);
    }) as typeof driver.transaction;
  });
  after(async () => {
    await store?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const vm = (projectId: string, name = `vm-${randomUUID().slice(0, 8)}`) => create(VirtualMachineSchema, { id: randomUUID(), projectId, name, spec: { cpu: { cores: 1 } } });

  it("100 creates issued at once commit in a few transactions, the creates of each in one INSERT", async () => {
    transactions = 0;
    statements = [];
    const projectId = randomUUID();
    const created = await Promise.all(Array.from({ length: 100 }, () => store.of(VM_KIND).create(vm(projectId))));
    assert.equal(new Set(created.map((v) => v.resourceVersion)).size, 100);
    // The first goes alone (nothing was committing); the rest wait for it and go together.
    assert.ok(transactions >= 1 && transactions <= 5, `${transactions} transactions`);
    assert.equal(statements.filter((s) => s.includes("SAVEPOINT")).length, 0, "no savepoints without a failing write");
    assert.equal(statements.filter((s) => s.includes("INSERT INTO quantix_vms")).length, transactions, "one INSERT per transaction");
    const page = await store.of(VM_KIND).list({ where: { project_id: projectId }, order: { field: "name", desc: false }, limit: 200, countTotal: true });
    assert.equal(page.totalCount, 100);
  });

  it("a batch with a taken name runs with a savepoint per write: the taken one fails alone", async () => {
    const projectId = randomUUID();
    const first = await store.of(VM_KIND).create(vm(projectId, "taken"));
    transactions = 0;
    statements = [];
    const results = await Promise.allSettled([
      store.of(VM_KIND).create(vm(projectId)), // alone: starts the commit the others wait for
      ...Array.from({ length: 10 }, () => store.of(VM_KIND).create(vm(projectId))),
      store.of(VM_KIND).create(vm(projectId, "taken")),
      ...Array.from({ length: 10 }, () => store.of(VM_KIND).create(vm(projectId))),
    ]);
    const failed = results.flatMap((r, i) => (r.status === "rejected" ? [i] : []));
    assert.deepEqual(failed, [11]);
    const reason = (results[11] as PromiseRejectedResult).reason as QuantixError;
    assert.equal(reason.code, "already_exists", reason.message);
    assert.ok(statements.some((s) => s.includes("ROLLBACK TO SAVEPOINT")), "the failing create was rolled back to its savepoint");
    assert.ok(transactions <= 4, `${transactions} transactions`);
    const page = await store.of(VM_KIND).list({ where: { project_id: projectId }, order: { field: "name", desc: false }, limit: 100, countTotal: true });
    assert.equal(page.totalCount, 22);
    assert.equal(page.items.find((v) => v.name === "taken")?.id, first.id);
  });

  it("multi-object commits issued at once share transactions; one that fails is rolled back alone", async () => {
    const projectId = randomUUID();
    const counter = await store.of(VM_KIND).create(vm(projectId, "counter"));
    await store.of(VM_KIND).create(vm(projectId, "taken"));
    transactions = 0;
    statements = [];
    // Each commit counts itself on one shared object and creates a VM (as CreateVM charges a quota).
    const mutate = (c: Resource) => ({ ...c, description: String(Number((c as typeof counter).description || "0") + 1) }) as Resource;
    const commit = (name?: string) =>
      store.commit([
        { op: "update", kind: VM_KIND as never, object: { ...counter, resourceVersion: 0n }, mutate },
        { op: "create", kind: VM_KIND as never, object: vm(projectId, name) },
      ]);
    const results = await Promise.allSettled([...Array.from({ length: 20 }, () => commit()), commit("taken"), ...Array.from({ length: 20 }, () => commit())]);
    const failed = results.flatMap((r, i) => (r.status === "rejected" ? [i] : []));
    assert.deepEqual(failed, [20]);
    assert.equal(((results[20] as PromiseRejectedResult).reason as QuantixError).code, "already_exists");
    assert.ok(transactions <= 6, `${transactions} transactions`);
    assert.equal((await store.of(VM_KIND).get(counter.id))?.description, "40", "the failed commit's count was rolled back with it");
    const revs = results.flatMap((r) => (r.status === "fulfilled" ? r.value.map((o) => o.resourceVersion) : [])).sort((a, b) => (a < b ? -1 : 1));
    assert.equal(new Set(revs).size, 80);
    assert.equal(revs[79]! - revs[0]!, 79n, "revisions are gap-free");
  });

  it("the row writes of concurrent commits are one statement per transaction, a row charged by all of them one UPDATE", async () => {
    const projectId = randomUUID();
    const counter = await store.of(VM_KIND).create(vm(projectId, "counter"));
    transactions = 0;
    statements = [];
    const mutate = (c: Resource) => ({ ...c, description: String(Number((c as typeof counter).description || "0") + 1) }) as Resource;
    const commit = () =>
      store.commit([
        { op: "update", kind: VM_KIND as never, object: { ...counter, resourceVersion: 0n }, mutate },
        { op: "create", kind: VM_KIND as never, object: vm(projectId) },
      ]);
    await Promise.all(Array.from({ length: 40 }, () => commit()));
    const writes = statements.filter((s) => s.includes("INSERT INTO quantix_changes"));
    assert.equal(writes.length, transactions, "one statement writes each transaction's rows and changes");
    assert.ok(transactions <= 6, `${transactions} transactions`);
    assert.ok(writes.every((s) => (s.match(/UPDATE quantix_vms/g) ?? []).length === 1), "the counter is updated once per transaction");
    assert.equal((await store.of(VM_KIND).get(counter.id))?.description, "40");
    const { rows } = await driver.query<{ n: number }>("SELECT count(*)::int AS n FROM quantix_changes WHERE revision > $1", [counter.resourceVersion]);
    assert.equal(rows[0]?.n, 80, "every write's change is in the history, the counter's 40 intermediate states included");
  });

  it("the row-writing statement's text depends on what it writes, not on how many rows (rows go as arrays)", async () => {
    const projectId = randomUUID();
    const counter = await store.of(VM_KIND).create(vm(projectId, "counter"));
    const mutate = (c: Resource) => ({ ...c, description: String(Number((c as typeof counter).description || "0") + 1) }) as Resource;
    const commit = () =>
      store.commit([
        { op: "update", kind: VM_KIND as never, object: { ...counter, resourceVersion: 0n }, mutate },
        { op: "create", kind: VM_KIND as never, object: vm(projectId) },
      ]);
    statements = [];
    await commit(); // alone: one row of each
    await Promise.all(Array.from({ length: 30 }, () => commit())); // batches of many
    const writes = statements.filter((s) => s.includes("INSERT INTO quantix_changes"));
    assert.ok(writes.length >= 2, `${writes.length} statements`);
    assert.equal(new Set(writes).size, 1, "one text for batches of one row and of many");
    assert.ok(writes[0]!.includes("unnest("));
    assert.equal((await store.of(VM_KIND).get(counter.id))?.description, "31");
  });

  it("a batch of conditional writes finds its rows by id, not by reading the whole table", async () => {
    const projectId = randomUUID();
    const vms = await Promise.all(Array.from({ length: 64 }, () => store.of(VM_KIND).create(vm(projectId))));
    statements = [];
    const mutate = (v: Resource) => Object.assign(v, { description: "updated" });
    await Promise.all(vms.map((v) => store.commit([{ op: "update", kind: VM_KIND as never, object: { ...v, resourceVersion: 0n }, mutate }])));
    const rowsOf = (sql: string) => (paramsOf.get(sql)?.[Number(/FROM unnest\(\$(\d+)/.exec(sql)?.[1]) - 1] as unknown[] | undefined)?.length ?? 0;
    const batch = statements.filter((s) => s.includes("UPDATE quantix_vms")).sort((a, b) => rowsOf(b) - rowsOf(a))[0];
    assert.ok(batch && rowsOf(batch) > 10, `the largest batch updated ${batch ? rowsOf(batch) : 0} rows`);
    // Its plan with 20,000 more (small) rows in the table, rolled back after. Joined with the
    // unnest alone, PGlite planned a hash join over the whole table in a fresh database of
    // 20,000 one-byte rows (19-23 ms against 5-7 ms for 64 updates and 64 deletes); this
    // table (with the file's other rows) plans index lookups either way: this keeps them.
    const plan = await driver
      .transaction(async (tx) => {
        await tx.query(`INSERT INTO quantix_vms (id, unique_key, project_id, name, labels, state, node_id, created_ms, resource_version, data) SELECT 'bulk-' || i, NULL, $1, 'bulk-' || i, '{}', 0, '', 1, 1, '\\x00' FROM generate_series(1, 20000) AS i`, [projectId]);
        const { rows } = await tx.query<{ "QUERY PLAN": string }>(`EXPLAIN ${batch}`, paramsOf.get(batch));
        throw Object.assign(new Error("rolled back"), { plan: rows.map((r) => r["QUERY PLAN"]).join("\n") });
      })
      .catch((e: { plan?: string }) => e.plan ?? Promise.reject(e));
    assert.match(plan, /Index (Only )?Scan using quantix_vms_pkey|Bitmap Index Scan on quantix_vms_pkey/, plan);
    assert.doesNotMatch(plan, /Seq Scan on quantix_vms/, plan);
  });

  it("writes of one row in one commit: created then changed, created then deleted, changed then deleted", async () => {
    const [a, b, c] = [randomUUID(), randomUUID(), randomUUID()];
    await store.commit([{ op: "create", kind: QUOTA_KIND as never, object: newQuota(c, 1) }]);
    const limit = (vms: bigint) => (q: Resource) => Object.assign(q, { limits: create(QuotaLimitsSchema, { vms }) });
    const before = await store.revision();
    const written = await store.commit([
      { op: "create", kind: QUOTA_KIND as never, object: newQuota(a, 1) },
      { op: "update", kind: QUOTA_KIND as never, object: { id: a, resourceVersion: 0n }, mutate: limit(7n) },
      { op: "create", kind: QUOTA_KIND as never, object: newQuota(b, 1) },
      { op: "delete", kind: QUOTA_KIND as never, object: { id: b, resourceVersion: 0n } },
      { op: "update", kind: QUOTA_KIND as never, object: { id: c, resourceVersion: 0n }, mutate: limit(3n) },
      { op: "delete", kind: QUOTA_KIND as never, object: { id: c, resourceVersion: 0n } },
    ]);
    assert.equal(written.length, 6);
    const stored = await store.of(QUOTA_KIND).get(a);
    assert.equal(stored?.limits?.vms, 7n);
    assert.equal(stored?.resourceVersion, before + 2n);
    assert.equal(await store.of(QUOTA_KIND).get(b), undefined);
    assert.equal(await store.of(QUOTA_KIND).get(c), undefined);
    const { rows } = await driver.query<{ type: string }>("SELECT type FROM quantix_changes WHERE revision > $1 ORDER BY revision", [before]);
    assert.deepEqual(rows.map((r) => r.type), ["ADDED", "MODIFIED", "ADDED", "DELETED", "MODIFIED", "DELETED"]);
    assert.equal(await store.revision(), before + 6n);
  });

  it("a commit creating several objects, one of them taken, fails naming the taken one", async () => {
    const projectId = randomUUID();
    await store.of(VM_KIND).create(vm(projectId, "held"));
    const before = await store.revision();
    await assert.rejects(
      store.commit([
        { op: "create", kind: VM_KIND as never, object: vm(projectId, "free-1") },
        { op: "create", kind: VM_KIND as never, object: vm(projectId, "held") },
        { op: "create", kind: VM_KIND as never, object: vm(projectId, "free-2") },
      ]),
      (err: QuantixError) => err.code === "already_exists" && err.message.includes("held") && !err.message.includes("free"),
    );
    assert.equal(await store.revision(), before, "nothing of it was written");
  });
});
