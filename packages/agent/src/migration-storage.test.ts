import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, symlink } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { VmConfigSchema } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { checkCopies, checkCopyPaths, disksToCopy } from "./migration-storage.js";

const config = create(VmConfigSchema, {
  storage: [
    { id: "root", path: "/pool/local/root.qcow2" },
    { id: "iso", path: "/pool/local/install.iso", readOnly: true },
    { id: "data", path: "/shared/data.raw" },
    { id: "scratch", path: "/pool/local/scratch.raw" },
  ],
});
const copy = (diskId: string, extra: Partial<{ format: string; virtualSizeBytes: bigint }> = {}) => ({ diskId, format: "qcow2", virtualSizeBytes: 1n << 30n, ...extra });

test("copied: the writable disks not on shared storage; read-only and shared ones are used in place", () => {
  assert.deepEqual(disksToCopy(config, ["/shared"]), [0, 3]);
  assert.deepEqual(disksToCopy(config, ["/shared", "/pool"]), []);
});

test("disk_copies must name exactly the local writable disks, each once, with a format and size QEMU takes", () => {
  assert.deepEqual(checkCopies(config, [copy("root"), copy("scratch", { format: "raw" })], ["/shared"]), { violations: [], unshared: [], indexes: [0, 3] });
  const bad = checkCopies(config, [copy("nope"), copy("iso"), copy("data"), copy("root", { format: "vmdk", virtualSizeBytes: 1000n }), copy("root")], ["/shared"]);
  assert.deepEqual(bad.violations.map((v) => `${v.field} ${v.reason}`), [
    "disk_copies[0].disk_id NOT_FOUND",
    "disk_copies[1].disk_id NOT_ALLOWED",
    "disk_copies[2].disk_id NOT_ALLOWED",
    "disk_copies[3].format INVALID_VALUE",
    "disk_copies[3].virtual_size_bytes OUT_OF_RANGE",
    "disk_copies[4].disk_id DUPLICATE",
  ]);
  // A local disk left out would be used as this host has it: refused, naming it.
  assert.deepEqual(checkCopies(config, [copy("root")], ["/shared"]).unshared, ["storage[3].path /pool/local/scratch.raw"]);
});

test("a copy is created only in an existing directory below an allowed one, also through symlinks", async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), "quantix-copypaths-"));
  try {
    await mkdir(path.join(dir, "images", "pool"), { recursive: true });
    await symlink("/etc", path.join(dir, "images", "escape"));
    const cfg = create(VmConfigSchema, {
      storage: [
        { id: "a", path: path.join(dir, "images", "pool", "a.qcow2") },
        { id: "b", path: path.join(dir, "images", "escape", "b.qcow2") },
        { id: "c", path: path.join(dir, "images", "missing", "c.qcow2") },
        { id: "d", path: path.join(dir, "other.qcow2") },
      ],
    });
    const v = await checkCopyPaths(cfg, [0, 1, 2, 3], [path.join(dir, "images")]);
    assert.deepEqual(v.map((x) => x.field), ["config.storage[1].path", "config.storage[2].path", "config.storage[3].path"]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
