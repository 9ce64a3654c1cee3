import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";

import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { VirtualMachineSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import type { Query } from "@quantix/core";
import { startPostgres, type TestPostgres } from "@quantix/testing";
import { migrate } from "./migrations.js";
import { PgDriver } from "./pg-driver.js";
import type { Param } from "./sql-driver.js";
import { SqlStore } from "./sql-store.js";
import { VM_KIND } from "@quantix/core";

// Pages are served by indexes: PostgreSQL's own plans for the statements the store sends,
// on enough rows that the planner prefers an index when one fits.

const PROJECT = randomUUID();
/** A project of BIG_ROWS VMs (loaded in bulk), whose deep pages have many pages after them. */
const BIG = randomUUID();
const BIG_ROWS = 20_000;
const ROWS = 3000;

describe("PostgreSQL query plans", () => {
  let server: TestPostgres;
  let driver: PgDriver;
  let store: SqlStore;
  before(async () => {
    server = await startPostgres();
    driver = await PgDriver.open(await server.createDatabase("plans"), { maxConnections: 4, connectTimeoutMs: 5000, statementTimeoutMs: 30_000 });
    await migrate(driver, () => undefined);
    store = await SqlStore.open(driver, { historyRevisions: 100_000, maxBacklog: 1000, pollMs: 1000, onError: () => undefined });
    // Issued at once: they commit in batches (group commit).
    await Promise.all(
      Array.from({ length: ROWS }, (_, i) =>
        store.of(VM_KIND).create(
          create(VirtualMachineSchema, {
            id: randomUUID(),
            projectId: i % 100 === 0 ? PROJECT : randomUUID(),
            name: `vm-${String(i).padStart(5, "0")}`,
            labels: { tier: `t${i % 50}` },
            createdAt: timestampFromMs(1_700_000_000_000 + i),
          }),
        ),
      ),
    );
    for (let from = 0; from < BIG_ROWS; from += 2000) {
      const vms = Array.from({ length: 2000 }, (_, k) => create(VirtualMachineSchema, { id: randomUUID(), projectId: BIG, name: `big-${String(from + k).padStart(5, "0")}`, createdAt: timestampFromMs(1_600_000_000_000 + from + k) }));
      await driver.query(
        `INSERT INTO quantix_vms (id, unique_key, project_id, name, labels, state, node_id, created_ms, resource_version, data)
         SELECT id, $4 || '/' || name, $4, name, '{}', 0, '', 1600000000000, 1, decode(data, 'hex') FROM unnest($1::text[], $2::text[], $3::text[]) AS t(id, name, data)`,
        [vms.map((v) => v.id), vms.map((v) => v.name), vms.map((v) => Buffer.from(toBinary(VirtualMachineSchema, v)).toString("hex")), BIG],
      );
    }
    await driver.query("ANALYZE");
  });
  after(async () => {
    await store?.close();
    await server?.stop();
  });

  /** The plan PostgreSQL chooses for the statement `list(q)` sends. */
  async function planOf(q: Query, analyze = false): Promise<string> {
    let captured: { sql: string; params: readonly Param[] } | undefined;
    const original = driver.query.bind(driver);
    driver.query = (async (sql: string, params?: readonly Param[]) => {
      // The page statement of the VM table (the change tailer also reads quantix_meta, concurrently).
      if (sql.includes("FROM quantix_meta m") && sql.includes("FROM quantix_vms")) captured = { sql, params: params ?? [] };
      return original(sql, params);
    }) as typeof driver.query;
    try {
      await store.of(VM_KIND).list(q);
    } finally {
      driver.query = original;
    }
    assert.ok(captured, "the list statement was not seen");
    const { rows } = await driver.query<{ "QUERY PLAN": string }>(`EXPLAIN ${analyze ? "(ANALYZE, BUFFERS) " : ""}${captured.sql}`, captured.params);
    return rows.map((r) => r["QUERY PLAN"]).join("\n");
  }

  const byName = { field: "name", desc: false } as const;

  it("a later page of a project in name order reads an index, not the table", async () => {
    const plan = await planOf({ where: { project_id: PROJECT }, order: byName, after: { key: "vm-02000", id: "" }, limit: 100, countTotal: false });
    assert.match(plan, /Index (Only )?Scan (Backward )?using quantix_vms_by_project_name|Bitmap Index Scan on quantix_vms_by_project_name/, plan);
    assert.doesNotMatch(plan, /Seq Scan on quantix_vms/, plan);
  });

  it("a later page of every VM in created_at order reads an index", async () => {
    const plan = await planOf({ order: { field: "created_at", desc: true }, after: { key: 1_700_000_001_000, id: "" }, limit: 50, countTotal: false });
    assert.match(plan, /Index Scan (Backward )?using quantix_vms_by_created/, plan);
  });

  // A deep page is a range of an index that starts at the cursor: the scan's start is the
  // row comparison (an Index Cond, not a Filter), and it reads the rows it returns (the
  // page and the one that says there is more), however deep the page.
  for (const [what, q] of [
    ["every VM in name order", { order: byName, after: { key: `vm-${String(ROWS * 0.9).padStart(5, "0")}`, id: "" }, limit: 100, countTotal: false }],
    ["a project's VMs in name order", { where: { project_id: BIG }, order: byName, after: { key: `big-${String(BIG_ROWS * 0.9).padStart(5, "0")}`, id: "" }, limit: 100, countTotal: false }],
    ["every VM in created_at order, descending", { order: { field: "created_at", desc: true }, after: { key: 1_700_000_000_000 + ROWS * 0.1, id: "" }, limit: 100, countTotal: false }],
  ] as const) {
    it(`a page 90% of the way down ${what} is an index range scan from the cursor that reads what it returns`, async () => {
      const plan = await planOf(q as Query, true);
      const scan = /Index (?:Only )?Scan (?:Backward )?using (\w+) on quantix_vms .*\(actual time=[\d.]+\.\.[\d.]+ rows=(\d+) loops=1\)\n\s+Index Cond: \((.*)\)/.exec(plan);
      assert.ok(scan, `no index scan of quantix_vms:\n${plan}`);
      assert.match(scan[3]!, /ROW\((name|created_ms), id\) [<>] ROW\(/, `the cursor is not where the scan starts:\n${plan}`);
      assert.ok(Number(scan[2]) <= q.limit + 1, `the scan read ${scan[2]} rows for a page of ${q.limit}:\n${plan}`);
      assert.doesNotMatch(plan, /Rows Removed by Filter|Seq Scan on quantix_vms|Sort/, plan);
      // Pages read in all (index and table): a few for a page of 100, not the thousands after it.
      const buffers = /Buffers: shared(?: hit=(\d+))?(?: read=(\d+))?/.exec(plan);
      assert.ok(buffers && Number(buffers[1] ?? 0) + Number(buffers[2] ?? 0) <= 40, `too many pages read:\n${plan}`);
    });
  }

  it("a label filter uses the GIN index", async () => {
    const plan = await planOf({ labels: { tier: "t7" }, order: byName, limit: 20 });
    assert.match(plan, /quantix_vms_labels/, plan);
  });
});
