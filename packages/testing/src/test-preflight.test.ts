import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { test } from "node:test";
import { missingFrom, planFor, TEST_PACKAGES } from "../../../scripts/test-preflight.js";

// The preflight `npm test` runs first (scripts/test-preflight.ts). Packages cannot be
// uninstalled here, so its decisions are tested as a pure function, and the script itself
// in its dry run with a package that is certainly not installed.

const run = promisify(execFile);
const REPO = fileURLToPath(new URL("../../../", import.meta.url));

test("dpkg-query's report: only 'install ok installed' counts, arch suffixes included", () => {
  const out = "cpio\tinstall ok installed\nqemu-utils:amd64\tinstall ok installed\ncurl\tdeinstall ok config-files\n";
  assert.deepEqual(missingFrom(out, ["cpio", "qemu-utils", "curl", "busybox-static"]), ["curl", "busybox-static"]);
});

test("nothing missing and lists that know the kernel: the tests start", () => {
  assert.deepEqual(planFor({ missing: [], unknown: [], canInstall: false }), { kind: "ready", commands: [] });
});

test("as root or in CI: one apt-get install of what is missing, after apt-get update when the lists lack a package", () => {
  const plan = planFor({ missing: ["qemu-utils", "cpio"], unknown: ["qemu-utils"], canInstall: true });
  assert.equal(plan.kind, "install");
  assert.deepEqual(plan.commands, [["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "qemu-utils", "cpio"]]);
  assert.deepEqual(planFor({ missing: ["cpio"], unknown: [], canInstall: true }).commands, [["apt-get", "install", "-y", "--no-install-recommends", "cpio"]]);
});

test("otherwise it stops before any test, naming each package, what it is for, and the exact command", () => {
  const plan = planFor({ missing: ["postgresql", "cpio"], unknown: ["linux-image-amd64"], canInstall: false });
  assert.equal(plan.kind, "stop");
  assert.match(plan.message!, /postgresql: the PostgreSQL store's tests/);
  assert.match(plan.message!, /cpio: packs the test guest's initramfs/);
  assert.ok(plan.message!.includes("apt-get update && apt-get install -y --no-install-recommends postgresql cpio"), plan.message);
  const listsOnly = planFor({ missing: [], unknown: ["linux-image-amd64"], canInstall: false });
  assert.match(listsOnly.message!, /package lists to know linux-image-amd64[\s\S]*apt-get update$/);
});

test("the list covers what .ci/run installed and the tests install on demand", () => {
  const names = TEST_PACKAGES.map(([n]) => n);
  for (const p of ["postgresql", "qemu-system-x86", "qemu-utils", "busybox-static", "cpio", "iproute2", "curl"]) assert.ok(names.includes(p), p);
});

test("the script's dry run plans the install of a missing package and changes nothing", async () => {
  const missing = "quantix-preflight-no-such-package";
  const { stdout } = await run(process.execPath, ["--import", "tsx", "scripts/test-preflight.ts", "--dry-run", `--packages=${missing},cpio`], { cwd: REPO });
  assert.match(stdout, new RegExp(`missing ${missing};`));
  assert.ok(stdout.includes(`apt-get install -y --no-install-recommends ${missing}\n`), stdout);
  assert.ok(stdout.includes("apt-get update\n"), "the lists do not know it: update first");
  const { stdout: status } = await run("dpkg-query", ["-W", "-f=${Status}", "cpio"]);
  assert.equal(status, "install ok installed");
});
