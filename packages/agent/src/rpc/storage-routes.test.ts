import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { Code, createClient, type Client, type ConnectError } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { CloneMode, StoragePoolType, StorageService, VolumeFormat } from "@quantix/api/gen/vmm/v1/storage_pb.js";
import { silentLogger } from "@quantix/rpc";
import { ensureDebianPackages, rejection, until } from "@quantix/testing";
import { SimulatedBackend } from "../backends/simulated/simulated-backend.js";
import { NodeStorage } from "../storage/node-storage.js";
import { VmManager } from "../vm-manager.js";
import { startAgentServer, type AgentServer } from "./agent-server.js";

// StorageService over a real agent server on port 0, called with a real gRPC client, on
// real qemu-img: every assertion checks the files on disk as well as the answers.

const MIB = 1024n * 1024n;
const root = mkdtempSync(join(tmpdir(), "quantix-sa-"));
const poolRoot = join(root, "pools");
const shared = join(root, "shared");
mkdirSync(shared);
let backend: SimulatedBackend;
let server: AgentServer;
let c: Client<typeof StorageService>;

before(async () => {
  await ensureDebianPackages(["qemu-utils"]);
  backend = new SimulatedBackend({ bootMs: 20 });
  const manager = new VmManager({ backend });
  await manager.start();
  server = await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: silentLogger, storage: new NodeStorage({ poolRoot, sharedDirs: [shared] }) });
  c = createClient(StorageService, createGrpcTransport({ baseUrl: server.url }));
});
after(async () => {
  await server?.close();
  await backend?.close();
  rmSync(root, { recursive: true, force: true });
});

let n = 0;
/** A fresh UUID-shaped id, distinct per call and readable in failures. */
const uuid = () => `00000000-0000-4000-8000-${(++n).toString(16).padStart(12, "0")}`;
const fields = (e: ConnectError) => e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));
const files = (dir: string) => readdirSync(dir).sort();

