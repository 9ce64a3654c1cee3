import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { promisify } from "node:util";
import { QuantixError } from "@quantix/core";
import { ensureDebianPackages } from "@quantix/testing";
import { createDiskCopy, diskVirtualSize } from "./qemu-disk-copy.js";

const run = promisify(execFile);
let dir: string;
before(async () => {
  await ensureDebianPackages(["qemu-utils"]);
  dir = await mkdtemp(path.join(os.tmpdir(), "quantix-diskcopy-"));
});
after(() => rm(dir, { recursive: true, force: true }));

test("a copy is created empty with the source's format and virtual size, which the source measures alike", async () => {
  const q = path.join(dir, "a.qcow2");
  await createDiskCopy(q, "qcow2", 96n << 20n);
  const info = JSON.parse((await run("qemu-img", ["info", "--output=json", "-f", "qcow2", q])).stdout) as { "virtual-size": number };
  assert.equal(info["virtual-size"], 96 << 20);
  assert.equal(await diskVirtualSize(q, "qcow2", undefined, "disk0"), 96n << 20n);
  const r = path.join(dir, "b.raw");
  await createDiskCopy(r, "raw", 8n << 20n);
  assert.equal((await stat(r)).size, 8 << 20);
  assert.equal(await diskVirtualSize(r, "raw", undefined, "disk0"), 8n << 20n);
});

test("a copy is never written over an existing file, and a failed qemu-img leaves no file", async () => {
  const taken = path.join(dir, "taken.qcow2");
  await writeFile(taken, "someone's disk");
  const err = await createDiskCopy(taken, "qcow2", 1n << 20n).then(() => assert.fail("created"), (e: unknown) => e);
  assert.ok(err instanceof QuantixError && err.code === "already_exists");
  assert.equal(await readFile(taken, "utf8"), "someone's disk");
  const broken = path.join(dir, "broken.qcow2");
  await assert.rejects(createDiskCopy(broken, "qcow2", 1n << 20n, "/bin/false"), (e: unknown) => e instanceof QuantixError && e.code === "internal");
  await assert.rejects(stat(broken), { code: "ENOENT" });
});
