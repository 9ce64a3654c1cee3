import assert from "node:assert/strict";
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { toJson } from "@bufbuild/protobuf";
import { ImageSchema, ImageState } from "@quantix/api/gen/Quantixkvm/storage/v1/image_pb.js";
import { ImageService } from "@quantix/api/gen/Quantixkvm/storage/v1/image_service_pb.js";
import { StoragePoolSchema, StoragePoolType } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_pb.js";
import { StoragePoolService } from "@quantix/api/gen/Quantixkvm/storage/v1/storage_pool_service_pb.js";
import { ensureDebianPackages, startTestServer, until, type TestServer } from "@quantix/testing";
import { startImageServer, type ImageServer } from "../testing/image-server.js";

// An import is the image controller's, not a client's: one under way when the control
// plane stops is started again by the next one, and ends AVAILABLE with nothing partial
// left behind.

const HV2 = "00000000-0000-0000-0001-000000000002";
let dir: string;
let web: ImageServer;

before(async () => {
  await ensureDebianPackages(["qemu-utils", "xz-utils"]);
  dir = await mkdtemp(join(tmpdir(), "quantix-image-restart-"));
  web = await startImageServer(join(dir, "fixtures"));
});
after(async () => {
  await web?.close();
  await rm(dir, { recursive: true, force: true });
});

test("an import cut by a control-plane restart is carried on by the next one", async () => {
  const start = () => startTestServer({ store: { kind: "embedded", dataDir: join(dir, "data") }, demo: true });
  let s: TestServer = await start();
  let poolId: string;
  let imageId: string;
  try {
    const pools = createClient(StoragePoolService, s.transport);
    const images = createClient(ImageService, s.transport);
    poolId = (await pools.createStoragePool({ name: "durable", spec: { type: StoragePoolType.LOCAL_DIR, nodeIds: [HV2] } })).id;
    imageId = (await images.createImage({ name: "interrupted", spec: { poolId, source: { source: { case: "url", value: `${web.base}/stall-once.qcow2` } } } })).id;
    // The first download trickles for as long as its client stays, so the deadline only bounds
    // how long a loaded machine takes to elect a leader and start the image controller.
    await until(async () => ((await images.getImage({ id: imageId })).status?.state === ImageState.IMPORTING && web.requests.includes("/stall-once.qcow2") ? true : undefined), "downloading before the restart", 120_000).catch(async (err: unknown) => {
      // What the image and its pool said, and what the web server was asked: why it did not start.
      const img = await images.getImage({ id: imageId }).then((x) => JSON.stringify(toJson(ImageSchema, x)), (e: Error) => e.message);
      const pool = await pools.getStoragePool({ id: poolId }).then((x) => JSON.stringify(toJson(StoragePoolSchema, x)), (e: Error) => e.message);
      throw new Error(`${String(err)}; the image: ${img}; its pool: ${pool}; the web server was asked for: ${JSON.stringify(web.requests)}`);
    });
  } finally {
    await s.close();
  }
  s = await start();
  try {
    const images = createClient(ImageService, s.transport);
    const img = await until(async () => {
      const x = await images.getImage({ id: imageId });
      return x.status?.state === ImageState.AVAILABLE || x.status?.state === ImageState.ERROR ? x : undefined;
    }, "AVAILABLE after the restart", 30_000);
    assert.equal(img.status?.state, ImageState.AVAILABLE, img.status?.errorMessage);
    assert.equal(web.requests.filter((r) => r === "/stall-once.qcow2").length, 2, "downloaded again from the start");
    assert.deepEqual((await readdir(join(dir, "data", "storage", HV2, poolId))).filter((f) => f !== ".quantix-pool"), [`${imageId}.qcow2`], "the image, and nothing partial");
    await images.deleteImage({ id: imageId });
  } finally {
    await s.close();
  }
});
