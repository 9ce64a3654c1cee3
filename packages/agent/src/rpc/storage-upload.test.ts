import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { gzipSync } from "node:zlib";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { StoragePoolType, StorageService, UploadVolumeRequestSchema, VolumeFormat, type UploadVolumeRequest } from "@quantix/api/gen/vmm/v1/storage_pb.js";
import { silentLogger } from "@quantix/rpc";
import { ensureDebianPackages, rejection, until } from "@quantix/testing";
import { SimulatedBackend } from "../backends/simulated/simulated-backend.js";
import { NodeStorage } from "../storage/node-storage.js";
import { VmManager } from "../vm-manager.js";
import { startAgentServer, type AgentServer } from "./agent-server.js";

// UploadVolume over a real agent server and a gRPC client (a client stream): images made
// by the real qemu-img are received, verified and converted as ImportVolume's downloads
// are; every bad stream ends in a clear error (the field named) with no file in the pool.

const root = mkdtempSync(join(tmpdir(), "quantix-sa-upload-"));
let backend: SimulatedBackend;
let server: AgentServer;
let c: Client<typeof StorageService>;
const pool = "00000000-0000-4000-a000-000000000002";
let poolDir: string;
let qcow2: Buffer;
let evil: Buffer;

before(async () => {
  await ensureDebianPackages(["qemu-utils", "xz-utils"]);
  const img = join(root, "img");
  execFileSync("mkdir", [img]);
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", join(img, "a.qcow2"), "16M"]);
  execFileSync("qemu-io", ["-f", "qcow2", join(img, "a.qcow2"), "-c", "write -P 0xab 0 1M"], { stdio: "ignore" });
  qcow2 = readFileSync(join(img, "a.qcow2"));
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", join(img, "evil.qcow2"), "1M"]);
  evil = readFileSync(join(img, "evil.qcow2"));
  backend = new SimulatedBackend({ bootMs: 20 });
  const manager = new VmManager({ backend });
  await manager.start();
  server = await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: silentLogger, storage: new NodeStorage({ poolRoot: join(root, "pools"), sharedDirs: [] }) });
  c = createClient(StorageService, createGrpcTransport({ baseUrl: server.url }));
  poolDir = (await c.ensurePool({ poolId: pool, type: StoragePoolType.DIR })).path;
});
after(async () => {
  await server?.close();
  await backend?.close();
  rmSync(root, { recursive: true, force: true });
});

let n = 0;
const uuid = () => `00000000-0000-4000-c000-${(++n).toString(16).padStart(12, "0")}`;
const files = () => readdirSync(poolDir).filter((f) => f !== ".quantix-pool").sort();
const fields = (e: ConnectError) => e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field));
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

interface Header {
  poolId?: string;
  volumeId?: string;
  format?: VolumeFormat;
  sizeBytes?: bigint;
  sha256?: string;
  expectedFormat?: string;
}
async function* msgs(header: Header | undefined, data: Buffer, chunk = 128 * 1024): AsyncGenerator<UploadVolumeRequest> {
  if (header) yield create(UploadVolumeRequestSchema, { content: { case: "header", value: { poolId: pool, format: VolumeFormat.QCOW2, ...header } } });
  for (let i = 0; i < data.length; i += chunk) yield create(UploadVolumeRequestSchema, { content: { case: "chunk", value: data.subarray(i, i + chunk) } });
}

test("a qcow2 and a gzipped raw are received, hashed, inspected and converted", async () => {
  const id = uuid();
  const r = await c.uploadVolume(msgs({ volumeId: id, sizeBytes: BigInt(qcow2.length), sha256: sha(qcow2), expectedFormat: "qcow2" }, qcow2));
  assert.equal(r.bytesReceived, BigInt(qcow2.length));
  assert.equal(r.sha256, sha(qcow2));
  assert.equal(r.detectedFormat, "qcow2");
  assert.equal(r.volume?.virtualSizeBytes, 16n << 20n);
  assert.doesNotMatch(execFileSync("qemu-io", ["-f", "qcow2", "-r", join(poolDir, `${id}.qcow2`), "-c", "read -P 0xab 0 1M"], { encoding: "utf8" }), /Pattern verification failed/);
  const raw = Buffer.alloc(3 << 20, 0x5a);
  const rid = uuid();
  const rr = await c.uploadVolume(msgs({ volumeId: rid, format: VolumeFormat.RAW }, gzipSync(raw)));
  assert.equal(rr.detectedFormat, "raw");
  assert.equal(rr.volume?.virtualSizeBytes, BigInt(raw.length));
  assert.ok(readFileSync(join(poolDir, `${rid}.raw`)).equals(raw));
  // GetVolume with sha256 hashes the stored file.
  assert.equal((await c.getVolume({ poolId: pool, volumeId: rid, sha256: true })).sha256, sha(raw));
  assert.equal((await c.getVolume({ poolId: pool, volumeId: rid })).sha256, "");
  // The volume exists now: a second upload is refused.
  assert.equal((await rejection(c.uploadVolume(msgs({ volumeId: rid, format: VolumeFormat.RAW }, raw)))).code, Code.AlreadyExists);
});

