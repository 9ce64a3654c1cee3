import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { test } from "node:test";
import { parseDuration } from "./cli.js";
import { EXIT } from "./errors.js";
import { shortIds } from "./output.js";
import { enumName, parseGib, parseMib } from "./resources.js";

test("shortIds: the shortest prefix no other id shares, at least 8 characters", () => {
  const ids = ["aaaaaaaa-1111", "aaaaaaaa-1122", "bbbbbbbb-0000", "00000000-0000-0000-0001-000000000001", "00000000-0000-0000-0001-000000000002"];
  const s = shortIds(ids);
  assert.equal(s.get("bbbbbbbb-0000"), "bbbbbbbb");
  assert.equal(s.get("aaaaaaaa-1111"), "aaaaaaaa-111");
  assert.equal(s.get("aaaaaaaa-1122"), "aaaaaaaa-112");
  assert.equal(s.get("00000000-0000-0000-0001-000000000001"), "00000000-0000-0000-0001-000000000001");
  for (const [id, short] of s) for (const other of ids) if (other !== id) assert.ok(!other.startsWith(short), `${short} is ambiguous`);
});

test("sizes, durations and enum names as people write them", () => {
  assert.equal(parseMib("4GiB"), 4096);
  assert.equal(parseMib("512MiB"), 512);
  assert.equal(parseMib("2G"), 2048);
  assert.equal(parseMib("1024"), 1024);
  assert.throws(() => parseMib("lots"), /'lots' is not a size/);
  assert.throws(() => parseMib("0.5MiB"), /whole positive number of MiB/);
  assert.equal(parseGib("10GiB"), 10);
  assert.throws(() => parseGib("0"), /not a size in GiB/);
  assert.equal(parseDuration("90s"), 90_000);
  assert.equal(parseDuration("5m"), 300_000);
  assert.equal(parseDuration("2"), 2000);
  assert.throws(() => parseDuration("soon"), /--timeout 'soon' is not a duration/);
  assert.equal(enumName("NETWORK_TYPE_", "bridge"), "NETWORK_TYPE_BRIDGE");
  assert.equal(enumName("STORAGE_POOL_TYPE_", "local-dir"), "STORAGE_POOL_TYPE_LOCAL_DIR");
  assert.equal(enumName("ROLE_", "ROLE_ADMIN"), "ROLE_ADMIN");
});

test("docs/cli.md documents every exit code the CLI uses, and only those", async () => {
  const doc = await readFile(new URL("../../../docs/cli.md", import.meta.url), "utf8");
  const table = doc.slice(doc.indexOf("| Exit | Meaning |"));
  const documented = [...table.matchAll(/^\| (\d+) \|/gm)].map((m) => Number(m[1]));
  assert.deepEqual(documented, [...Object.values(EXIT), 130]);
});
