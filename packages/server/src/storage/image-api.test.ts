import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { ConditionStatus } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { ImageFormat, ImageState, type Image } from "@quantix/api/gen/Quantixkvm/storage/v1/image_pb.js";
import { ImageService, ImportImageProgressSchema, ImportImageRequestSchema, type ImportImageProgress } from "@quantix/api/gen/Quantixkvm/storage/v1/image_service_pb.js";
import { StoragePoolState, StoragePoolType } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { StoragePoolService } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import { VolumeState } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { VolumeService } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import { ensureDebianPackages, rejection, startTestServer, until, type TestServer } from "@quantix/testing";
import { startImageServer, type ImageServer } from "../testing/image-server.js";

// ImageService through the real API on the demo's simulated hosts, whose pools are real
// directories and whose imports run the agent's own import code (download, sha256,
// gzip/xz, hostile-image checks, qemu-img convert): images served over HTTP on loopback
// become AVAILABLE with progress seen on the way; every bad download ends in ERROR with
// its reason and no file; a linked clone is made from the image's copy, and keeps the
// image from being deleted.

const MIB = 1n << 20n;
const HV1 = "00000000-0000-0000-0001-000000000001";
const HV2 = "00000000-0000-0000-0001-000000000002";
const fields = (e: ConnectError) => e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));

/** ImportImage's messages from a real @grpc/grpc-js client, until the stream ends. */
function grpcJsImport(target: string, req: Parameters<typeof create<typeof ImportImageRequestSchema>>[1]): Promise<ImportImageProgress[]> {
  const client = new grpc.Client(target, grpc.credentials.createInsecure());
  const out: ImportImageProgress[] = [];
  return new Promise<ImportImageProgress[]>((resolve, reject) => {
    const call = client.makeServerStreamRequest(
      "/Quantixkvm.storage.v1.ImageService/ImportImage",
      (m: ReturnType<typeof create<typeof ImportImageRequestSchema>>) => Buffer.from(toBinary(ImportImageRequestSchema, m)),
      (b: Buffer) => fromBinary(ImportImageProgressSchema, b),
      create(ImportImageRequestSchema, req),
      new grpc.Metadata(),
      { deadline: Date.now() + 60_000 },
    );
    call.on("data", (m: ImportImageProgress) => out.push(m));
    call.on("error", reject);
    call.on("end", () => resolve(out));
  }).finally(() => client.close());
}

