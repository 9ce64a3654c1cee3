import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { cachedEntry } from "./image-cache.js";

// The image cache's rules with a build that takes milliseconds: one build however many
// callers wait for it, a dead builder's lock and leftovers taken over, a failed build
// leaving nothing behind.
let root: string;

before(async () => {
  root = await mkdtemp(path.join(os.tmpdir(), "quantix-image-cache-"));
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

test("two callers at once: one build, both get the entry, no lock or temp directory remains", async () => {
  let builds = 0;
  const build = async (dir: string) => {
    builds++;
    await new Promise((r) => setTimeout(r, 300));
    await writeFile(path.join(dir, "disk"), "image");
  };
  const [a, b] = await Promise.all([cachedEntry(root, "k1", build), cachedEntry(root, "k1", build)]);
  assert.equal(builds, 1);
  assert.equal(a, path.join(root, "k1"));
  assert.equal(b, a);
  assert.equal(await readFile(path.join(a, "disk"), "utf8"), "image");
  assert.deepEqual((await readdir(root)).sort(), ["k1"]);
  assert.equal(await cachedEntry(root, "k1", build), a);
  assert.equal(builds, 1, "a built entry is reused");
});

test("a lock left by a builder that died is taken over, and its half-built directory removed", async () => {
  const dead = spawnSync("true").pid!;
  await writeFile(path.join(root, "k2.lock"), `${dead}\n`);
  await mkdir(path.join(root, ".k2-abandoned"));
  const dir = await cachedEntry(root, "k2", (d) => writeFile(path.join(d, "disk"), "image"));
  assert.ok(existsSync(path.join(dir, "disk")));
  assert.deepEqual((await readdir(root)).filter((e) => e.includes("k2")), ["k2"]);
});

test("a failed build leaves nothing, and the next caller builds again", async () => {
  await assert.rejects(cachedEntry(root, "k3", async () => {
    throw new Error("mmdebstrap failed");
  }), /mmdebstrap failed/);
  assert.deepEqual((await readdir(root)).filter((e) => e.includes("k3")), []);
  const dir = await cachedEntry(root, "k3", (d) => writeFile(path.join(d, "disk"), "image"));
  assert.ok(existsSync(path.join(dir, "disk")));
});
