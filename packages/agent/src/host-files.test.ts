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

test("opens a linked clone's backing chain read-only when every layer is a volume of its own pool, named by id with its format stated", async () => {
  await ensureDebianPackages(["qemu-utils"]);
  const pool = join(root, "pool");
  mkdirSync(pool);
  const [base, mid, top] = ["11111111-1111-4111-8111-111111111111", "22222222-2222-4222-8222-222222222222", "33333333-3333-4333-8333-333333333333"];
  execFileSync("qemu-img", ["create", "-q", "-f", "raw", join(pool, `${base}.raw`), "1M"]);
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", `${base}.raw`, "-F", "raw", join(pool, `${mid}.qcow2`)]);
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", `${mid}.qcow2`, "-F", "qcow2", join(pool, `${top}.qcow2`)]);
  const files = await openHostFiles(config(join(images, "vmlinuz"), [{ path: join(pool, `${top}.qcow2`) }]), [images, pool]);
  try {
    const chain = files.backing[0]!;
    assert.deepEqual(chain.map((b) => [b.field, b.real, b.format]), [
      ["storage[0].path.backing[0]", join(pool, `${mid}.qcow2`), "qcow2"],
      ["storage[0].path.backing[1]", join(pool, `${base}.raw`), "raw"],
    ]);
    assert.equal(files.all.length, 4, "kernel, disk and two layers, each its own descriptor");
    for (const b of chain) assert.throws(() => writeFileSync(b.fd, "x"), /EBADF/, "a backing layer is opened read-only");
  } finally {
    files.close();
  }
});

test("refuses a backing layer that is not a volume of the same pool, whose format is not stated or not what it is, an external data file, or a chain too deep", async () => {
  await ensureDebianPackages(["qemu-utils"]);
  const pool = join(root, "pool2");
  mkdirSync(pool);
  const id = (n: number) => `00000000-0000-4000-8000-${n.toString().padStart(12, "0")}`;
  const disk = (name: string) => config(join(images, "vmlinuz"), [{ path: join(pool, name) }]);
  const refusedIn = (cfg: ReturnType<typeof config>, pattern: RegExp) =>
    assert.rejects(openHostFiles(cfg, [images, pool]), (e: unknown) => e instanceof QuantixError && e.code === "failed_precondition" && pattern.test(e.message));
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", join(pool, `${id(1)}.qcow2`), "1M"]);
  // An absolute name, even of a volume beside it, is a name QEMU would resolve: refused.
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", join(pool, `${id(1)}.qcow2`), "-F", "qcow2", join(pool, `${id(2)}.qcow2`)]);
  await refusedIn(disk(`${id(2)}.qcow2`), /backing file that is not a volume of its own pool/);
  // The stated format must be the one the name gives.
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", `${id(1)}.qcow2`, "-F", "raw", join(pool, `${id(3)}.qcow2`), "1M"]);
  await refusedIn(disk(`${id(3)}.qcow2`), /backing file that is not a volume of its own pool/);
  // A layer whose content is not what its name says (raw bytes under a .qcow2 name).
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", join(pool, `${id(4)}.qcow2`), "1M"]);
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", `${id(4)}.qcow2`, "-F", "qcow2", join(pool, `${id(5)}.qcow2`)]);
  writeFileSync(join(pool, `${id(4)}.qcow2`), Buffer.alloc(1 << 20));
  await refusedIn(disk(`${id(5)}.qcow2`), /whose content is not the qcow2 its name says/);
  // An external data file is opened by name as well.
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-o", `data_file=${join(root, "secret-data")}`, join(pool, `${id(6)}.qcow2`), "1M"]);
  await refusedIn(disk(`${id(6)}.qcow2`), /external data file/);
  // A chain of 18 layers.
  let below = id(1);
  for (let n = 100; n < 118; n++) {
    execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", `${below}.qcow2`, "-F", "qcow2", join(pool, `${id(n)}.qcow2`)]);
    below = id(n);
  }
  await refusedIn(disk(`${below}.qcow2`), /backing chain deeper than 16 layers/);
});
