import assert from "node:assert/strict";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { cruise, type ICruiseResult } from "dependency-cruiser";
import extractDepcruiseOptions from "dependency-cruiser/config-utl/extract-depcruise-options";
import extractTSConfig from "dependency-cruiser/config-utl/extract-ts-config";
import { REPO_ROOT } from "./process.js";

// The repository's dependency rules (.dependency-cruiser.cjs: layers, declared
// dependencies, public entries only, no cycles, every import resolvable), checked over
// every package, the bench and the scripts, as `npm run lint:deps` checks them in CI.

/** Cruises the tree with the repository's rules; returns "rule: from → to" per violation. */
async function violations(): Promise<string[]> {
  const cwd = process.cwd();
  process.chdir(REPO_ROOT);
  try {
    const options = await extractDepcruiseOptions("./.dependency-cruiser.cjs");
    const result = await cruise(["packages", "bench", "scripts"], { ...options, outputType: "json" }, {}, { tsConfig: extractTSConfig("tsconfig.json") });
    const output = (typeof result.output === "string" ? JSON.parse(result.output) : result.output) as ICruiseResult;
    return output.summary.violations.map((v) => `${v.rule.name}: ${v.from} → ${v.to}`);
  } finally {
    process.chdir(cwd);
  }
}

test("every import in the repository keeps the dependency rules", async () => {
  assert.deepEqual(await violations(), []);
});

test("the rules catch the agent importing the control plane, and a deep import into another package", async () => {
  // Two modules that break the rules, there only while the tree is cruised.
  const probes = {
    [join(REPO_ROOT, "packages/agent/src/dependency-probe.ts")]: 'import { startControlPlane } from "@quantix/server";\nexport const probe = startControlPlane;\n',
    [join(REPO_ROOT, "packages/rpc/src/dependency-probe.ts")]: 'import { matchesLabels } from "../../core/src/labels.js";\nexport const probe = matchesLabels;\n',
  };
  try {
    for (const [path, text] of Object.entries(probes)) writeFileSync(path, text);
    const found = await violations();
    assert.ok(found.includes("layer-agent: packages/agent/src/dependency-probe.ts → packages/server/src/index.ts"), found.join("\n"));
    assert.ok(found.includes("declared-agent: packages/agent/src/dependency-probe.ts → packages/server/src/index.ts"), found.join("\n"));
    assert.ok(found.includes("public-entries-only: packages/rpc/src/dependency-probe.ts → packages/core/src/labels.ts"), found.join("\n"));
    assert.ok(found.includes("by-package-name: packages/rpc/src/dependency-probe.ts → packages/core/src/labels.ts"), found.join("\n"));
  } finally {
    for (const path of Object.keys(probes)) rmSync(path, { force: true });
  }
});
