import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { withStateTable } from "./state-table.js";

test("docs/api/vm-service.md carries the current power state table (run `npm run docs`)", () => {
  const doc = readFileSync(new URL("../../../docs/api/vm-service.md", import.meta.url), "utf8");
  assert.match(doc, /<!-- state-table:begin -->\n\| state \| start/);
  assert.equal(withStateTable(doc), doc);
});
