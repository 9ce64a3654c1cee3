import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
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

test("a dead build's mount and loop device are released before its directory is removed", { skip: process.getuid?.() !== 0 && "mounting a loop device needs root" }, async () => {
  const work = path.join(root, ".k4-dead", "work");
  const mnt = path.join(work, "mnt");
  await mkdir(mnt, { recursive: true });
  const part = path.join(work, "part.ext4");
  execFileSync("mkfs.ext4", ["-q", "-F", part, "8M"]);
  const loop = execFileSync("losetup", ["--find", "--show", part], { encoding: "utf8" }).trim();
  try {
    execFileSync("mount", [loop, mnt]);
    await writeFile(path.join(mnt, "half-built"), "x");
    await writeFile(path.join(root, "k4.lock"), `${spawnSync("true").pid!}\n`);
    await cachedEntry(root, "k4", (d) => writeFile(path.join(d, "disk"), "image"));
    assert.equal((await readFile("/proc/self/mountinfo", "utf8")).includes(root), false, "nothing stays mounted under the cache");
    assert.equal(execFileSync("losetup", ["--associated", part], { encoding: "utf8" }).trim(), "", "the loop device is detached");
    assert.deepEqual((await readdir(root)).filter((e) => e.includes("k4")), ["k4"]);
  } finally {
    spawnSync("umount", ["--lazy", mnt]);
    spawnSync("losetup", ["--detach", loop]);
  }
});