test("pools and volumes round trip: empty, linked and full clones, info, resize, delete, capacity", async () => {
  const pool = uuid();
  const p = await c.ensurePool({ poolId: pool, type: StoragePoolType.DIR });
  assert.equal(p.path, join(poolRoot, pool));
  assert.equal(p.capacity?.volumeCount, 0);
  assert.ok((p.capacity?.totalBytes ?? 0n) > 0n && (p.capacity?.availableBytes ?? 0n) > 0n);
  assert.deepEqual(await c.ensurePool({ poolId: pool, type: StoragePoolType.DIR }).then((x) => x.path), p.path, "EnsurePool is idempotent");

  const base = uuid();
  const v = await c.createVolume({ poolId: pool, volumeId: base, format: VolumeFormat.QCOW2, sizeBytes: 64n * MIB });
  assert.equal(v.virtualSizeBytes, 64n * MIB);
  assert.equal(v.format, VolumeFormat.QCOW2);
  assert.equal(v.path, join(poolRoot, pool, `${base}.qcow2`));
  assert.equal(v.backingVolumeId, "");
  assert.equal((await c.createVolume({ poolId: pool, volumeId: base, format: VolumeFormat.QCOW2, sizeBytes: 64n * MIB })).path, v.path, "CreateVolume is idempotent");
  const clash = await rejection(c.createVolume({ poolId: pool, volumeId: base, format: VolumeFormat.QCOW2, sizeBytes: 128n * MIB }));
  assert.equal(clash.code, Code.AlreadyExists);

  const linked = uuid();
  const l = await c.createVolume({ poolId: pool, volumeId: linked, format: VolumeFormat.QCOW2, source: { volumeId: base, mode: CloneMode.LINKED } });
  assert.equal(l.backingVolumeId, base);
  assert.equal(l.virtualSizeBytes, 64n * MIB);
  assert.equal((await c.createVolume({ poolId: pool, volumeId: linked, format: VolumeFormat.QCOW2, source: { volumeId: base, mode: CloneMode.LINKED } })).backingVolumeId, base, "a linked clone again: the same clone");
  const notLinked = await rejection(c.createVolume({ poolId: pool, volumeId: linked, format: VolumeFormat.QCOW2, sizeBytes: 64n * MIB }));
  assert.equal(notLinked.code, Code.AlreadyExists, "an empty volume of the same id is not that clone");
  assert.match(notLinked.message, /linked to volume/);
  const info = JSON.parse(execFileSync("qemu-img", ["info", "--output=json", "-U", "-f", "qcow2", l.path], { encoding: "utf8" }));
  assert.equal(info["backing-filename"], `${base}.qcow2`, "the backing file is relative, so the pool can move or be mounted elsewhere");
  assert.equal(info["backing-filename-format"], "qcow2", "the backing format is explicit");

  const full = uuid();
  const f = await c.createVolume({ poolId: pool, volumeId: full, format: VolumeFormat.RAW, sizeBytes: 96n * MIB, source: { volumeId: linked, mode: CloneMode.FULL } });
  assert.equal(f.format, VolumeFormat.RAW);
  assert.equal(f.virtualSizeBytes, 96n * MIB, "a full copy grows to the size asked");
  assert.equal(f.backingVolumeId, "");
  assert.equal((await c.getVolume({ poolId: pool, volumeId: linked })).backingVolumeId, base);

  const list = await c.listVolumes({ poolId: pool });
  assert.deepEqual(
    list.volumes.map((x) => x.volumeId),
    [base, linked, full].sort(),
  );
  const measured = await c.getPool({ poolId: pool });
  assert.equal(measured.capacity?.volumeCount, 3);
  assert.equal(measured.capacity?.provisionedBytes, (64n + 64n + 96n) * MIB);
  assert.equal(measured.capacity?.allocatedBytes, list.volumes.reduce((s, x) => s + x.actualSizeBytes, 0n));

  assert.equal((await c.resizeVolume({ poolId: pool, volumeId: base, sizeBytes: 128n * MIB })).virtualSizeBytes, 128n * MIB);
  const shrink = await rejection(c.resizeVolume({ poolId: pool, volumeId: full, sizeBytes: 32n * MIB }));
  assert.equal(shrink.code, Code.FailedPrecondition);
  assert.match(shrink.message, /allow_shrink/);
  assert.equal((await c.getVolume({ poolId: pool, volumeId: full })).virtualSizeBytes, 96n * MIB, "a refused shrink changes nothing");
  assert.equal((await c.resizeVolume({ poolId: pool, volumeId: full, sizeBytes: 32n * MIB, allowShrink: true })).virtualSizeBytes, 32n * MIB);

  const shrinkBase = await rejection(c.resizeVolume({ poolId: pool, volumeId: base, sizeBytes: 32n * MIB, allowShrink: true }));
  assert.equal(shrinkBase.code, Code.FailedPrecondition, "a backing file does not shrink under its clones");
  assert.match(shrinkBase.message, new RegExp(linked));
  const inUse = await rejection(c.deleteVolume({ poolId: pool, volumeId: base }));
  assert.equal(inUse.code, Code.FailedPrecondition);
  assert.match(inUse.message, new RegExp(`backing file of volume '${linked}'`));
  assert.ok(existsSync(v.path));
  const notEmpty = await rejection(c.deletePool({ poolId: pool }));
  assert.equal(notEmpty.code, Code.FailedPrecondition);
  assert.match(notEmpty.message, /3 volume/);

  for (const id of [linked, base, full]) await c.deleteVolume({ poolId: pool, volumeId: id });
  assert.deepEqual(files(join(poolRoot, pool)), [".quantix-pool"]);
  assert.equal((await rejection(c.deleteVolume({ poolId: pool, volumeId: base }))).code, Code.NotFound);
  await c.deletePool({ poolId: pool });
  assert.equal(existsSync(join(poolRoot, pool)), false);
  assert.equal((await rejection(c.getPool({ poolId: pool }))).code, Code.NotFound);
});

