import assert from "node:assert/strict";
import { execFile, execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { TolerationOperator, VmStatus_State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { VMService } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { ImageFormat, ImageState, ImageSchema, type Image } from "@quantix/api/gen/Quantixkvm/storage/v1/image_pb.js";
import { ImageService, UploadImageRequestSchema, type UploadImageRequest } from "@quantix/api/gen/Quantixkvm/storage/v1/image_service_pb.js";
import { SnapshotState } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_pb.js";
import { SnapshotService } from "@quantix/api/gen/Quantixkvm/storage/v1/snapshot_service_pb.js";
import { StoragePoolState, StoragePoolType, VolumeFormat } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { StoragePoolService } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import { VolumeState } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { VolumeService } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import { ensureDebianPackages, rejection, startTestServer, until, type TestServer } from "@quantix/testing";
import { startImageServer, type ImageServer } from "../testing/image-server.js";

// UploadImage through the real API on the demo's simulated hosts (their pools are real
// directories; the upload runs the agent's own upload code: hash, bounds, gzip/xz,
// hostile-image checks, qemu-img convert), from the Connect client over HTTP/2 and from a
// real @grpc/grpc-js client; and images made from a volume and from a snapshot, whose data
// is read back with the real qemu-io.

const run = promisify(execFile);
const MIB = 1n << 20n;
const HV1 = "00000000-0000-0000-0001-000000000001";
const fields = (e: ConnectError) => e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** The messages of an upload: the header, then `data` in chunks of `size`. */
function* messages(imageId: string, data: Buffer, size = 256 * 1024, sizeBytes = BigInt(data.length)): Generator<UploadImageRequest> {
  yield create(UploadImageRequestSchema, { content: { case: "header", value: { imageId, sizeBytes } } });
  for (let i = 0; i < data.length; i += size) yield create(UploadImageRequestSchema, { content: { case: "chunk", value: data.subarray(i, i + size) } });
}

async function* stream(msgs: Iterable<UploadImageRequest>): AsyncGenerator<UploadImageRequest> {
  for (const m of msgs) yield m;
}

/** UploadImage from a real @grpc/grpc-js client (a client stream over HTTP/2). */
function grpcJsUpload(target: string, msgs: Iterable<UploadImageRequest>): Promise<Image> {
  const client = new grpc.Client(target, grpc.credentials.createInsecure());
  return new Promise<Image>((resolve, reject) => {
    const call = client.makeClientStreamRequest(
      "/Quantixkvm.storage.v1.ImageService/UploadImage",
      (m: UploadImageRequest) => Buffer.from(toBinary(UploadImageRequestSchema, m)),
      (b: Buffer) => fromBinary(ImageSchema, b),
      new grpc.Metadata(),
      { deadline: Date.now() + 60_000 },
      (err: grpc.ServiceError | null, res?: Image) => (err ? reject(err) : resolve(res!)),
    );
    for (const m of msgs) call.write(m);
    call.end();
  }).finally(() => client.close());
}

describe("UploadImage and images from volumes, on the demo's simulated hosts", () => {
  let s: TestServer;
  let dir: string;
  let web: ImageServer;
  let images: Client<typeof ImageService>;
  let volumes: Client<typeof VolumeService>;
  let poolId: string;
  let poolDir: string;
  const poolFiles = async () => (await readdir(poolDir)).filter((f) => f !== ".quantix-pool").sort();
  const uploadable = async (name: string, o: { sha256?: string; sizeBytes?: bigint; diskFormat?: ImageFormat } = {}) =>
    images.createImage({ name, spec: { ...(o.diskFormat ? { diskFormat: o.diskFormat } : {}), source: { source: { case: "upload", value: { sizeBytes: o.sizeBytes ?? 0n } }, expectedSha256: o.sha256 ?? "" } } });
  const upload = (msgs: Iterable<UploadImageRequest>, signal?: AbortSignal) => images.uploadImage(stream(msgs), { timeoutMs: 60_000, ...(signal ? { signal } : {}) });

  before(async () => {
    await ensureDebianPackages(["qemu-utils", "xz-utils"]);
    dir = await mkdtemp(join(tmpdir(), "quantix-upload-"));
    web = await startImageServer(join(dir, "fixtures"));
    s = await startTestServer({ storageDir: join(dir, "storage"), defaultQuota: {} });
    // Client streaming needs HTTP/2 (the test server's own transport is HTTP/1.1).
    images = createClient(ImageService, createConnectTransport({ baseUrl: s.url, httpVersion: "2" }));
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

  it("uploads a qcow2 with the Connect client: AVAILABLE, sha256 verified, the data read back; progress and phases are seen", async () => {
    const data = web.files.get("/a.qcow2")!;
    const img = await uploadable("up-qcow2", { sha256: sha(data), sizeBytes: BigInt(data.length) });
    assert.equal(img.status?.state, ImageState.QUEUED);
    const seen: Image[] = [];
    const ac = new AbortController();
    const watching = (async () => {
      for await (const u of images.watchImages({ imageId: img.id }, { signal: ac.signal })) if (u.image) seen.push(u.image);
    })().catch(() => undefined);
    const done = await upload(messages(img.id, data, 64 * 1024, 0n));
    await until(async () => (seen.some((x) => x.status?.state === ImageState.AVAILABLE) ? true : undefined), "the watch sees AVAILABLE");
    ac.abort();
    await watching;
    assert.equal(done.status?.state, ImageState.AVAILABLE, done.status?.errorMessage);
    assert.equal(done.status?.checksumSha256, sha(data));
    assert.equal(done.status?.conditions.find((c) => c.type === "ChecksumVerified")?.reason, "Matched");
    assert.equal(done.status?.detectedFormat, ImageFormat.QCOW2);
    assert.equal(done.status?.virtualSizeBytes, 16n * MIB);
    assert.equal(done.status?.transferredBytes, BigInt(data.length));
    assert.deepEqual(done.status?.copies.map((c) => [c.nodeId, c.poolId]), [[HV1, poolId]]);
    const states = seen.map((x) => x.status?.state);
    assert.ok(states.includes(ImageState.IMPORTING) && states.includes(ImageState.CONVERTING), states.map((x) => ImageState[x ?? 0]).join(","));
    const pattern = execFileSync("qemu-io", ["-f", "qcow2", "-r", join(poolDir, `${img.id}.qcow2`), "-c", "read -P 0xab 0 1M"], { encoding: "utf8" });
    assert.doesNotMatch(pattern, /Pattern verification failed/);
    // Its data is fixed once AVAILABLE.
    const again = await rejection(upload(messages(img.id, data)));
    assert.equal(again.code, Code.FailedPrecondition);
    assert.match(again.rawMessage, /AVAILABLE/);
  });

  it("uploads a gzipped raw image from a real @grpc/grpc-js client, with progress in bytes; the stored qcow2 holds the same data", async () => {
    const raw = web.files.get("/big.raw")!;
    const gz = gzipSync(raw);
    const img = await uploadable("up-raw-gz");
    const seen: Image[] = [];
    const ac = new AbortController();
    const watching = (async () => {
      for await (const u of images.watchImages({ imageId: img.id }, { signal: ac.signal })) if (u.image) seen.push(u.image);
    })().catch(() => undefined);
    const done = await grpcJsUpload(new URL(s.url).host, messages(img.id, gz, 1 << 20));
    await until(async () => (seen.some((x) => x.status?.state === ImageState.AVAILABLE) ? true : undefined), "the watch sees AVAILABLE");
    ac.abort();
    await watching;
    assert.equal(done.status?.state, ImageState.AVAILABLE, done.status?.errorMessage);
    assert.equal(done.status?.detectedFormat, ImageFormat.RAW);
    assert.equal(done.status?.storedFormat, ImageFormat.QCOW2);
    assert.equal(done.status?.virtualSizeBytes, 12n * MIB);
    assert.equal(done.status?.checksumSha256, sha(gz));
    assert.equal(done.status?.conditions.find((c) => c.type === "ChecksumVerified")?.reason, "NotGiven");
    const partway = seen.filter((x) => x.status?.state === ImageState.IMPORTING && (x.status.transferredBytes ?? 0n) > 0n);
    assert.ok(partway.some((x) => x.status!.transferredBytes < BigInt(gz.length) && x.status!.sourceBytes === BigInt(gz.length)), seen.map((x) => `${ImageState[x.status?.state ?? 0]} ${x.status?.transferredBytes}`).join("; "));
    await writeFile(join(dir, "big.raw.check"), raw);
    await run("qemu-img", ["compare", "-q", "-f", "raw", "-F", "qcow2", join(dir, "big.raw.check"), join(poolDir, `${img.id}.qcow2`)]);
  });

  it("a wrong sha256 and a hostile image end in ERROR with the node's reason; nothing is left in the pool", async () => {
    const before = await poolFiles();
    const data = web.files.get("/a.qcow2")!;
    const wrong = await uploadable("up-wrong-sha", { sha256: "0".repeat(64) });
    const e1 = await rejection(upload(messages(wrong.id, data)));
    assert.equal(e1.code, Code.FailedPrecondition);
    assert.match(e1.rawMessage, /sha256 mismatch: expected 0{64}, the upload is [0-9a-f]{64}/);
    const w = await images.getImage({ id: wrong.id });
    assert.equal(w.status?.state, ImageState.ERROR);
    assert.equal(w.status?.conditions.find((c) => c.type === "Ready")?.reason, "UploadFailedPrecondition");

    const evil = await uploadable("up-evil");
    const e2 = await rejection(upload(messages(evil.id, web.files.get("/evil.qcow2")!)));
    assert.equal(e2.code, Code.FailedPrecondition);
    assert.match(e2.rawMessage, /image refused: .*backing file/);
    const ev = await images.getImage({ id: evil.id });
    assert.equal(ev.status?.state, ImageState.ERROR);
    assert.match(ev.status!.errorMessage, /image refused/);
    assert.deepEqual(await poolFiles(), before, "no partial file left");

    // ImportImage on the failed upload puts it back in QUEUED, waiting for the data again.
    await images.importImage({ target: { case: "imageId", value: ev.id } })[Symbol.asyncIterator]().next();
    const back = await until(async () => {
      const x = await images.getImage({ id: ev.id });
      return x.status?.state === ImageState.QUEUED ? x : undefined;
    }, "the retried upload image QUEUED");
    assert.equal(back.status?.conditions.find((c) => c.type === "Imported")?.reason, "WaitingForUpload");
  });

  it("a truncated, an over-long and a cancelled stream leave the image QUEUED with the reason and no file; a full upload then works", async () => {
    const before = await poolFiles();
    const data = web.files.get("/a.qcow2")!;
    const img = await uploadable("up-retry", { sizeBytes: BigInt(data.length) });

    const short = await rejection(upload(messages(img.id, data.subarray(0, data.length - 1000), 256 * 1024, 0n)));
    assert.equal(short.code, Code.DataLoss);
    assert.match(short.rawMessage, new RegExp(`ended after ${data.length - 1000} of the ${data.length} bytes`));
    let x = await images.getImage({ id: img.id });
    assert.equal(x.status?.state, ImageState.QUEUED);
    assert.equal(x.status?.conditions.find((c) => c.type === "Imported")?.reason, "UploadDataLoss");
    assert.match(x.status!.errorMessage, /ended after/);

    const long = await rejection(upload(messages(img.id, Buffer.concat([data, Buffer.alloc(4096)]), 64 * 1024, 0n)));
    assert.equal(long.code, Code.OutOfRange);
    assert.match(long.rawMessage, /more than the \d+ bytes declared/);
    x = await images.getImage({ id: img.id });
    assert.equal(x.status?.state, ImageState.QUEUED);
    assert.equal(x.status?.conditions.find((c) => c.type === "Imported")?.reason, "UploadOutOfRange");

    // A client that goes away mid-stream: the node removes what it wrote.
    const ac = new AbortController();
    async function* slow(): AsyncGenerator<UploadImageRequest> {
      const all = [...messages(img.id, data, 64 * 1024)];
      yield all[0]!;
      yield all[1]!;
      await until(async () => ((await images.getImage({ id: img.id })).status?.state === ImageState.IMPORTING ? true : undefined), "the upload IMPORTING");
      ac.abort();
      await new Promise(() => undefined);
    }
    const cancelled = await rejection(images.uploadImage(slow(), { signal: ac.signal }));
    assert.equal(cancelled.code, Code.Canceled);
    x = await until(async () => {
      const y = await images.getImage({ id: img.id });
      return y.status?.state === ImageState.QUEUED ? y : undefined;
    }, "the cancelled upload's image QUEUED again");
    // The client library may end its request stream before it resets it: then it reads as a short stream.
    assert.match(x.status!.errorMessage, /cancelled|broke|ended after/);
    await until(async () => ((await readdir(poolDir)).every((f) => !f.includes(img.id)) ? true : undefined), "no partial file of the cancelled upload");
    assert.deepEqual(await poolFiles(), before);

    const done = await upload(messages(img.id, data));
    assert.equal(done.status?.state, ImageState.AVAILABLE, done.status?.errorMessage);
    assert.equal(done.status?.errorMessage, "");

    // DeleteImage during an upload: the upload stops (ABORTED, saying why) and the node keeps nothing.
    const doomed = await uploadable("up-deleted");
    async function* endless(): AsyncGenerator<UploadImageRequest> {
      yield create(UploadImageRequestSchema, { content: { case: "header", value: { imageId: doomed.id } } });
      // Chunks go on after the delete (the next progress write stops the upload); a bound keeps the test finite.
      for (let i = 0; i < 64; i++) {
        yield create(UploadImageRequestSchema, { content: { case: "chunk", value: Buffer.alloc(1 << 20, i) } });
        if (i === 2) {
          await until(async () => ((await images.getImage({ id: doomed.id })).status?.state === ImageState.IMPORTING ? true : undefined), "the doomed upload IMPORTING");
          await createClient(ImageService, s.transport).deleteImage({ id: doomed.id });
        }
      }
    }
    const gone = await rejection(images.uploadImage(endless(), { timeoutMs: 60_000 }));
    assert.equal(gone.code, Code.Aborted, gone.message);
    assert.match(gone.rawMessage, /deleted during its upload/);
    await until(async () => ((await readdir(poolDir)).every((f) => !f.includes(doomed.id)) ? true : undefined), "no file of the deleted upload");

    // Without a declared size, a cancelled stream is still not taken for a complete one.
    const unsized = await uploadable("up-unsized");
    const ac2 = new AbortController();
    async function* slow2(): AsyncGenerator<UploadImageRequest> {
      const all = [...messages(unsized.id, data, 64 * 1024, 0n)];
      yield all[0]!;
      yield all[1]!;
      await until(async () => ((await images.getImage({ id: unsized.id })).status?.state === ImageState.IMPORTING ? true : undefined), "the unsized upload IMPORTING");
      ac2.abort();
      await new Promise(() => undefined);
    }
    assert.equal((await rejection(images.uploadImage(slow2(), { signal: ac2.signal }))).code, Code.Canceled);
    const settled = await until(async () => {
      const y = await images.getImage({ id: unsized.id });
      return y.status?.state !== ImageState.IMPORTING && y.status?.state !== ImageState.CONVERTING ? y : undefined;
    }, "the unsized upload settled");
    assert.equal(settled.status?.state, ImageState.QUEUED);
    assert.match(settled.status!.errorMessage, /cancelled/);
    await until(async () => ((await readdir(poolDir)).every((f) => !f.includes(unsized.id)) ? true : undefined), "no file of the unsized upload");
  });

  it("an upload larger than the pool's free space is RESOURCE_EXHAUSTED saying how much there is", async () => {
    const before = await poolFiles();
    const huge = (1n << 40n) - 512n;
    const img = await uploadable("up-huge", { sizeBytes: huge });
    const err = await rejection(upload(messages(img.id, Buffer.alloc(1024), 1024, huge)));
    assert.equal(err.code, Code.ResourceExhausted, err.message);
    assert.match(err.rawMessage, new RegExp(`the upload is ${huge} bytes, more than the pool's \\d+ available bytes`));
    assert.equal((await images.getImage({ id: img.id })).status?.state, ImageState.ERROR);
    assert.deepEqual(await poolFiles(), before);
  });

  it("bad uploads are refused naming the field, and change nothing", async () => {
    const data = web.files.get("/a.qcow2")!;
    const img = await uploadable("up-bad", { sizeBytes: BigInt(data.length) });
    const chunkFirst = await rejection(upload([create(UploadImageRequestSchema, { content: { case: "chunk", value: data.subarray(0, 10) } })]));
    assert.equal(chunkFirst.code, Code.InvalidArgument);
    assert.deepEqual(fields(chunkFirst), ["header"]);
    const badId = await rejection(upload(messages("../etc/passwd", data)));
    assert.equal(badId.code, Code.InvalidArgument);
    assert.deepEqual(fields(badId), ["header.image_id"]);
    const size = await rejection(upload(messages(img.id, data, 64 * 1024, 5n)));
    assert.equal(size.code, Code.InvalidArgument);
    assert.deepEqual(fields(size), ["header.size_bytes"]);
    const big = await rejection(upload([...messages(img.id, Buffer.alloc(4 * 1024 * 1024 - 15), 4 * 1024 * 1024 - 15, 0n)]));
    assert.equal(big.code, Code.InvalidArgument);
    assert.deepEqual(fields(big), ["chunk"]);
    const twoHeaders = await rejection(upload([...messages(img.id, data, 1 << 20, 0n)].flatMap((m, i) => (i === 1 ? [m, create(UploadImageRequestSchema, { content: { case: "header", value: { imageId: img.id } } })] : [m]))));
    assert.equal(twoHeaders.code, Code.InvalidArgument);
    assert.deepEqual(fields(twoHeaders), ["header"]);
    const missing = await rejection(upload(messages("7c2f4a7e-0000-4000-8000-000000000000", data)));
    assert.equal(missing.code, Code.NotFound);
    assert.match(missing.rawMessage, /image '7c2f4a7e-0000-4000-8000-000000000000' not found/);
    const fromUrl = await images.createImage({ name: "up-url", spec: { source: { source: { case: "url", value: "http://127.0.0.1:1/x.qcow2" } } } });
    const notUpload = await rejection(upload(messages(fromUrl.id, data)));
    assert.equal(notUpload.code, Code.FailedPrecondition);
    // ImportImage creates URL imports only.
    const viaImport = await rejection(images.importImage({ target: { case: "create", value: { name: "up-import", spec: { source: { source: { case: "upload", value: {} } } } } } })[Symbol.asyncIterator]().next());
    assert.equal(viaImport.code, Code.InvalidArgument);
    assert.deepEqual(fields(viaImport), ["create.spec.source"]);
    const after = await images.getImage({ id: img.id });
    assert.equal(after.status?.state, ImageState.QUEUED);
    assert.ok((await poolFiles()).every((f) => !f.includes(img.id)));
  });

  it("an uploaded image is copied to another node of its pool when a volume there needs it: the holder's file streamed into that node's upload, checked by sha256", async () => {
    const HV2 = "00000000-0000-0000-0001-000000000002";
    const pools = createClient(StoragePoolService, s.transport);
    const twoNodes = (await pools.createStoragePool({ name: "two-nodes", spec: { type: StoragePoolType.LOCAL_DIR, nodeIds: [HV1, HV2] } })).id;
    await until(async () => ((await pools.getStoragePool({ id: twoNodes })).status?.state === StoragePoolState.READY ? true : undefined), "the second pool READY");
    const data = web.files.get("/a.qcow2")!;
    const img = await images.createImage({ name: "up-copied", spec: { poolId: twoNodes, source: { source: { case: "upload", value: { sizeBytes: BigInt(data.length) } } } } });
    const done = await upload(messages(img.id, data));
    assert.equal(done.status?.state, ImageState.AVAILABLE, done.status?.errorMessage);
    const first = done.status!.copies[0]!.nodeId;
    const other = first === HV1 ? HV2 : HV1;
    const v = await volumes.createVolume({ name: "clone-elsewhere", nodeId: other, spec: { poolId: twoNodes, source: { source: { case: "imageId", value: img.id }, linked: true } } });
    const ready = await until(async () => {
      const x = await volumes.getVolume({ id: v.id });
      if (x.status?.state === VolumeState.ERROR) throw new Error(x.status.errorMessage);
      return x.status?.state === VolumeState.AVAILABLE ? x : undefined;
    }, "the clone on the other node AVAILABLE", 60_000);
    assert.equal(ready.status?.nodeId, other);
    const copied = await images.getImage({ id: img.id });
    assert.deepEqual(copied.status?.copies.map((c) => c.nodeId).sort(), [HV1, HV2].sort(), "the image has a copy on both nodes now");
    assert.equal(copied.status?.conditions.find((c) => c.type === "Copied")?.status, 1 /* TRUE */);
    const otherDir = join(dir, "storage", other, twoNodes);
    assert.doesNotMatch(execFileSync("qemu-io", ["-f", "qcow2", "-r", join(otherDir, `${v.id}.qcow2`), "-c", "read -P 0xab 0 1M"], { encoding: "utf8" }), /Pattern verification failed/, "the clone reads the uploaded data on the other node");
    assert.deepEqual((await readdir(otherDir)).filter((f) => f.startsWith(".") && f !== ".quantix-pool"), [], "no partial file left there");
    await volumes.deleteVolume({ id: v.id });
    await until(() => volumes.getVolume({ id: v.id }).then(() => undefined, (e: unknown) => (ConnectError.from(e).code === Code.NotFound ? true : undefined)), "the clone gone", 30_000);
    await images.deleteImage({ id: img.id });
  });

  it("images from a volume and from a snapshot: flat copies on the volume's node with their sha256; a linked clone of one reads the data", async () => {
    const snapshots = createClient(SnapshotService, s.transport);
    const v = await volumes.createVolume({ name: "image-source", spec: { sizeGib: 1n, poolId, format: VolumeFormat.QCOW2 } });
    await until(async () => ((await volumes.getVolume({ id: v.id })).status?.state === VolumeState.AVAILABLE ? true : undefined), "source volume AVAILABLE");
    const file = join(poolDir, `${v.id}.qcow2`);
    await run("qemu-io", ["-f", "qcow2", "-c", "write -P 0x11 0 64k", file]);
    const snap = await snapshots.createSnapshot({ name: "first", spec: { target: { case: "volumeId", value: v.id } } });
    await until(async () => ((await snapshots.getSnapshot({ id: snap.id })).status?.state === SnapshotState.AVAILABLE ? true : undefined), "snapshot AVAILABLE");
    await run("qemu-io", ["-f", "qcow2", "-c", "write -P 0x22 0 64k", file]);

    const readsAs = async (path: string, byte: string) => !/Pattern verification failed/.test((await run("qemu-io", ["-f", "qcow2", "-r", "-c", `read -P ${byte} 0 64k`, path])).stdout);
    const available = (id: string) =>
      until(async () => {
        const x = await images.getImage({ id });
        return x.status?.state === ImageState.AVAILABLE || x.status?.state === ImageState.ERROR ? x : undefined;
      }, `image ${id} imported`, 30_000);

    const fromVolume = await available((await images.createImage({ name: "from-volume", spec: { source: { source: { case: "volumeId", value: v.id } } } })).id);
    assert.equal(fromVolume.status?.state, ImageState.AVAILABLE, fromVolume.status?.errorMessage);
    assert.equal(fromVolume.spec?.poolId, poolId);
    const imgFile = join(poolDir, `${fromVolume.id}.qcow2`);
    assert.ok(await readsAs(imgFile, "0x22"), "the volume's current data");
    assert.equal(fromVolume.status?.checksumSha256, sha(readFileSync(imgFile)));
    assert.equal(fromVolume.status?.virtualSizeBytes, 1n << 30n);
    assert.deepEqual(fromVolume.status?.copies.map((c) => [c.nodeId, c.poolId]), [[HV1, poolId]]);
    const info = JSON.parse(execFileSync("qemu-img", ["info", "--output=json", "-f", "qcow2", imgFile], { encoding: "utf8" })) as { "backing-filename"?: string; snapshots?: unknown[] };
    assert.equal(info["backing-filename"], undefined, "a flat copy");
    assert.equal(info.snapshots, undefined, "without the volume's snapshots");

    const fromSnap = await available((await images.createImage({ name: "from-snapshot", spec: { source: { source: { case: "snapshotId", value: snap.id } } } })).id);
    assert.equal(fromSnap.status?.state, ImageState.AVAILABLE, fromSnap.status?.errorMessage);
    assert.ok(await readsAs(join(poolDir, `${fromSnap.id}.qcow2`), "0x11"), "the data the snapshot captured");
    assert.match(fromSnap.status?.checksumSha256 ?? "", /^[0-9a-f]{64}$/);

    const clone = await volumes.createVolume({ name: "from-snapshot-image", spec: { source: { source: { case: "imageId", value: fromSnap.id }, linked: true } } });
    await until(async () => ((await volumes.getVolume({ id: clone.id })).status?.state === VolumeState.AVAILABLE ? true : undefined), "linked clone AVAILABLE", 60_000, 50);
    assert.ok(await readsAs(join(poolDir, `${clone.id}.qcow2`), "0x11"), "the clone reads the image's data");

    // Bad sources: another pool named, an unknown volume, a wrong sha256.
    const otherPool = await rejection(images.createImage({ name: "bad-pool", spec: { poolId: "6b1f9c1e-0000-4000-8000-000000000000", source: { source: { case: "volumeId", value: v.id } } } }));
    assert.equal(otherPool.code, Code.InvalidArgument);
    assert.deepEqual(fields(otherPool), ["spec.pool_id"]);
    const unknown = await rejection(images.createImage({ name: "bad-volume", spec: { source: { source: { case: "volumeId", value: "6b1f9c1e-0000-4000-8000-000000000001" } } } }));
    assert.equal(unknown.code, Code.NotFound);
    const malformed = await rejection(images.createImage({ name: "bad-snap", spec: { source: { source: { case: "snapshotId", value: "bad id!" } } } }));
    assert.equal(malformed.code, Code.InvalidArgument);
    assert.deepEqual(fields(malformed), ["spec.source.snapshot_id"]);
    const wrong = await available((await images.createImage({ name: "from-volume-wrong-sha", spec: { source: { source: { case: "volumeId", value: v.id }, expectedSha256: "1".repeat(64) } } })).id);
    assert.equal(wrong.status?.state, ImageState.ERROR);
    assert.match(wrong.status!.errorMessage, /sha256 mismatch/);
    assert.ok((await readdir(poolDir)).every((f) => !f.includes(wrong.id)));

    // A volume a running VM uses is refused (there is no force flag): the copy would not be consistent.
    const vms = createClient(VMService, s.transport);
    const vm = await vms.createVM({ name: "uses-the-source", spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, disks: [{ id: "root", volumeId: v.id }], placement: { tolerations: [{ key: "quantix.io/simulated", operator: TolerationOperator.EXISTS }] } } });
    await vms.startVM({ id: vm.id });
    await until(async () => ((await vms.getVM({ id: vm.id })).status?.state === VmStatus_State.RUNNING ? true : undefined), "the VM using the volume RUNNING", 30_000);
    const busy = await rejection(images.createImage({ name: "from-busy-volume", spec: { source: { source: { case: "volumeId", value: v.id } } } }));
    assert.equal(busy.code, Code.FailedPrecondition);
    assert.match(busy.rawMessage, new RegExp(`IN_USE|VM '${vm.id}'`));
    await vms.deleteVM({ id: vm.id, force: true }).catch(() => undefined);

    await volumes.deleteVolume({ id: clone.id });
  });
});
