import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import { agentSettings } from "./config.js";
import { withVmmStateTable } from "./vm-state-table-doc.js";

const doc = readFileSync(new URL("../../../docs/api/vmm-service.md", import.meta.url), "utf8");

test("docs/api/vmm-service.md carries the agent's current state table (run `npm run docs`)", () => {
  assert.match(doc, /<!-- vmm-state-table:begin -->\n\| state \| DeleteVm/);
  assert.equal(withVmmStateTable(doc), doc);
});

test("docs/api/vmm-service.md lists every agent setting with its flag and default", () => {
  for (const [env, flag, def] of agentSettings()) {
    const row = doc.split("\n").find((l) => l.startsWith(`| \`${env}\` |`));
    assert.ok(row, `no row for ${env}`);
    assert.ok(row.includes(`\`${flag}\``), `${env}'s row lacks ${flag}`);
    assert.ok(row.includes(def === "" ? "(none)" : `\`${def}\``), `${env}'s row lacks its default ${def}`);
  }
});
