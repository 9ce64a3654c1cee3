import { test } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { parse } from "yaml";

// The vendored specs are data the stand-in checks the backends against; an edit by hand
// would silently change what "spec-conformant" means, so their hashes are pinned in the
// README that was copied with them.
const dir = new URL("../../../../third_party/specs/", import.meta.url);

test("vendored hypervisor specs match the sha256 listed in their README", () => {
  const readme = readFileSync(new URL("README.md", dir), "utf8");
  for (const file of ["firecracker.yaml", "cloud-hypervisor.yaml"]) {
    const row = readme.split("\n").find((line) => line.startsWith(`| \`${file}\``));
    assert.ok(row, `README has a row for ${file}`);
    const expected = /`([0-9a-f]{64})`/.exec(row)?.[1];
    assert.ok(expected, `README row for ${file} has a sha256`);
    const actual = createHash("sha256").update(readFileSync(new URL(file, dir))).digest("hex");
    assert.equal(actual, expected, `${file} was edited; re-copy it from upstream`);
  }
});

test("vendored specs parse as YAML with the expected versions", () => {
  const fc = parse(readFileSync(new URL("firecracker.yaml", dir), "utf8")) as { swagger: string };
  const ch = parse(readFileSync(new URL("cloud-hypervisor.yaml", dir), "utf8")) as { openapi: string };
  assert.equal(fc.swagger, "2.0");
  assert.equal(ch.openapi, "3.0.1");
});
