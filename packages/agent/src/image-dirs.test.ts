import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { VmConfigSchema } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";
import { SimulatedBackend } from "./backends/simulated/simulated-backend.js";
import { checkImagePaths } from "./image-dirs.js";
import { VmManager } from "./vm-manager.js";

const MIB = 1024n * 1024n;

/** An images dir with a kernel, a symlink out to /etc/shadow, and a shared dir with an initrd. */
async function layout() {
  const root = await mkdtemp(path.join(os.tmpdir(), "quantix-image-dirs-"));
  const images = path.join(root, "images");
  const shared = path.join(root, "shared");
  await mkdir(images);
  await mkdir(shared);
  await writeFile(path.join(images, "vmlinuz"), "kernel");
  await writeFile(path.join(shared, "initrd.gz"), "initrd");
  await symlink("/etc/shadow", path.join(images, "sneaky.img"));
  return { root, images, shared, [Symbol.asyncDispose]: () => rm(root, { recursive: true, force: true }) };
}

function config(kernelPath: string, initrdPath: string, disks: string[]) {
  return create(VmConfigSchema, {
    cpu: { vcpuCount: 1 },
    memory: { sizeBytes: 256n * MIB },
    boot: { kernelPath, initrdPath },
    storage: disks.map((p, i) => ({ id: `d${i}`, path: p })),
  });
}

test("paths are checked after realpath: a symlink or '..' out of an image dir, a device, a missing file are refused", async () => {
  await using l = await layout();
  const cfg = config(path.join(l.images, "vmlinuz"), path.join(l.images, "..", "shared", "initrd.gz"), [
    path.join(l.images, "sneaky.img"),
    "/dev/null",
    path.join(l.images, "..", "elsewhere.img"),
    path.join(l.images, "missing.img"),
    l.images,
  ]);
  const byField = new Map((await checkImagePaths(cfg, [l.images])).map((v) => [v.field, v]));
  assert.equal(byField.has("config.boot.kernel_path"), false, "a file in the image dir is fine");
  assert.equal(byField.get("config.boot.initrd_path")?.reason, "NOT_ALLOWED", "'..' leads out");
  assert.equal(byField.get("config.storage[0].path")?.reason, "NOT_ALLOWED", "a symlink to /etc/shadow");
  assert.equal(byField.get("config.storage[1].path")?.reason, "NOT_ALLOWED", "a device");
  assert.equal(byField.get("config.storage[2].path")?.reason, "NOT_FOUND");
  assert.equal(byField.get("config.storage[3].path")?.reason, "NOT_FOUND");
  assert.equal(byField.get("config.storage[4].path")?.reason, "NOT_ALLOWED", "the directory itself is no image");
  assert.match(byField.get("config.storage[0].path")!.description, new RegExp(`VMCP_IMAGE_DIRS\\) are ${l.images}`));
});

test("CreateVm refuses /etc/shadow and /dev/sda with INVALID_ARGUMENT naming the field and the allowed dirs; shared dirs are allowed too", async () => {
  await using l = await layout();
  const backend = new SimulatedBackend({ bootMs: 1, consoleIntervalMs: 0 });
  const m = new VmManager({ backend, imageDirs: [l.images], sharedDirs: [l.shared] });
  await m.start();
  try {
    const err = await m.create("vm-bad", config("/etc/shadow", "", ["/dev/sda"])).then(() => assert.fail("created"), (e: unknown) => e);
    assert.ok(err instanceof QuantixError);
    assert.equal(err.code, "invalid_argument");
    assert.deepEqual(err.violations.map((v) => v.field).sort(), ["config.boot.kernel_path", "config.storage[0].path"]);
    assert.ok(err.violations.every((v) => v.description.includes(l.images) && v.description.includes(l.shared)));
    assert.deepEqual(await backend.listVMs(), []);
    const ok = await m.create("vm-good", config(path.join(l.images, "vmlinuz"), path.join(l.shared, "initrd.gz"), []));
    assert.equal(ok.state, "created");
  } finally {
    m.close();
    await backend.close();
  }
});
