import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { closeSync, fstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { VmConfigSchema } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";
import { ensureDebianPackages } from "@quantix/testing";
import { openHostFiles } from "./host-files.js";

const root = mkdtempSync(join(tmpdir(), "quantix-host-files-unit-"));
const images = join(root, "images");
mkdirSync(images);
writeFileSync(join(images, "vmlinuz"), "kernel");
writeFileSync(join(images, "disk.img"), "disk");
writeFileSync(join(root, "secret"), "secret");
symlinkSync(join(images, "vmlinuz"), join(images, "alias"));
symlinkSync(join(root, "secret"), join(images, "sneaky"));
execFileSync("mkfifo", [join(images, "pipe")]);
after(() => rmSync(root, { recursive: true, force: true }));

const config = (kernelPath: string, disks: { path: string; readOnly?: boolean }[] = []) =>
  create(VmConfigSchema, { cpu: { vcpuCount: 1 }, memory: { sizeBytes: 128n << 20n }, boot: { kernelPath }, storage: disks.map((d, i) => ({ id: `d${i}`, ...d })) });

const refused = async (cfg: ReturnType<typeof config>, pattern: RegExp) => {
  await assert.rejects(openHostFiles(cfg, [images]), (e: unknown) => e instanceof QuantixError && e.code === "failed_precondition" && pattern.test(e.message));
};

test("opens the checked files: descriptors of the files themselves, disks read-write unless read-only", async () => {
  const files = await openHostFiles(config(join(images, "alias"), [{ path: join(images, "disk.img") }, { path: join(images, "disk.img"), readOnly: true }]), [images]);
  try {
    assert.equal(files.all.length, 3);
    assert.equal(readFileSync(files.kernel!.fd, "utf8"), "kernel", "a symlink inside the image dir leads to its file");
    assert.equal(fstatSync(files.disks[0]!.fd).isFile(), true);
    assert.throws(() => writeFileSync(files.disks[1]!.fd, "x"), /EBADF/, "a read-only disk is opened read-only");
  } finally {
    files.close();
  }
  assert.throws(() => closeSync(files.kernel!.fd), /EBADF/, "close() closed them");
});

test("refuses a file outside the image dirs (also through a symlink), a FIFO, a directory, a missing file; nothing stays open", async () => {
  await refused(config(join(images, "sneaky")), /boot\.kernel_path .*sneaky is not a file under an image directory/);
  await refused(config(join(root, "secret")), /not a file under an image directory/);
  await refused(config(join(images, "vmlinuz"), [{ path: join(images, "pipe") }]), /storage\[0\]\.path .*pipe is not a regular file or a block device/);
  await refused(config(join(images, "vmlinuz"), [{ path: images }]), /not a file under an image directory/);
  await refused(config(join(images, "missing")), /does not exist/);
  // The process's other handles come and go (the runner, libuv); only descriptors of this test's files count.
  const ours = () =>
    readdirSync("/proc/self/fd").filter((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`).startsWith(root);
      } catch {
        return false; // closed between the listing and the read
      }
    });
  assert.deepEqual(ours(), [], "no file of the test is open before the call");
  await refused(config(join(images, "vmlinuz"), [{ path: join(images, "disk.img") }, { path: join(images, "pipe") }]), /pipe/);
  assert.deepEqual(ours(), [], "the files opened before the refused one were closed");
});

test("refuses a qcow2 disk with a backing file (the hypervisor would open it by name); a plain qcow2 is fine", async () => {
  await ensureDebianPackages(["qemu-utils"]);
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", join(images, "plain.qcow2"), "1M"]);
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "raw", "-b", join(root, "secret"), join(images, "overlay.qcow2"), "1M"]);
  const files = await openHostFiles(config(join(images, "vmlinuz"), [{ path: join(images, "plain.qcow2") }]), [images]);
  files.close();
  await refused(config(join(images, "vmlinuz"), [{ path: join(images, "overlay.qcow2") }]), /storage\[0\]\.path .*overlay\.qcow2 is a qcow2 image with a backing file/);
});
