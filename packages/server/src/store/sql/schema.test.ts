import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ALL_KINDS } from "@quantix/core";
import { impliedColumns, impliedIndexes } from "./kind-ddl.js";
import { migrate, MIGRATIONS } from "./migrations.js";
import { PgliteDriver } from "./pglite-driver.js";

/**
 * The schema the migrations build matches what the kinds' declarations imply: every
 * kind's table has its columns, of their types, and the indexes its filters and orders
 * need. A kind whose declaration changes without a migration fails here.
 */
describe("schema", () => {
  let dir: string;
  let driver: PgliteDriver;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "quantix-schema-"));
    driver = await PgliteDriver.open(dir);
    await migrate(driver, () => undefined);
  });
  after(async () => {
    await driver.close();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const kind of ALL_KINDS) {
    it(`${kind.table} has the columns and indexes kind ${kind.name} implies`, async () => {
      const { rows: cols } = await driver.query<{ column_name: string; data_type: string }>(
        "SELECT column_name, udt_name AS data_type FROM information_schema.columns WHERE table_name = $1",
        [kind.table],
      );
      const have = Object.fromEntries(cols.map((c) => [c.column_name, c.data_type]));
      const types: Record<string, string> = { text: "text", int: "int4", bigint: "int8", boolean: "bool", jsonb: "jsonb", bytea: "bytea" };
      for (const [name, type] of Object.entries(impliedColumns(kind))) assert.equal(have[name], types[type], `${kind.table}.${name}`);
      const { rows: idx } = await driver.query<{ cols: string }>(
        `SELECT string_agg(a.attname, ',' ORDER BY k.ord) AS cols
         FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
         CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
         WHERE c.relname = $1 GROUP BY i.indexrelid`,
        [kind.table],
      );
      const indexes = new Set(idx.map((r) => r.cols));
      for (const cols of impliedIndexes(kind)) assert.ok(indexes.has(cols.join(",")), `${kind.table} lacks an index on (${cols.join(", ")}); add a migration`);
      assert.ok(indexes.has("unique_key"), `${kind.table} lacks its unique_key constraint`);
    });
  }
});

// A shipped migration never changes (databases that ran it would differ from new ones):
// each one's SQL is pinned here. Add a migration; never edit one.
const PINNED: Record<number, string> = {
  1: "f9f8fd4e2ff69247",
  2: "cbb50366e7f17b11",
  3: "ffdca5607403e1e2",
  4: "65d3d6c89e03688c",
  5: "994f10a5d9adfcec",
  6: "1e9e83f9bfc30052",
  7: "07b543d341ac719c",
  8: "a929ab98db79acf5",
  9: "ec62b3ff2b5740ba",
  10: "734f89e289ca1bc3",
  11: "1ed362db24cc918f",
  12: "b3347967073c0c54",
  13: "4dfc3b6aba758219",
  14: "bd3ee68f1193a73f",
  15: "14248ac302b0b813",
  16: "197fb5e3778d16c9",
};

it("no shipped migration has changed", () => {
  for (const m of MIGRATIONS) {
    const hash = createHash("sha256").update(m.sql).digest("hex").slice(0, 16);
    assert.equal(PINNED[m.version], hash, `migration ${m.version} (${m.name}) changed, or is new and not pinned yet`);
  }
});
