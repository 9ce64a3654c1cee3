import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { ensureDebianPackages, quantixRejection, until } from "@quantix/testing";
import { NodeStorage } from "./node-storage.js";
import { QemuImg } from "./qemu-img.js";

// NodeStorage below the RPC layer, on real qemu-img: failures that leave nothing behind,
// serialised calls on one volume, a volume in use, the capability probe.

const MIB = 1024n * 1024n;
const root = mkdtempSync(join(tmpdir(), "quantix-sa-node-"));
before(() => ensureDebianPackages(["qemu-utils"]));
after(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
const uuid = () => `00000000-0000-4000-9000-${(++n).toString(16).padStart(12, "0")}`;
const storage = (name: string, qemuImg?: QemuImg) => new NodeStorage({ poolRoot: join(root, name), sharedDirs: [], ...(qemuImg ? { qemuImg } : {}) });

test("ensures of one new pool at once all succeed, leaving its one marker", async () => {
  const s = storage("ensure-race");
  const id = uuid();
  const pools = await Promise.all(Array.from({ length: 8 }, () => s.ensurePool(id, "DIR", "")));
  assert.ok(pools.every((p) => p.id === id));
  assert.deepEqual(readdirSync(join(root, "ensure-race", id)), [".quantix-pool"]);
});

test("a qemu-img that fails midway leaves no partial file and no volume", async () => {
  // A stand-in that writes to every absolute path it is given, then fails as a full disk would.
  const fake = join(root, "failing-qemu-img");
  writeFileSync(fake, '#!/bin/sh\nfor a in "$@"; do case "$a" in /*) echo partial > "$a";; esac; done\necho "No space left on device" >&2\nexit 1\n');
  chmodSync(fake, 0o755);
  const s = storage("failing", new QemuImg({ binary: fake }));
  const pool = uuid();
  const { dir } = await s.pools.ensure(pool, "DIR", "");
  const err = await quantixRejection(s.volumes.create({ poolId: pool, id: uuid(), format: "qcow2", sizeBytes: MIB }));
  assert.equal(err.code, "internal");
  assert.match(err.message, /No space left on device/);
  assert.doesNotMatch(err.message, new RegExp(root), "qemu-img's paths are cut to file names");
  assert.deepEqual(readdirSync(dir), [".quantix-pool"]);
});

/** Real qemu-img whose creates wait at a gate the test opens: a create held in flight. */
class GatedQemuImg extends QemuImg {
  entered!: () => void;
  readonly inside = new Promise<void>((resolve) => (this.entered = resolve));
  open!: () => void;
  readonly gate = new Promise<void>((resolve) => (this.open = resolve));
  override async create(...args: Parameters<QemuImg["create"]>): Promise<void> {
    this.entered();
    await this.gate;
    return super.create(...args);
  }
}

test("concurrent identical creates make one volume; a pool with a create in flight is not deleted", async () => {
  const gated = new GatedQemuImg();
  const s = storage("concurrent", gated);
  const pool = uuid();
  const { dir } = await s.pools.ensure(pool, "DIR", "");
  const id = uuid();
  const spec = { poolId: pool, id, format: "qcow2", sizeBytes: 8n * MIB } as const;
  const creating = Promise.all([s.volumes.create(spec), s.volumes.create(spec), s.volumes.create(spec)]);
  await gated.inside;
  const refused = await quantixRejection(s.deletePool(pool));
  gated.open();
  assert.equal(refused.code, "failed_precondition");
  const made = await creating;
  assert.deepEqual(new Set(made.map((v) => v.path)).size, 1);
  assert.deepEqual(readdirSync(dir).sort(), [".quantix-pool", `${id}.qcow2`]);
});

test("a volume a process holds open is not resized, linked to or deleted without force", async () => {
  const s = storage("in-use");
  const pool = uuid();
  await s.pools.ensure(pool, "DIR", "");
  const id = uuid();
  const v = await s.volumes.create({ poolId: pool, id, format: "qcow2", sizeBytes: MIB });
  // qemu-io keeps the image open read-write, with QEMU's locks, as a running VM does.
  const holder = spawn("qemu-io", ["-f", "qcow2", v.path, "-c", "sleep 20000"], { stdio: "ignore" });
  try {
    const qemuImg = new QemuImg();
    await until(() => qemuImg.info(v.path, "qcow2", { shared: false }).then(() => undefined, () => true), "qemu-io holds the image's lock", 5000);
    const del = await quantixRejection(s.volumes.delete(pool, id, false));
    assert.equal(del.code, "failed_precondition");
    assert.match(del.message, /in use/);
    assert.equal((await s.volumes.get(pool, id)).virtualSizeBytes, MIB, "GetVolume reads it anyway (-U)");
    const resize = await quantixRejection(s.volumes.resize(pool, id, 2n * MIB, false));
    assert.equal(resize.code, "failed_precondition");
    assert.match(resize.message, /in use/);
    const clone = await quantixRejection(s.volumes.create({ poolId: pool, id: uuid(), format: "qcow2", sizeBytes: 0n, source: { volumeId: id, mode: "linked" } }));
    assert.equal(clone.code, "failed_precondition", "no linked clone of a volume being written");
    await s.volumes.delete(pool, id, true);
    assert.equal((await quantixRejection(s.volumes.get(pool, id))).code, "not_found");
  } finally {
    holder.kill("SIGKILL");
  }
});

test("the capability probe reports a tool it finds and the reason for one it does not", async () => {
  const bin = join(root, "bin");
  mkdirSync(bin);
  writeFileSync(join(bin, "rbd"), "#!/bin/sh\n");
  chmodSync(join(bin, "rbd"), 0o755);
  const s = new NodeStorage({ poolRoot: join(root, "caps"), sharedDirs: [], binDirs: [bin] });
  const caps = await s.capabilities();
  const by = new Map(caps.poolTypes.map((p) => [p.type, p]));
  assert.equal(by.get("CEPH_RBD")?.available, true);
  assert.equal(by.get("CEPH_RBD")?.managed, false);
  assert.match(by.get("NFS")?.reason ?? "", /mount\.nfs not found/);
  assert.equal(by.get("SHARED_DIR")?.available, false);
  assert.match(by.get("SHARED_DIR")?.reason ?? "", /VMCP_SHARED_DIRS/);
  assert.equal(by.get("DIR")?.available, true);
});
