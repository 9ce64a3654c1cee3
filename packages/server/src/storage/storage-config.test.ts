import assert from "node:assert/strict";
import { test } from "node:test";
import { loadConfig } from "../config.js";

test("QUANTIX_STORAGE_DIR and QUANTIX_SHARED_DIRS are read and checked", () => {
  const c = loadConfig({ QUANTIX_STORAGE_DIR: "/var/lib/quantix/storage", QUANTIX_SHARED_DIRS: "/srv/shared:/mnt/nfs" });
  assert.equal(c.storageDir, "/var/lib/quantix/storage");
  assert.deepEqual(c.sharedDirs, ["/srv/shared", "/mnt/nfs"]);
  // Unset: the composition root derives it from the store (the embedded store's directory).
  assert.equal(loadConfig({}).storageDir, undefined);
  assert.deepEqual(loadConfig({}).sharedDirs, []);
  assert.throws(() => loadConfig({ QUANTIX_SHARED_DIRS: "relative/dir" }), /QUANTIX_SHARED_DIRS: "relative\/dir" must be an absolute path/);
});