describe("images over the API, on the demo's simulated hosts", () => {
  let s: TestServer;
  let dir: string;
  let web: ImageServer;
  let images: Client<typeof ImageService>;
  let volumes: Client<typeof VolumeService>;
  let poolId: string;
  let poolDir: string;
  const poolFiles = async () => (await readdir(poolDir)).filter((f) => f !== ".quantix-pool").sort();
  const importAll = async (req: Parameters<typeof images.importImage>[0]) => {
    const out: ImportImageProgress[] = [];
    for await (const p of images.importImage(req, { timeoutMs: 60_000 })) out.push(p);
    return out;
  };
  const fromUrl = (name: string, path: string, expectedSha256 = "") => ({ name, spec: { source: { source: { case: "url" as const, value: `${web.base}${path}` }, expectedSha256 } } });

  before(async () => {
    await ensureDebianPackages(["qemu-utils", "xz-utils"]);
    dir = await mkdtemp(join(tmpdir(), "quantix-images-"));
    web = await startImageServer(join(dir, "fixtures"));
    s = await startTestServer({ storageDir: join(dir, "storage"), defaultQuota: {} });
    images = createClient(ImageService, s.transport);
    volumes = createClient(VolumeService, s.transport);
    const pools = createClient(StoragePoolService, s.transport);
    poolId = (await pools.createStoragePool({ name: "local", spec: { type: StoragePoolType.LOCAL_DIR, nodeIds: [HV1], isDefault: true } })).id;
    await until(async () => ((await pools.getStoragePool({ id: poolId })).status?.state === StoragePoolState.READY ? true : undefined), "pool READY");
    poolDir = join(dir, "storage", HV1, poolId);
  });
  after(async () => {
    await s?.close();
    await web?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("imports a gzipped qcow2 through the ImportImage stream: progress until AVAILABLE, sha256 verified, the size measured", async () => {
    const steps = await importAll({ target: { case: "create", value: fromUrl("debian-gz", "/a.qcow2.gz", web.sha256("/a.qcow2.gz")) } });
    const states = [...new Set(steps.map((p) => p.state))];
    assert.deepEqual(states, [ImageState.QUEUED, ImageState.IMPORTING, ImageState.CONVERTING, ImageState.AVAILABLE].filter((x) => states.includes(x)));
    assert.ok(states.includes(ImageState.CONVERTING) && states.at(-1) === ImageState.AVAILABLE, states.map((x) => ImageState[x]).join(","));
    const img = steps.at(-1)!.image!;
    assert.equal(steps.filter((p) => p.image).length, 1, "only the last message carries the image");
    assert.equal(img.status?.virtualSizeBytes, 16n * MIB);
    assert.equal(img.status?.checksumSha256, web.sha256("/a.qcow2.gz"));
    assert.equal(img.status?.detectedFormat, ImageFormat.QCOW2);
    assert.equal(img.status?.storedFormat, ImageFormat.QCOW2);
    assert.equal(img.status?.transferredBytes, BigInt(web.files.get("/a.qcow2.gz")!.length));
    assert.equal(img.status?.importProgressPercent, 100);
    assert.equal(img.status?.conditions.find((c) => c.type === "ChecksumVerified")?.status, ConditionStatus.TRUE);
    assert.deepEqual(img.status?.copies.map((c) => [c.nodeId, c.poolId]), [[HV1, poolId]]);
    assert.ok((await poolFiles()).includes(`${img.id}.qcow2`));
    const pattern = execFileSync("qemu-io", ["-f", "qcow2", "-r", join(poolDir, `${img.id}.qcow2`), "-c", "read -P 0xab 0 1M"], { encoding: "utf8" });
    assert.doesNotMatch(pattern, /Pattern verification failed/);
  });

  it("an xz image made with CreateImage is followed through WatchImages; the sha256 is recorded without an expected one", async () => {
    const created = await images.createImage(fromUrl("debian-xz", "/a.qcow2.xz"));
    assert.equal(created.status?.state, ImageState.QUEUED);
    const ac = new AbortController();
    const seen: Image[] = [];
    try {
      for await (const u of images.watchImages({ imageId: created.id }, { signal: ac.signal, timeoutMs: 60_000 })) {
        if (!u.image) continue;
        seen.push(u.image);
        if (u.image.status?.state === ImageState.AVAILABLE || u.image.status?.state === ImageState.ERROR) break;
      }
    } finally {
      ac.abort();
    }
    const last = seen.at(-1)!;
    assert.equal(last.status?.state, ImageState.AVAILABLE, last.status?.errorMessage);
    assert.ok(seen.some((i) => i.status?.state === ImageState.CONVERTING), "the verifying/converting phase is seen");
    assert.equal(last.status?.checksumSha256, web.sha256("/a.qcow2.xz"));
    assert.equal(last.status?.conditions.find((c) => c.type === "ChecksumVerified")?.reason, "NotGiven");
  });

  it("progress of a larger raw image is written as it downloads, and a gRPC client (grpc-js) follows it", async () => {
    const steps = await grpcJsImport(new URL(s.url).host, { target: { case: "create", value: fromUrl("big-raw", "/big.raw") } });
    const downloading = steps.filter((p) => p.state === ImageState.IMPORTING);
    assert.ok(downloading.some((p) => p.transferredBytes > 0n && p.transferredBytes < 12n * MIB && p.totalBytes === 12n * MIB), downloading.map((p) => p.transferredBytes).join(","));
    const img = steps.at(-1)!.image!;
    assert.equal(img.status?.state, ImageState.AVAILABLE);
    assert.equal(img.status?.detectedFormat, ImageFormat.RAW);
    assert.equal(img.status?.virtualSizeBytes, 12n * MIB);
  });

  it("bad downloads and hostile images end in ERROR with the reason, and leave no file", async () => {
    const before = await poolFiles();
    const cases: [string, string, RegExp, string?][] = [
      ["missing", `/missing`, /HTTP 404/],
      ["unreachable", "", /ECONNREFUSED/],
      ["truncated", `/truncated`, /truncated|ended early/],
      ["wrong-sha", `/a.qcow2.gz`, /sha256 mismatch/, "0".repeat(64)],
      ["hostile", `/evil.qcow2`, /image refused: .*backing file/],
    ];
    const results = await Promise.all(
      cases.map(([name, path, , sha]) => importAll({ target: { case: "create", value: path === "" ? { name, spec: { source: { source: { case: "url", value: "http://127.0.0.1:1/x.qcow2" } } } } : fromUrl(name, path, sha) } })),
    );
    for (const [i, [name, , reason]] of cases.entries()) {
      const img = results[i]!.at(-1)!.image!;
      assert.equal(img.status?.state, ImageState.ERROR, name);
      assert.match(img.status!.errorMessage, reason, name);
      const ready = img.status?.conditions.find((c) => c.type === "Ready");
      assert.equal(ready?.status, ConditionStatus.FALSE);
      assert.match(ready!.reason, /^Import[A-Z]/, name);
      assert.equal(img.status?.copies.length, 0);
    }
    assert.deepEqual(await poolFiles(), before, "no partial file left");
    // A failed image is deleted at once: nothing of it is on a node.
    await images.deleteImage({ id: results[0]!.at(-1)!.imageId });
    assert.equal((await rejection(images.getImage({ id: results[0]!.at(-1)!.imageId }))).code, Code.NotFound);
  });

  it("ImportImage with the id of an image in ERROR imports it again from the start", async () => {
    const failed = await importAll({ target: { case: "create", value: fromUrl("later", "/later.qcow2") } });
    const id = failed.at(-1)!.imageId;
    assert.equal(failed.at(-1)!.image?.status?.state, ImageState.ERROR);
    (web.files as Map<string, Buffer>).set("/later.qcow2", web.files.get("/a.qcow2")!);
    const again = await importAll({ target: { case: "imageId", value: id } });
    assert.equal(again.at(-1)!.image?.status?.state, ImageState.AVAILABLE, again.map((p) => `${ImageState[p.state]} ${p.message}`).join("; "));
    assert.ok(again.some((p) => p.state === ImageState.IMPORTING && p.message === "downloading"), again.map((p) => `${ImageState[p.state]} ${p.message}`).join("; "));
    assert.equal(again.at(-1)!.image?.status?.errorMessage, "");
    assert.equal(again.at(-1)!.image?.generation, 2n);
    await images.deleteImage({ id });
  });

  it("bad requests are INVALID_ARGUMENT with the field path, and create nothing", async () => {
    const count = (await images.listImages({})).totalCount;
    const file = await rejection(importAll({ target: { case: "create", value: { name: "local-file", spec: { source: { source: { case: "url", value: "file:///etc/shadow" } } } } } }));
    assert.equal(file.code, Code.InvalidArgument);
    assert.deepEqual(fields(file), ["create.spec.source.url"]);
    const bad = await rejection(images.createImage({ name: "", spec: { source: { source: { case: "url", value: "ftp://example.org/x" } }, expectedSha256: "XYZ" } } as never));
    assert.equal(bad.code, Code.InvalidArgument);
    assert.deepEqual(fields(bad).sort(), ["name", "spec.source.url"]);
    const upload = await rejection(importAll({ target: { case: "create", value: { name: "up", spec: { source: { source: { case: "upload", value: {} } } } } } }));
    assert.equal(upload.code, Code.InvalidArgument);
    assert.deepEqual(fields(upload), ["create.spec.source"]);
    assert.equal((await images.listImages({})).totalCount, count);
  });

  it("a linked clone is made from the image's copy; the image cannot be deleted while it exists", async () => {
    const img = (await images.listImages({})).images.find((i) => i.name === "debian-gz")!;
    const v = await volumes.createVolume({ name: "from-image", spec: { source: { source: { case: "imageId", value: img.id }, linked: true } } });
    assert.equal(v.spec?.sizeGib, 1n, "at least the image's virtual size, in GiB");
    const ready = await until(async () => {
      const x = await volumes.getVolume({ id: v.id });
      return x.status?.state === VolumeState.AVAILABLE || x.status?.state === VolumeState.ERROR ? x : undefined;
    }, "volume from the image AVAILABLE", 30_000);
    assert.equal(ready.status?.state, VolumeState.AVAILABLE, ready.status?.errorMessage);
    const info = JSON.parse(execFileSync("qemu-img", ["info", "--output=json", "-U", "-f", "qcow2", join(poolDir, `${v.id}.qcow2`)], { encoding: "utf8" })) as { "backing-filename"?: string };
    assert.equal(info["backing-filename"]?.endsWith(`${img.id}.qcow2`), true, "backed by the image's copy");

    const refused = await rejection(images.deleteImage({ id: img.id }));
    assert.equal(refused.code, Code.FailedPrecondition);
    assert.match(refused.message, new RegExp(v.id));
    await volumes.deleteVolume({ id: v.id });
    await images.deleteImage({ id: img.id });
    assert.equal((await rejection(images.getImage({ id: img.id }))).code, Code.NotFound);
    assert.ok(!(await poolFiles()).includes(`${img.id}.qcow2`), "the image's copy removed");
  });

  it("a volume on another node of the pool gets the image copied there first (the per-node cache, in status.copies)", async () => {
    const pools = createClient(StoragePoolService, s.transport);
    const wide = (await pools.createStoragePool({ name: "two-nodes", spec: { type: StoragePoolType.LOCAL_DIR, nodeIds: [HV1, HV2] } })).id;
    await until(async () => ((await pools.getStoragePool({ id: wide })).status?.state === StoragePoolState.READY ? true : undefined), "two-node pool READY");
    const steps = await importAll({ target: { case: "create", value: { ...fromUrl("cached", "/a.qcow2"), spec: { ...fromUrl("cached", "/a.qcow2").spec, poolId: wide } } } });
    const img = steps.at(-1)!.image!;
    assert.equal(img.status?.state, ImageState.AVAILABLE, img.status?.errorMessage);
    const first = img.status!.copies[0]!.nodeId;
    const other = first === HV1 ? HV2 : HV1;
    const v = await volumes.createVolume({ name: "on-the-other-node", nodeId: other, spec: { poolId: wide, source: { source: { case: "imageId", value: img.id }, linked: true } } });
    const ready = await until(async () => {
      const x = await volumes.getVolume({ id: v.id });
      return x.status?.state === VolumeState.AVAILABLE || x.status?.state === VolumeState.ERROR ? x : undefined;
    }, "volume on the other node AVAILABLE", 30_000);
    assert.equal(ready.status?.state, VolumeState.AVAILABLE, ready.status?.errorMessage);
    assert.equal(ready.status?.nodeId, other);
    const copies = (await images.getImage({ id: img.id })).status!.copies.map((c) => c.nodeId).sort();
    assert.deepEqual(copies, [HV1, HV2].sort());
    assert.ok((await readdir(join(dir, "storage", other, wide))).includes(`${img.id}.qcow2`), "the copy is on the volume's node");
    await volumes.deleteVolume({ id: v.id });
    await images.deleteImage({ id: img.id });
    for (const n of [HV1, HV2]) assert.ok(!(await readdir(join(dir, "storage", n, wide))).includes(`${img.id}.qcow2`), `both copies removed (${n})`);
  });

  it("a protected image is not deleted; ImportImage of an AVAILABLE image answers at once with it", async () => {
    const img = (await images.listImages({})).images.find((i) => i.name === "debian-xz")!;
    await images.updateImage({ id: img.id, spec: { protected: true }, updateMask: { paths: ["spec.protected"] } });
    assert.equal((await rejection(images.deleteImage({ id: img.id }))).code, Code.FailedPrecondition);
    const again = await importAll({ target: { case: "imageId", value: img.id } });
    assert.equal(again.length, 1);
    assert.equal(again[0]!.image?.status?.state, ImageState.AVAILABLE);
  });
});