test("bad input: field paths, unknown ids, sizes above free space, and nothing created", async () => {
  const bad = await rejection(c.createVolume({ poolId: "../etc", volumeId: "x/y", format: VolumeFormat.UNSPECIFIED, sizeBytes: 1000n, source: { volumeId: "-rf", mode: CloneMode.LINKED } }));
  assert.equal(bad.code, Code.InvalidArgument);
  assert.deepEqual(fields(bad).sort(), ["format", "pool_id", "size_bytes", "source.volume_id", "volume_id"]);
  assert.deepEqual(fields(await rejection(c.getVolume({ poolId: uuid(), volumeId: "A0000000-0000-4000-8000-000000000000" }))), ["volume_id"], "upper case is not canonical");
  assert.deepEqual(fields(await rejection(c.ensurePool({ poolId: uuid(), type: StoragePoolType.DIR, path: "/etc" }))), ["path"]);
  assert.deepEqual(fields(await rejection(c.ensurePool({ poolId: uuid(), type: StoragePoolType.SHARED_DIR, path: "/etc" }))), ["path"], "a shared pool lies below VMCP_SHARED_DIRS");
  assert.deepEqual(fields(await rejection(c.resizeVolume({ poolId: uuid(), volumeId: uuid(), sizeBytes: 0n }))), ["size_bytes"]);
  const nfs = await rejection(c.ensurePool({ poolId: uuid(), type: StoragePoolType.NFS }));
  assert.equal(nfs.code, Code.FailedPrecondition);
  assert.match(nfs.message, /not managed/);

  const ghost = uuid();
  const missingPool = await rejection(c.createVolume({ poolId: ghost, volumeId: uuid(), format: VolumeFormat.QCOW2, sizeBytes: MIB }));
  assert.equal(missingPool.code, Code.NotFound);
  assert.match(missingPool.message, new RegExp(ghost));
  assert.equal(existsSync(join(poolRoot, ghost)), false);

  const pool = uuid();
  await c.ensurePool({ poolId: pool, type: StoragePoolType.DIR });
  const missingVolume = uuid();
  const nf = await rejection(c.getVolume({ poolId: pool, volumeId: missingVolume }));
  assert.equal(nf.code, Code.NotFound);
  assert.match(nf.message, new RegExp(missingVolume));
  const noSource = await rejection(c.createVolume({ poolId: pool, volumeId: uuid(), format: VolumeFormat.QCOW2, source: { volumeId: missingVolume, mode: CloneMode.LINKED } }));
  assert.equal(noSource.code, Code.NotFound);
  assert.match(noSource.message, /source volume/);

  const huge = await rejection(c.createVolume({ poolId: pool, volumeId: uuid(), format: VolumeFormat.RAW, sizeBytes: 64n * 1024n * 1024n * MIB }));
  assert.equal(huge.code, Code.ResourceExhausted);
  assert.deepEqual(files(join(poolRoot, pool)), [".quantix-pool"], "a refused create leaves no file");

  const small = uuid();
  await c.createVolume({ poolId: pool, volumeId: small, format: VolumeFormat.QCOW2, sizeBytes: MIB });
  assert.equal((await rejection(c.resizeVolume({ poolId: pool, volumeId: small, sizeBytes: 64n * 1024n * 1024n * MIB }))).code, Code.ResourceExhausted);
  const cloneTooSmall = await rejection(c.createVolume({ poolId: pool, volumeId: uuid(), format: VolumeFormat.QCOW2, sizeBytes: 512n, source: { volumeId: small, mode: CloneMode.LINKED } }));
  assert.deepEqual(fields(cloneTooSmall), ["size_bytes"]);
  await c.deleteVolume({ poolId: pool, volumeId: small });
  await c.deletePool({ poolId: pool });
});

