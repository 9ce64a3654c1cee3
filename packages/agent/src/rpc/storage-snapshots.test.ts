import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { CloneMode, StoragePoolType, StorageService, VolumeFormat } from "@quantix/api/gen/vmm/v1/storage_pb.js";
import { silentLogger } from "@quantix/rpc";
import { ensureDebianPackages, rejection, until } from "@quantix/testing";
import { SimulatedBackend } from "../backends/simulated/simulated-backend.js";
import { NodeStorage } from "../storage/node-storage.js";
import { QemuImg } from "../storage/qemu-img.js";
import { VmManager } from "../vm-manager.js";
import { startAgentServer, type AgentServer } from "./agent-server.js";

// Offline internal snapshots over the agent's gRPC port, on real qemu-img: the data a
// revert brings back is read with qemu-io.

const MIB = 1024n * 1024n;
const root = mkdtempSync(join(tmpdir(), "quantix-sa-snap-"));
let backend: SimulatedBackend;
let server: AgentServer;
let c: Client<typeof StorageService>;
const pool = "00000000-0000-4000-c000-000000000001";

before(async () => {
  await ensureDebianPackages(["qemu-utils"]);
  backend = new SimulatedBackend({ bootMs: 20 });
  const manager = new VmManager({ backend });
  await manager.start();
  server = await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: silentLogger, storage: new NodeStorage({ poolRoot: join(root, "pools"), sharedDirs: [] }) });
  c = createClient(StorageService, createGrpcTransport({ baseUrl: server.url }));
  await c.ensurePool({ poolId: pool, type: StoragePoolType.DIR });
});
after(async () => {
  await server?.close();
  await backend?.close();
  rmSync(root, { recursive: true, force: true });
});

let n = 0;
const uuid = () => `00000000-0000-4000-d000-${(++n).toString(16).padStart(12, "0")}`;
const write = (path: string, pattern: number) => execFileSync("qemu-io", ["-f", "qcow2", path, "-c", `write -P ${pattern} 0 1M`], { stdio: "ignore" });
const holds = (path: string, pattern: number) => !execFileSync("qemu-io", ["-f", "qcow2", "-r", path, "-c", `read -P ${pattern} 0 1M`], { encoding: "utf8" }).includes("Pattern verification failed");

test("snapshot, write, a volume from the snapshot, revert: the data comes back; list, delete, idempotency", async () => {
  const vol = uuid();
  const v = await c.createVolume({ poolId: pool, volumeId: vol, format: VolumeFormat.QCOW2, sizeBytes: 8n * MIB });
  write(v.path, 0xaa);
  const snap = uuid();
  const s = await c.createVolumeSnapshot({ poolId: pool, volumeId: vol, snapshotId: snap });
  assert.equal(s.snapshotId, snap);
  assert.ok(Math.abs(timestampMs(s.createdAt!) - Date.now()) < 60_000, "created_at is the image's time of the snapshot");
  assert.equal((await c.createVolumeSnapshot({ poolId: pool, volumeId: vol, snapshotId: snap })).snapshotId, snap, "idempotent");
  write(v.path, 0xbb);
  assert.ok(holds(v.path, 0xbb));
  assert.deepEqual((await c.listVolumeSnapshots({ poolId: pool, volumeId: vol })).snapshots.map((x) => x.snapshotId), [snap]);
  // A new volume from the snapshot: the data as it was then, while the volume moved on.
  const copy = await c.createVolume({ poolId: pool, volumeId: uuid(), format: VolumeFormat.QCOW2, sizeBytes: 16n * MIB, source: { volumeId: vol, mode: CloneMode.FULL, snapshotId: snap } });
  assert.ok(holds(copy.path, 0xaa), "the copy holds the snapshot's data");
  assert.equal(copy.virtualSizeBytes, 16n * MIB);
  assert.equal(copy.backingVolumeId, "");
  const unknown = await rejection(c.createVolume({ poolId: pool, volumeId: uuid(), format: VolumeFormat.QCOW2, source: { volumeId: vol, mode: CloneMode.FULL, snapshotId: uuid() } }));
  assert.equal(unknown.code, Code.NotFound);
  assert.match(unknown.message, /snapshot/);
  const linked = await rejection(c.createVolume({ poolId: pool, volumeId: uuid(), format: VolumeFormat.QCOW2, source: { volumeId: vol, mode: CloneMode.LINKED, snapshotId: snap } }));
  assert.deepEqual(linked.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((x) => x.field)), ["source.snapshot_id"]);
  await c.revertVolumeSnapshot({ poolId: pool, volumeId: vol, snapshotId: snap });
  assert.ok(holds(v.path, 0xaa), "the revert brought the snapshot's data back");
  const ghost = uuid();
  const nf = await rejection(c.revertVolumeSnapshot({ poolId: pool, volumeId: vol, snapshotId: ghost }));
  assert.equal(nf.code, Code.NotFound);
  assert.match(nf.message, new RegExp(ghost));
  await c.deleteVolumeSnapshot({ poolId: pool, volumeId: vol, snapshotId: snap });
  assert.deepEqual((await c.listVolumeSnapshots({ poolId: pool, volumeId: vol })).snapshots, []);
  assert.equal((await rejection(c.deleteVolumeSnapshot({ poolId: pool, volumeId: vol, snapshotId: snap }))).code, Code.NotFound);
  assert.ok(holds(v.path, 0xaa), "deleting a snapshot leaves the data");
});

