import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { NodeStatus_Phase as Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { ImageFormat, ImageState } from "@quantix/api/gen/Quantixkvm/storage/v1/image_pb.js";
import { ImageService, type ImportImageProgress } from "@quantix/api/gen/Quantixkvm/storage/v1/image_service_pb.js";
import { StoragePoolState, StoragePoolType } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { StoragePoolService } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import { VolumeState } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_pb.js";
import { VolumeService } from "@quantix/api/gen/Quantixkvm/storage/v1/volume_service_pb.js";
import { SimulatedBackend } from "@quantix/agent";
import { ensureDebianPackages, rejection, startTestServer, TestAgent, until, type TestServer } from "@quantix/testing";
import { startImageServer, type ImageServer } from "../testing/image-server.js";

// Images on a node that runs a real host agent: the image controller imports through the
// agent's vmm.v1.StorageService ImportVolume stream (over the node's agent connection),
// the image lands in the agent's pool directory, a linked clone is made there, and a
// hostile image is refused by the agent with its reason; UploadImage is forwarded to the
// agent's UploadVolume client stream, and an image from a volume is copied by the agent.

describe("images on a host agent's node", () => {
  let s: TestServer;
  let dir: string;
  let web: ImageServer;
  let agent: TestAgent<SimulatedBackend>;
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

  before(async () => {
    await ensureDebianPackages(["qemu-utils", "xz-utils"]);
    dir = await mkdtemp(join(tmpdir(), "quantix-agent-images-"));
    web = await startImageServer(join(dir, "fixtures"));
    s = await startTestServer({ demo: false, defaultQuota: {} });
    agent = new TestAgent(new SimulatedBackend({ bootMs: 20, consoleIntervalMs: 20 }), join(dir, "agent"), `image-agent-${process.pid}`);
    await agent.start(s.url);
    const nodeId = await until(async () => (await s.nodes.listNodes({})).nodes.find((n) => n.hostname === agent.name && n.status?.phase === Phase.READY)?.id, "the agent's node READY", 30_000);
    const pools = createClient(StoragePoolService, s.transport);
    images = createClient(ImageService, s.transport);
    volumes = createClient(VolumeService, s.transport);
    poolId = (await pools.createStoragePool({ name: "agent-local", spec: { type: StoragePoolType.LOCAL_DIR, nodeIds: [nodeId], isDefault: true } })).id;
    await until(async () => ((await pools.getStoragePool({ id: poolId })).status?.state === StoragePoolState.READY ? true : undefined), "pool READY on the agent");
    poolDir = join(agent.stateDir, "pools", poolId);
  });
  after(async () => {
    await agent?.kill().catch(() => undefined);
    await s?.close();
    await web?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it("imports a gzipped qcow2 through the agent's ImportVolume; a linked clone is made on the agent; the image is kept while it exists", async () => {
    const steps = await importAll({ target: { case: "create", value: { name: "agent-image", spec: { source: { source: { case: "url", value: `${web.base}/a.qcow2.gz` }, expectedSha256: web.sha256("/a.qcow2.gz") } } } } });
    const img = steps.at(-1)!.image!;
    assert.equal(img.status?.state, ImageState.AVAILABLE, img.status?.errorMessage);
    assert.ok(steps.some((p) => p.state === ImageState.CONVERTING), steps.map((p) => ImageState[p.state]).join(","));
    assert.equal(img.status?.virtualSizeBytes, 16n << 20n);
    assert.equal(img.status?.detectedFormat, ImageFormat.QCOW2);
    assert.equal(img.status?.checksumSha256, web.sha256("/a.qcow2.gz"));
    assert.ok((await poolFiles()).includes(`${img.id}.qcow2`), "the agent holds the image's copy");

    const v = await volumes.createVolume({ name: "agent-from-image", spec: { source: { source: { case: "imageId", value: img.id }, linked: true } } });
    const ready = await until(async () => {
      const x = await volumes.getVolume({ id: v.id });
      return x.status?.state === VolumeState.AVAILABLE || x.status?.state === VolumeState.ERROR ? x : undefined;
    }, "volume from the image AVAILABLE on the agent", 30_000);
    assert.equal(ready.status?.state, VolumeState.AVAILABLE, ready.status?.errorMessage);
    assert.ok((await poolFiles()).includes(`${v.id}.qcow2`));
    assert.equal((await rejection(images.deleteImage({ id: img.id }))).code, Code.FailedPrecondition);

    await volumes.deleteVolume({ id: v.id });
    await images.deleteImage({ id: img.id });
    await until(async () => ((await poolFiles()).length === 0 ? true : undefined), "the agent removed the clone and the image");
  });

  it("UploadImage forwards the client's stream to the agent's UploadVolume: AVAILABLE in the agent's pool; a short stream leaves nothing", async () => {
    const up = createClient(ImageService, createConnectTransport({ baseUrl: s.url, httpVersion: "2" }));
    const data = web.files.get("/a.qcow2")!;
    const send = (id: string, bytes: Buffer, sizeBytes: bigint) =>
      up.uploadImage(
        (async function* () {
          yield { content: { case: "header" as const, value: { imageId: id, sizeBytes } } };
          for (let i = 0; i < bytes.length; i += 256 * 1024) yield { content: { case: "chunk" as const, value: bytes.subarray(i, i + 256 * 1024) } };
        })(),
        { timeoutMs: 60_000 },
      );
    const short = await images.createImage({ name: "agent-upload-short", spec: { source: { source: { case: "upload", value: { sizeBytes: BigInt(data.length) } } } } });
    const err = await rejection(send(short.id, data.subarray(0, 5000), 0n));
    assert.equal(err.code, Code.DataLoss);
    assert.equal((await images.getImage({ id: short.id })).status?.state, ImageState.QUEUED);
    assert.deepEqual(await poolFiles(), []);

    const img = await images.createImage({ name: "agent-upload", spec: { source: { source: { case: "upload", value: {} }, expectedSha256: web.sha256("/a.qcow2") } } });
    const done = await send(img.id, data, BigInt(data.length));
    assert.equal(done.status?.state, ImageState.AVAILABLE, done.status?.errorMessage);
    assert.equal(done.status?.checksumSha256, web.sha256("/a.qcow2"));
    assert.equal(done.status?.virtualSizeBytes, 16n << 20n);
    const pattern = execFileSync("qemu-io", ["-f", "qcow2", "-r", join(poolDir, `${img.id}.qcow2`), "-c", "read -P 0xab 0 1M"], { encoding: "utf8" });
    assert.doesNotMatch(pattern, /Pattern verification failed/);

    // An image from a volume of the agent's node: copied there, its sha256 computed by the agent.
    const v = await volumes.createVolume({ name: "agent-image-source", spec: { sizeGib: 1n } });
    await until(async () => ((await volumes.getVolume({ id: v.id })).status?.state === VolumeState.AVAILABLE ? true : undefined), "volume AVAILABLE on the agent");
    execFileSync("qemu-io", ["-f", "qcow2", "-c", "write -P 0x33 0 64k", join(poolDir, `${v.id}.qcow2`)], { stdio: "ignore" });
    const fromVolume = await images.createImage({ name: "agent-from-volume", spec: { source: { source: { case: "volumeId", value: v.id } } } });
    const copied = await until(async () => {
      const x = await images.getImage({ id: fromVolume.id });
      return x.status?.state === ImageState.AVAILABLE || x.status?.state === ImageState.ERROR ? x : undefined;
    }, "the image from the volume imported", 30_000);
    assert.equal(copied.status?.state, ImageState.AVAILABLE, copied.status?.errorMessage);
    const file = join(poolDir, `${fromVolume.id}.qcow2`);
    assert.equal(copied.status?.checksumSha256, createHash("sha256").update(readFileSync(file)).digest("hex"));
    assert.doesNotMatch(execFileSync("qemu-io", ["-f", "qcow2", "-r", file, "-c", "read -P 0x33 0 64k"], { encoding: "utf8" }), /Pattern verification failed/);

    await images.deleteImage({ id: img.id });
    await images.deleteImage({ id: fromVolume.id });
    await images.deleteImage({ id: short.id });
    await volumes.deleteVolume({ id: v.id });
    await until(async () => ((await poolFiles()).length === 0 ? true : undefined), "the agent removed the images and the volume");
  });

  it("a hostile image is refused by the agent: ERROR with its reason, nothing left in the pool", async () => {
    const steps = await importAll({ target: { case: "create", value: { name: "agent-evil", spec: { source: { source: { case: "url", value: `${web.base}/evil.qcow2` } } } } } });
    const img = steps.at(-1)!.image!;
    assert.equal(img.status?.state, ImageState.ERROR);
    assert.match(img.status!.errorMessage, /image refused: .*backing file/);
    assert.equal(img.status?.conditions.find((c) => c.type === "Ready")?.reason, "ImportFailedPrecondition");
    assert.deepEqual(await poolFiles(), []);
  });
});