test("a pool directory is taken only when it is empty or marked with its own id", async () => {
  const mine = uuid();
  const other = uuid();
  // A DIR pool whose directory's marker names another pool (a copied or reused directory).
  mkdirSync(join(poolRoot, mine), { recursive: true });
  writeFileSync(join(poolRoot, mine, ".quantix-pool"), `${other}\n`);
  const taken = await rejection(c.ensurePool({ poolId: mine, type: StoragePoolType.DIR }));
  assert.equal(taken.code, Code.FailedPrecondition);
  assert.match(taken.message, new RegExp(`names '${other}'`));
  assert.equal((await rejection(c.getPool({ poolId: mine }))).code, Code.FailedPrecondition, "nor is it used as a pool");
  rmSync(join(poolRoot, mine), { recursive: true });

  // SHARED_DIR: an empty directory is marked; another pool's or a non-empty one is refused.
  const dir = join(shared, "vmstore");
  mkdirSync(dir);
  const s = await c.ensurePool({ poolId: mine, type: StoragePoolType.SHARED_DIR, path: dir });
  assert.equal(s.path, dir);
  assert.equal(s.type, StoragePoolType.SHARED_DIR);
  assert.equal((await rejection(c.ensurePool({ poolId: other, type: StoragePoolType.SHARED_DIR, path: dir }))).code, Code.FailedPrecondition);
  const busy = join(shared, "busy");
  mkdirSync(busy);
  writeFileSync(join(busy, "someone-elses-file"), "x");
  const nonEmpty = await rejection(c.ensurePool({ poolId: other, type: StoragePoolType.SHARED_DIR, path: busy }));
  assert.equal(nonEmpty.code, Code.FailedPrecondition);
  assert.match(nonEmpty.message, /not empty/);
  assert.deepEqual(files(busy), ["someone-elses-file"]);

  // A symlink below the shared directory that leads out of it is judged by where it leads.
  symlinkSync(root, join(shared, "escape"));
  assert.deepEqual(fields(await rejection(c.ensurePool({ poolId: other, type: StoragePoolType.SHARED_DIR, path: join(shared, "escape") }))), ["path"]);
  assert.deepEqual(fields(await rejection(c.ensurePool({ poolId: other, type: StoragePoolType.SHARED_DIR, path: `${shared}/../etc` }))), ["path"], "paths are normalized");
  assert.deepEqual(fields(await rejection(c.ensurePool({ poolId: other, type: StoragePoolType.SHARED_DIR, path: shared }))), ["path"], "strictly below, not the shared directory itself");
  const missing = await rejection(c.ensurePool({ poolId: other, type: StoragePoolType.SHARED_DIR, path: join(shared, "not-mounted") }));
  assert.equal(missing.code, Code.FailedPrecondition);
  assert.equal(existsSync(join(poolRoot, other)), false, "refusals create no pool entry");

  const vol = uuid();
  assert.equal((await c.createVolume({ poolId: mine, volumeId: vol, format: VolumeFormat.QCOW2, sizeBytes: MIB })).path, join(dir, `${vol}.qcow2`));
  const measured = await c.getPool({ poolId: mine });
  assert.equal(measured.type, StoragePoolType.SHARED_DIR, "found again through <pool root>/<pool id>");
  assert.equal(measured.capacity?.volumeCount, 1);
  assert.equal((await c.ensurePool({ poolId: mine, type: StoragePoolType.SHARED_DIR, path: dir })).path, dir, "EnsurePool again: the same pool");
  assert.equal((await rejection(c.ensurePool({ poolId: mine, type: StoragePoolType.DIR }))).code, Code.FailedPrecondition, "nor is it a DIR pool");
  // The share "unmounted": its marker gone, the agent writes nothing there.
  rmSync(join(dir, ".quantix-pool"));
  const unmounted = await rejection(c.createVolume({ poolId: mine, volumeId: uuid(), format: VolumeFormat.QCOW2, sizeBytes: MIB }));
  assert.equal(unmounted.code, Code.FailedPrecondition);
  assert.match(unmounted.message, /mounted/);
  writeFileSync(join(dir, ".quantix-pool"), `${mine}\n`);
  await c.deleteVolume({ poolId: mine, volumeId: vol });
  await c.deletePool({ poolId: mine });
  assert.deepEqual(files(dir), [], "the shared directory stays, without the marker");
  assert.equal(existsSync(join(poolRoot, mine)), false);
});

test("hostile files in a pool (a qcow2 backed by a host file, a symlink to one) are refused, and cloning them creates nothing", async () => {
  const pool = uuid();
  const p = await c.ensurePool({ poolId: pool, type: StoragePoolType.DIR });
  const secret = join(root, "secret");
  writeFileSync(secret, "host data");
  const hostile = uuid();
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", secret, "-F", "raw", join(p.path, `${hostile}.qcow2`), "1M"]);
  const got = await rejection(c.getVolume({ poolId: pool, volumeId: hostile }));
  assert.equal(got.code, Code.FailedPrecondition);
  assert.match(got.message, /image refused: .*backing file/);
  assert.doesNotMatch(got.message, new RegExp(root), "no host path in the message");
  const clone = await rejection(c.createVolume({ poolId: pool, volumeId: uuid(), format: VolumeFormat.QCOW2, source: { volumeId: hostile, mode: CloneMode.FULL } }));
  assert.equal(clone.code, Code.FailedPrecondition);
  // The listing names the file and its problem; the pool's capacity is still measured.
  const listed = await c.listVolumes({ poolId: pool });
  assert.equal(listed.volumes.length, 1);
  assert.equal(listed.volumes[0]?.volumeId, hostile);
  assert.match(listed.volumes[0]?.problem ?? "", /backing file/);
  assert.equal(listed.volumes[0]?.virtualSizeBytes, 0n);
  assert.equal((await c.getPool({ poolId: pool })).capacity?.provisionedBytes, 0n);
  assert.deepEqual(files(p.path), [".quantix-pool", `${hostile}.qcow2`]);
  // A volume-named symlink to a host file: refused, listed with its problem, and deleting it
  // removes the link only.
  const link = uuid();
  symlinkSync(secret, join(p.path, `${link}.raw`));
  const viaLink = await rejection(c.getVolume({ poolId: pool, volumeId: link }));
  assert.equal(viaLink.code, Code.FailedPrecondition);
  assert.match(viaLink.message, /not a regular file/);
  assert.match((await c.listVolumes({ poolId: pool })).volumes.find((x) => x.volumeId === link)?.problem ?? "", /symlink/);
  const linkClone = await rejection(c.createVolume({ poolId: pool, volumeId: uuid(), format: VolumeFormat.RAW, source: { volumeId: link, mode: CloneMode.FULL } }));
  assert.equal(linkClone.code, Code.FailedPrecondition);
  await c.deleteVolume({ poolId: pool, volumeId: link });
  assert.equal(readFileSync(secret, "utf8"), "host data");
  await c.deleteVolume({ poolId: pool, volumeId: hostile });
  await c.deletePool({ poolId: pool });
});