test("bad streams end with the reason and leave no file", async () => {
  const before = files();
  const cases: [string, () => AsyncGenerator<UploadVolumeRequest>, Code, RegExp, string[]?][] = [
    ["no header", () => msgs(undefined, qcow2), Code.InvalidArgument, /header/, ["header"]],
    ["bad ids", () => msgs({ poolId: "../x", volumeId: "nope", format: VolumeFormat.UNSPECIFIED, sha256: "XY", expectedFormat: "qed" }, qcow2), Code.InvalidArgument, /header/, ["header.expected_format", "header.format", "header.pool_id", "header.sha256", "header.volume_id"]],
    ["short", () => msgs({ volumeId: uuid(), sizeBytes: BigInt(qcow2.length) }, qcow2.subarray(0, 1000)), Code.DataLoss, /ended after 1000 of the \d+ bytes/],
    ["long", () => msgs({ volumeId: uuid(), sizeBytes: 1000n }, qcow2), Code.OutOfRange, /more than the 1000 bytes/],
    ["wrong sha256", () => msgs({ volumeId: uuid(), sha256: "0".repeat(64) }, qcow2), Code.FailedPrecondition, /sha256 mismatch: expected 0{64}, the upload is/],
    ["not the declared format", () => msgs({ volumeId: uuid(), expectedFormat: "vmdk" }, qcow2), Code.FailedPrecondition, /the data is qcow2, not the vmdk/],
    ["hostile", () => msgs({ volumeId: uuid() }, evil), Code.FailedPrecondition, /image refused: .*backing file/],
    ["too big for the pool", () => msgs({ volumeId: uuid(), sizeBytes: (1n << 40n) - 512n }, qcow2), Code.ResourceExhausted, /more than the pool's \d+ available bytes/],
    ["above the limit", () => msgs({ volumeId: uuid(), sizeBytes: (1n << 40n) + 1n }, qcow2), Code.InvalidArgument, /size_bytes/, ["header.size_bytes"]],
    ["a chunk too large", () => msgs({ volumeId: uuid() }, Buffer.alloc((4 << 20) - 15), (4 << 20) - 15), Code.InvalidArgument, /chunk/, ["chunk"]],
  ];
  for (const [name, stream, code, message, paths] of cases) {
    const err = await rejection(c.uploadVolume(stream()));
    assert.equal(err.code, code, `${name}: ${err.message}`);
    assert.match(err.rawMessage, message, name);
    if (paths) assert.deepEqual(fields(err).sort(), paths, name);
  }
  assert.deepEqual(files(), before, "no partial file left");
});

test("a stream the client cancels leaves no file", async () => {
  const before = files();
  const ac = new AbortController();
  async function* stalled(): AsyncGenerator<UploadVolumeRequest> {
    yield* msgs({ volumeId: uuid() }, qcow2.subarray(0, 256 * 1024));
    // The temporary file exists while the stream is open.
    await until(async () => (readdirSync(poolDir).some((f) => f.endsWith(".upload.partial")) ? true : undefined), "the upload's temporary file");
    ac.abort();
    await new Promise(() => undefined);
  }
  assert.equal((await rejection(c.uploadVolume(stalled(), { signal: ac.signal }))).code, Code.Canceled);
  await until(async () => (readdirSync(poolDir).filter((f) => f !== ".quantix-pool").sort().join() === before.join() ? true : undefined), "the partial upload removed");
});
