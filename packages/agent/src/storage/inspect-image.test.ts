import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { closeSync, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, symlinkSync, writeFileSync, writeSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { ensureDebianPackages } from "@quantix/testing";
import { ImageRefusedError, inspectImage, type RefusalReason } from "./inspect-image.js";

// inspectImage on real files made by real qemu-img: what it accepts, and each hostile
// image of research §4 refused with its reason and without touching the host file.

const dir = mkdtempSync(join(tmpdir(), "quantix-sa-inspect-"));
const img = (...args: string[]) => execFileSync("qemu-img", ["create", "-q", ...args]);
const p = (name: string) => join(dir, name);
before(() => ensureDebianPackages(["qemu-utils"]));
after(() => rmSync(dir, { recursive: true, force: true }));

const refused = async (path: string, reason: RefusalReason, options: Parameters<typeof inspectImage>[1] = {}) => {
  await assert.rejects(inspectImage(path, options), (e: unknown) => e instanceof ImageRefusedError && e.reason === reason && e.code === "failed_precondition");
};

test("accepts qcow2, raw, vmdk (sparse), vdi and vhdx, with the format from the content", async () => {
  for (const format of ["qcow2", "raw", "vmdk", "vdi", "vhdx"] as const) {
    img("-f", format, p(`ok.${format}`), "2M");
    const got = await inspectImage(p(`ok.${format}`));
    assert.equal(got.format, format);
    assert.equal(got.virtualSizeBytes, 2n * 1024n * 1024n);
    assert.equal(got.backing, undefined);
    assert.equal(got.iso, false);
  }
});

test("a raw file with an ISO 9660 descriptor is raw and flagged iso", async () => {
  const buf = Buffer.alloc(0x9000);
  buf.write("CD001", 0x8001, "latin1");
  writeFileSync(p("disc.iso"), buf);
  const got = await inspectImage(p("disc.iso"));
  assert.equal(got.format, "raw");
  assert.equal(got.iso, true);
});

test("a qcow2 with a backing file is refused unless it is a sibling volume with an explicit format", async () => {
  const secret = p("secret");
  writeFileSync(secret, "host data");
  img("-f", "qcow2", "-b", secret, "-F", "raw", p("hostile.qcow2"), "1M");
  await refused(p("hostile.qcow2"), "BACKING_FILE");
  await refused(p("hostile.qcow2"), "BACKING_FILE", { backingDir: dir });
  const base = "00000000-0000-4000-8000-000000000001.qcow2";
  img("-f", "qcow2", p(base), "1M");
  img("-f", "qcow2", "-b", base, "-F", "qcow2", p("clone.qcow2"));
  await refused(p("clone.qcow2"), "BACKING_FILE", {}); // an image to import has no backing file
  const ok = await inspectImage(p("clone.qcow2"), { backingDir: dir });
  assert.deepEqual(ok.backing, { file: base, format: "qcow2" });
  img("-f", "qcow2", "-b", `../${base}`, "-F", "qcow2", "-u", p("climb.qcow2"), "1M");
  await refused(p("climb.qcow2"), "BACKING_FILE", { backingDir: dir });
  assert.equal(readFileSync(secret, "utf8"), "host data");
});

test("a qcow2 with an external data file is refused", async () => {
  // Making one zeroes the target (research §4): the reason an importer must never create
  // or attach it. Here the target is a scratch file.
  img("-f", "qcow2", "-o", `data_file=${p("target")}`, p("datafile.qcow2"), "1M");
  await refused(p("datafile.qcow2"), "DATA_FILE");
});

test("a VMDK whose extent is another file is refused", async () => {
  img("-f", "vmdk", "-o", "subformat=monolithicFlat", p("flat.vmdk"), "1M");
  await refused(p("flat.vmdk"), "EXTERNAL_EXTENT");
});

test("a symlink, a FIFO and a directory are refused without being opened", async () => {
  img("-f", "raw", p("target.raw"), "1M");
  symlinkSync(p("target.raw"), p("link.raw"));
  await refused(p("link.raw"), "NOT_A_FILE", { format: "raw" });
  execFileSync("mkfifo", [p("fifo")]);
  await refused(p("fifo"), "NOT_A_FILE"); // opening it would block until a writer came
  mkdirSync(p("dir"));
  await refused(p("dir"), "NOT_A_FILE");
});

test("the corrupt flag, a format the agent does not take, a wrong claimed format and a size over the limit are refused", async () => {
  img("-f", "qcow2", p("corrupt.qcow2"), "1M");
  const fd = openSync(p("corrupt.qcow2"), "r+");
  writeSync(fd, Buffer.from([0x02]), 0, 1, 79); // incompatible_features bit 1: corrupt
  closeSync(fd);
  await refused(p("corrupt.qcow2"), "CORRUPT");
  img("-f", "qed", p("old.qed"), "1M");
  await refused(p("old.qed"), "UNKNOWN_FORMAT");
  img("-f", "raw", p("plain.raw"), "1M");
  await refused(p("plain.raw"), "FORMAT_MISMATCH", { format: "qcow2" });
  assert.equal((await inspectImage(p("ok.qcow2"), { format: "raw" })).format, "raw", "a raw volume's content never changes its format");
  await refused(p("plain.raw"), "TOO_LARGE", { maxVirtualBytes: 512n * 1024n });
});