test("an agent started without storage answers UNIMPLEMENTED for StorageService", async () => {
  const manager = new VmManager({ backend });
  const bare = await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: silentLogger });
  try {
    const e = await rejection(createClient(StorageService, createGrpcTransport({ baseUrl: bare.url })).getStorageCapabilities({}));
    assert.equal(e.code, Code.Unimplemented);
  } finally {
    await bare.close();
  }
});

test("capabilities: DIR and SHARED_DIR managed, the others probed with a reason", async () => {
  const caps = await c.getStorageCapabilities({});
  assert.match(caps.qemuImgVersion, /^qemu-img version/);
  assert.deepEqual(caps.volumeFormats, [VolumeFormat.QCOW2, VolumeFormat.RAW]);
  const byType = new Map(caps.poolTypes.map((p) => [p.type, p]));
  assert.equal(byType.get(StoragePoolType.DIR)?.available, true);
  assert.equal(byType.get(StoragePoolType.SHARED_DIR)?.available, true);
  assert.match(byType.get(StoragePoolType.SHARED_DIR)?.reason ?? "", new RegExp(shared));
  for (const t of [StoragePoolType.NFS, StoragePoolType.CEPH_RBD, StoragePoolType.LVM, StoragePoolType.ISCSI]) {
    const s = byType.get(t);
    assert.equal(s?.managed, false);
    assert.ok((s?.reason ?? "").length > 0);
  }
});

test("a volume a process holds open (a VM writing it) cannot become a linked clone's backing file, nor be deleted", { timeout: 60_000 }, async () => {
  const pool = uuid();
  await c.ensurePool({ poolId: pool, type: StoragePoolType.DIR });
  const base = uuid();
  const v = await c.createVolume({ poolId: pool, volumeId: base, format: VolumeFormat.QCOW2, sizeBytes: 16n * MIB });
  // qemu-io in interactive mode opens the image read-write and holds QEMU's image lock, as a running VM does.
  const holder = spawn("qemu-io", ["-f", "qcow2", v.path], { stdio: ["pipe", "ignore", "ignore"] });
  try {
    await until(async () => (spawnSync("qemu-img", ["info", "-f", "qcow2", v.path]).status !== 0 ? true : undefined), "qemu-io holding the image's lock", 20_000, 50);
    const clone = uuid();
    const refused = await rejection(c.createVolume({ poolId: pool, volumeId: clone, format: VolumeFormat.QCOW2, source: { volumeId: base, mode: CloneMode.LINKED } }));
    assert.equal(refused.code, Code.FailedPrecondition, refused.message);
    assert.deepEqual(files(join(poolRoot, pool)), [".quantix-pool", `${base}.qcow2`], "no clone, no partial file");
    const busy = await rejection(c.deleteVolume({ poolId: pool, volumeId: base }));
    assert.equal(busy.code, Code.FailedPrecondition, busy.message);
    assert.ok(existsSync(v.path));
  } finally {
    // Waiting for an exit that already happened would hang the test past the error that ended it.
    if (holder.exitCode === null && holder.signalCode === null) {
      const exited = new Promise((resolve) => holder.once("exit", resolve));
      holder.kill("SIGKILL");
      await exited;
    }
  }
  const clone = await c.createVolume({ poolId: pool, volumeId: uuid(), format: VolumeFormat.QCOW2, source: { volumeId: base, mode: CloneMode.LINKED } });
  assert.equal(clone.backingVolumeId, base, "once released, the clone is made");
});
