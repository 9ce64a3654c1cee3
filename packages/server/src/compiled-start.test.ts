import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";

import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { healthOf, npmStartArgs, REPO_ROOT, spawnControlPlane, within } from "@quantix/testing";

// `npm start` runs the compiled JavaScript (scripts/build-packages.ts, packages/*/dist/) with
// an export condition that sends @quantix/* imports to dist/ (package.json). Here: the build
// script as npm runs it, then `npm start`'s own command line, on a free port.

const DEMO_NAMES = ["cache-server", "db-server-01", "dev-workstation", "web-server-01"];
const WORKSPACE_IMPORTS = ["@quantix/server", "@quantix/agent", "@quantix/rpc", "@quantix/core", "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js"];

describe("npm start (compiled)", () => {
  it("builds, resolves our packages to dist/, and serves the API", async (t) => {
    const build = spawnSync("npm", ["run", "-s", "build:packages"], { cwd: REPO_ROOT, encoding: "utf8" });
    assert.equal(build.status, 0, `npm run build:packages failed: ${build.stderr}`);

    // npm start's flags, without its script: every workspace import lands in a dist/ .js file
    // (with a missing condition it would be src/*.ts, which a newer node would even run).
    const flags = npmStartArgs().slice(0, -1);
    const code = `for (const s of ${JSON.stringify(WORKSPACE_IMPORTS)}) console.log(import.meta.resolve(s));`;
    const resolved = spawnSync(process.execPath, [...flags, "--input-type=module", "-e", code], { cwd: REPO_ROOT, encoding: "utf8" });
    assert.equal(resolved.status, 0, resolved.stderr);
    for (const url of resolved.stdout.trim().split("\n")) assert.match(url, /\/packages\/[a-z]+\/dist\/.+\.js$/);

    const dir = mkdtempSync(join(tmpdir(), "quantix-compiled-start-"));
    const p = spawnControlPlane({ QUANTIX_ADDR: "127.0.0.1:0", QUANTIX_STORE: "embedded", QUANTIX_DATA_DIR: join(dir, "data"), QUANTIX_DEMO: "1" }, npmStartArgs());
    // One hook, in this order: removing the directory while the server still writes to it can
    // throw (ENOTEMPTY), and a later hook would then not run, leaving the server behind.
    t.after(async () => {
      await p.kill();
      rmSync(dir, { recursive: true, force: true });
    });
    const url = await within(p.url, 60_000, "listening"); // PGlite's first start: 12 s in all when quiet, over 20 s at load 10

    assert.equal(((await healthOf(url)) as { status?: string }).status, "ok");
    const vms = createClient(VMService, createGrpcTransport({ baseUrl: url }));
    const names = (await vms.listVMs({})).vms.map((v) => v.name).sort();
    assert.deepEqual(names, DEMO_NAMES);
  });
});
