import assert from "node:assert/strict";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { QuantixError } from "@quantix/core";
import { ensureDebianPackages } from "@quantix/testing";
import { create } from "@bufbuild/protobuf";
import { NodeSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { NodeStorages } from "./node-storages.js";
import { DirNodeStorage, POOL_MARKER } from "./dir-node-storage.js";

// The directory NodeStorage with the real qemu-img: files named by ids only, markers,
// idempotent creates, clones, growth, dependants, and nothing left by a failure.

const POOL = "5f0c3a52-1f35-4c55-9d44-6a4fd1e1c001";
const OTHER = "5f0c3a52-1f35-4c55-9d44-6a4fd1e1c002";
const VOL = "8e1d8c7a-4b8a-4b8e-8f0e-2d7a1c9b0001";
const CLONE = "8e1d8c7a-4b8a-4b8e-8f0e-2d7a1c9b0002";
const GIB = 1n << 30n;

const code = (err: unknown) => (err instanceof QuantixError ? err.code : String(err));

describe("DirNodeStorage", () => {
  let dir: string;
  let s: DirNodeStorage;
  before(async () => {
    await ensureDebianPackages(["qemu-utils"]);
    dir = await mkdtemp(join(tmpdir(), "quantix-scp-"));
    await mkdir(join(dir, "shared", "pool-a"), { recursive: true });
    s = new DirNodeStorage({ nodeId: "node-1", root: join(dir, "root"), sharedDirs: [join(dir, "shared")] });
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("ensures of one new pool at once all succeed, leaving its one marker (as the pool controller and an image's steps do)", async () => {
    const id = "5f0c3a52-1f35-4c55-9d44-6a4fd1e1c0c0";
    // Started a turn apart, so that one call's steps fall between another's.
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < 16; i++) {
      calls.push(s.ensurePool({ poolId: id, type: "DIR" }));
      await new Promise((r) => setImmediate(r));
    }
    const pools = await Promise.all(calls);
    assert.equal(pools.length, 16);
    assert.deepEqual(await readdir(join(dir, "root", id)), [POOL_MARKER]);
    await s.deletePool({ poolId: id, type: "DIR" });
  });

  it("sets a DIR pool up as <root>/<pool id> with its marker, idempotently", async () => {
    const p = await s.ensurePool({ poolId: POOL, type: "DIR" });
    assert.ok(p.capacityBytes > 0n);
    assert.equal(p.volumeCount, 0);
    assert.deepEqual(await readdir(join(dir, "root", POOL)), [POOL_MARKER]);
    await s.ensurePool({ poolId: POOL, type: "DIR" });
  });

  it("refuses ids that could name a path, before touching anything", async () => {
    for (const bad of ["../x", "a/b", "", ".hidden"]) {
      await assert.rejects(s.ensurePool({ poolId: bad, type: "DIR" }), (e) => code(e) === "invalid_argument");
      await assert.rejects(s.createVolume({ poolId: POOL, volumeId: bad, format: "qcow2", sizeBytes: GIB }), (e) => code(e) === "invalid_argument");
    }
    assert.deepEqual(await readdir(join(dir, "root")), [POOL]);
  });

  it("creates, measures, grows and refuses to shrink a volume; the same create again returns it", async () => {
    const v = await s.createVolume({ poolId: POOL, volumeId: VOL, format: "qcow2", sizeBytes: GIB });
    assert.equal(v.virtualSizeBytes, GIB);
    assert.ok(v.actualSizeBytes > 0n && v.actualSizeBytes < GIB);
    assert.equal((await s.createVolume({ poolId: POOL, volumeId: VOL, format: "qcow2", sizeBytes: GIB })).virtualSizeBytes, GIB);
    await assert.rejects(s.createVolume({ poolId: POOL, volumeId: VOL, format: "raw", sizeBytes: GIB }), (e) => code(e) === "already_exists");
    assert.equal((await s.resizeVolume({ poolId: POOL, volumeId: VOL, sizeBytes: 2n * GIB })).virtualSizeBytes, 2n * GIB);
    await assert.rejects(s.resizeVolume({ poolId: POOL, volumeId: VOL, sizeBytes: GIB }), (e) => code(e) === "failed_precondition");
    assert.equal((await s.volumeInfo({ poolId: POOL, volumeId: VOL }))?.virtualSizeBytes, 2n * GIB);
  });

  it("makes a linked clone whose source cannot be deleted without force", async () => {
    const c = await s.createVolume({ poolId: POOL, volumeId: CLONE, format: "qcow2", sizeBytes: 0n, source: { volumeId: VOL, linked: true } });
    assert.equal(c.backingVolumeId, VOL);
    assert.equal(c.virtualSizeBytes, 2n * GIB);
    await assert.rejects(s.deleteVolume({ poolId: POOL, volumeId: VOL, force: false }), (e) => code(e) === "failed_precondition" && /backs volume/.test((e as Error).message));
    await s.deleteVolume({ poolId: POOL, volumeId: CLONE, force: false });
    await s.deleteVolume({ poolId: POOL, volumeId: VOL, force: false });
    await assert.rejects(s.deleteVolume({ poolId: POOL, volumeId: VOL, force: false }), (e) => code(e) === "not_found");
    assert.equal(await s.volumeInfo({ poolId: POOL, volumeId: VOL }), undefined);
  });

  it("refuses a volume larger than the pool's free space, leaving no file", async () => {
    await assert.rejects(s.createVolume({ poolId: POOL, volumeId: VOL, format: "raw", sizeBytes: 1n << 62n }), (e) => code(e) === "resource_exhausted");
    assert.deepEqual(await readdir(join(dir, "root", POOL)), [POOL_MARKER]);
  });

  it("adopts a SHARED_DIR only below a shared directory, empty or already its own", async () => {
    await s.ensurePool({ poolId: OTHER, type: "SHARED_DIR", path: join(dir, "shared", "pool-a") });
    await assert.rejects(s.ensurePool({ poolId: POOL, type: "SHARED_DIR", path: join(dir, "shared", "pool-a") }), (e) => code(e) === "failed_precondition" && /another pool/.test((e as Error).message));
    await assert.rejects(s.ensurePool({ poolId: OTHER, type: "SHARED_DIR", path: join(dir, "root") }), (e) => code(e) === "failed_precondition");
    await assert.rejects(s.ensurePool({ poolId: OTHER, type: "SHARED_DIR", path: join(dir, "shared") }), (e) => code(e) === "failed_precondition");
    await mkdir(join(dir, "shared", "full"));
    await writeFile(join(dir, "shared", "full", "someone-else.img"), "x");
    await assert.rejects(s.ensurePool({ poolId: POOL, type: "SHARED_DIR", path: join(dir, "shared", "full") }), (e) => code(e) === "failed_precondition" && /not empty/.test((e as Error).message));
  });

  it("a node whose agent this control plane is not connected to answers UNAVAILABLE saying so, rather than pretending", async () => {
    const storages = new NodeStorages({ storageDir: undefined, sharedDirs: [], agentStorage: () => undefined });
    const node = create(NodeSchema, { id: "node-9", spec: { agentEndpoint: "http://192.0.2.9:9090" }, status: { hypervisor: { type: "qemu" } } });
    await assert.rejects(storages.of(node).ensurePool({ poolId: POOL, type: "DIR" }), (e) => code(e) === "unavailable" && /node 'node-9' runs a host agent this control plane is not connected to/.test((e as Error).message));
  });
});