test("refused: raw volumes, reverting a linked clone's backing file, a volume in use, malformed ids", async () => {
  const raw = uuid();
  await c.createVolume({ poolId: pool, volumeId: raw, format: VolumeFormat.RAW, sizeBytes: MIB });
  const r = await rejection(c.createVolumeSnapshot({ poolId: pool, volumeId: raw, snapshotId: uuid() }));
  assert.equal(r.code, Code.FailedPrecondition);
  assert.match(r.message, /raw/);
  assert.deepEqual((await c.listVolumeSnapshots({ poolId: pool, volumeId: raw })).snapshots, []);

  const base = uuid();
  const b = await c.createVolume({ poolId: pool, volumeId: base, format: VolumeFormat.QCOW2, sizeBytes: MIB });
  const snap = uuid();
  await c.createVolumeSnapshot({ poolId: pool, volumeId: base, snapshotId: snap });
  const clone = uuid();
  await c.createVolume({ poolId: pool, volumeId: clone, format: VolumeFormat.QCOW2, source: { volumeId: base, mode: CloneMode.LINKED } });
  const underClone = await rejection(c.revertVolumeSnapshot({ poolId: pool, volumeId: base, snapshotId: snap }));
  assert.equal(underClone.code, Code.FailedPrecondition);
  assert.match(underClone.message, new RegExp(clone));

  const holder = spawn("qemu-io", ["-f", "qcow2", b.path, "-c", "sleep 20000"], { stdio: "ignore" });
  try {
    const qemuImg = new QemuImg();
    await until(() => qemuImg.info(b.path, "qcow2", { shared: false }).then(() => undefined, () => true), "qemu-io holds the image's lock", 5000);
    const busy = await rejection(c.createVolumeSnapshot({ poolId: pool, volumeId: base, snapshotId: uuid() }));
    assert.equal(busy.code, Code.FailedPrecondition);
    assert.match(busy.message, /in use/);
    assert.equal((await c.listVolumeSnapshots({ poolId: pool, volumeId: base })).snapshots.length, 1, "listing works while it is in use");
  } finally {
    holder.kill("SIGKILL");
  }

  const bad = await rejection(c.createVolumeSnapshot({ poolId: pool, volumeId: base, snapshotId: "before-upgrade" }));
  assert.equal(bad.code, Code.InvalidArgument);
  assert.deepEqual(bad.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((x) => x.field)), ["snapshot_id"]);
});
