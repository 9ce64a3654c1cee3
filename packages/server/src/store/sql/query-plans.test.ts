import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, before, describe, it } from "node:test";

import { create } from "@bufbuild/protobuf";
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
    for (let i = 0; i < ROWS; i++) {
      await store.of(VM_KIND).create(
        create(VirtualMachineSchema, {
          id: randomUUID(),
          projectId: i % 100 === 0 ? PROJECT : randomUUID(),
          name: `vm-${String(i).padStart(5, "0")}`,
          labels: { tier: `t${i % 50}` },
          createdAt: timestampFromMs(1_700_000_000_000 + i),
        }),
      );
    }
    await driver.query("ANALYZE");
  });
  after(async () => {
    await store?.close();
    await server?.stop();
  });

  /** The plan PostgreSQL chooses for the statement `list(q)` sends. */
  async function planOf(q: Query): Promise<string> {
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
    const { rows } = await driver.query<{ "QUERY PLAN": string }>(`EXPLAIN ${captured.sql}`, captured.params);
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

  it("a label filter uses the GIN index", async () => {
    const plan = await planOf({ labels: { tier: "t7" }, order: byName, limit: 20 });
    assert.match(plan, /quantix_vms_labels/, plan);
  });
});
