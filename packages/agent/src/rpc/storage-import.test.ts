import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, test } from "node:test";
import { gzipSync } from "node:zlib";
import { Code, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { BadRequestSchema } from "@quantix/api/gen/google/rpc/error_details_pb.js";
import { CloneMode, ImportPhase, StoragePoolType, StorageService, VolumeFormat, type ImportVolumeProgress } from "@quantix/api/gen/vmm/v1/storage_pb.js";
import { silentLogger } from "@quantix/rpc";
import { ensureDebianPackages, rejection, until } from "@quantix/testing";
import { SimulatedBackend } from "../backends/simulated/simulated-backend.js";
import { NodeStorage } from "../storage/node-storage.js";
import { VmManager } from "../vm-manager.js";
import { startAgentServer, type AgentServer } from "./agent-server.js";

// ImportVolume over a real agent server and gRPC client, from an HTTP server on loopback
// serving images made by real qemu-img: progress, checksums, compression, and each bad
// download ending in a clear error with no file left in the pool.

const MIB = 1024 * 1024;
const root = mkdtempSync(join(tmpdir(), "quantix-sa-import-"));
const fixtures = new Map<string, Buffer>();
const requests: string[] = [];
let web: Server;
let base: string;
let backend: SimulatedBackend;
let server: AgentServer;
let c: Client<typeof StorageService>;
const pool = "00000000-0000-4000-a000-000000000001";
let poolDir: string;

before(async () => {
  await ensureDebianPackages(["qemu-utils", "xz-utils", "zstd"]);
  // A qcow2 with data (a 0xab pattern in its first MiB), gzipped; a 10 MiB raw with
  // incompressible data (several progress messages), xz-compressed; a hostile qcow2.
  const img = join(root, "img");
  execFileSync("mkdir", [img]);
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", join(img, "a.qcow2"), "16M"]);
  execFileSync("qemu-io", ["-f", "qcow2", join(img, "a.qcow2"), "-c", "write -P 0xab 0 1M"], { stdio: "ignore" });
  fixtures.set("/a.qcow2.gz", gzipSync(readFileSync(join(img, "a.qcow2"))));
  fixtures.set("/a.qcow2", readFileSync(join(img, "a.qcow2")));
  // The same image with an internal snapshot: converted on import (the snapshot dropped).
  execFileSync("cp", [join(img, "a.qcow2"), join(img, "snap.qcow2")]);
  execFileSync("qemu-img", ["snapshot", "-c", "before", join(img, "snap.qcow2")]);
  fixtures.set("/snap.qcow2", readFileSync(join(img, "snap.qcow2")));
  const raw = Buffer.alloc(10 * MIB);
  for (let i = 0; i < raw.length; i += 32) createHash("sha256").update(String(i)).digest().copy(raw, i);
  fixtures.set("/b.raw", raw);
  writeFileSync(join(img, "b.raw"), raw);
  execFileSync("xz", ["-k", "-0", join(img, "b.raw")]);
  fixtures.set("/b.raw.xz", readFileSync(join(img, "b.raw.xz")));
  execFileSync("zstd", ["-q", "-k", join(img, "a.qcow2"), "-o", join(img, "a.qcow2.zst")]);
  fixtures.set("/a.qcow2.zst", readFileSync(join(img, "a.qcow2.zst")));
  // zstd's magic bytes, then garbage: refused as corrupt.
  fixtures.set("/bad.zst", Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), Buffer.alloc(4096, 7)]));
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw", join(img, "evil.qcow2"), "1M"]);
  fixtures.set("/evil.qcow2", readFileSync(join(img, "evil.qcow2")));
  execFileSync("qemu-img", ["create", "-q", "-f", "qcow2", join(img, "huge.qcow2"), "60T"]);
  fixtures.set("/huge.qcow2", readFileSync(join(img, "huge.qcow2")));

  web = createServer((req, res) => {
    requests.push(req.url ?? "");
    if (req.url === "/truncated") {
      res.writeHead(200, { "content-length": String(MIB) });
      res.write(Buffer.alloc(100 * 1024));
      setTimeout(() => res.socket?.destroy(), 20);
      return;
    }
    if (req.url === "/slow") {
      // 5 MiB at once (a progress message), then nothing until the client gives up.
      res.writeHead(200, { "content-length": String(64 * MIB) });
      res.write(Buffer.alloc(5 * MIB));
      return;
    }
    if (req.url === "/moved") {
      res.writeHead(302, { location: "/a.qcow2.gz" });
      res.end();
      return;
    }
    const body = fixtures.get(req.url ?? "");
    if (!body) {
      res.writeHead(404);
      res.end();
      return;
    }
    res.writeHead(200, { "content-length": String(body.length) });
    res.end(body);
  });
  await new Promise<void>((resolve) => web.listen(0, "127.0.0.1", resolve));
  base = `http://127.0.0.1:${(web.address() as AddressInfo).port}`;

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
  await new Promise((resolve) => web?.close(resolve));
  rmSync(root, { recursive: true, force: true });
});

let n = 0;
const uuid = () => `00000000-0000-4000-b000-${(++n).toString(16).padStart(12, "0")}`;
const all = async (req: Parameters<typeof c.importVolume>[0]) => {
  const out: ImportVolumeProgress[] = [];
  for await (const p of c.importVolume(req)) out.push(p);
  return out;
};
const failed = async (req: Parameters<typeof c.importVolume>[0]) => rejection(all(req));
const poolFiles = () => readdirSync(poolDir).sort();

test("a gzipped qcow2 becomes a volume: phases in order, sha256 checked, the data intact", async () => {
  const id = uuid();
  const sha256 = createHash("sha256").update(fixtures.get("/a.qcow2.gz")!).digest("hex");
  const steps = await all({ poolId: pool, volumeId: id, format: VolumeFormat.QCOW2, url: `${base}/a.qcow2.gz`, sha256 });
  assert.deepEqual(
    [...new Set(steps.map((s) => s.phase))],
    [ImportPhase.DOWNLOADING, ImportPhase.VERIFYING, ImportPhase.CONVERTING, ImportPhase.READY],
  );
  const last = steps[steps.length - 1]!;
  assert.equal(last.sha256, sha256);
  assert.equal(last.detectedFormat, "qcow2");
  assert.equal(last.bytesDone, BigInt(fixtures.get("/a.qcow2.gz")!.length));
  assert.equal(last.volume?.virtualSizeBytes, 16n * BigInt(MIB));
  const got = execFileSync("qemu-io", ["-f", "qcow2", "-r", last.volume!.path, "-c", "read -P 0xab 0 1M"], { encoding: "utf8" });
  assert.match(got, /read 1048576\/1048576 bytes/);
  assert.doesNotMatch(got, /Pattern verification failed/);

  const before = requests.length;
  const again = await all({ poolId: pool, volumeId: id, format: VolumeFormat.QCOW2, url: `${base}/a.qcow2.gz` });
  assert.deepEqual(again.map((s) => s.phase), [ImportPhase.READY], "an import again: the volume, nothing downloaded");
  assert.equal(requests.length, before);
  assert.equal((await failed({ poolId: pool, volumeId: id, format: VolumeFormat.RAW, url: `${base}/a.qcow2.gz` })).code, Code.AlreadyExists);
});

test("an xz-compressed raw image into a raw volume; download progress; a redirect followed", async () => {
  const steps = await all({ poolId: pool, volumeId: uuid(), format: VolumeFormat.RAW, url: `${base}/b.raw.xz` });
  const last = steps[steps.length - 1]!;
  assert.equal(last.detectedFormat, "raw");
  assert.equal(readFileSync(last.volume!.path).equals(fixtures.get("/b.raw")!), true, "the volume holds the image's bytes");
  const big = await all({ poolId: pool, volumeId: uuid(), format: VolumeFormat.QCOW2, url: `${base}/b.raw` });
  const downloading = big.filter((s) => s.phase === ImportPhase.DOWNLOADING);
  assert.ok(downloading.length >= 3, `progress while downloading: ${downloading.map((s) => s.bytesDone).join(", ")}`);
  assert.ok(downloading.every((s) => s.bytesTotal === BigInt(10 * MIB)));
  assert.equal((await all({ poolId: pool, volumeId: uuid(), format: VolumeFormat.QCOW2, url: `${base}/moved` })).at(-1)?.detectedFormat, "qcow2", "redirects are followed");
});

test("a zstd-compressed qcow2 (told from its magic bytes, not its name) becomes a volume with its data; corrupt zstd data is refused", async () => {
  const steps = await all({ poolId: pool, volumeId: uuid(), format: VolumeFormat.QCOW2, url: `${base}/a.qcow2.zst` });
  const last = steps.at(-1)!;
  assert.equal(last.phase, ImportPhase.READY);
  assert.equal(last.detectedFormat, "qcow2");
  assert.match(execFileSync("qemu-io", ["-f", "qcow2", "-r", last.volume!.path, "-c", "read -P 0xab 0 1M"], { encoding: "utf8" }), /read 1048576\/1048576 bytes/);
  const before = poolFiles();
  const bad = await failed({ poolId: pool, volumeId: uuid(), format: VolumeFormat.QCOW2, url: `${base}/bad.zst` });
  assert.equal(bad.code, Code.FailedPrecondition);
  assert.match(bad.rawMessage, /zstd data is corrupt/);
  assert.deepEqual(poolFiles(), before, "no file left");
});

test("a clean qcow2 for a qcow2 volume is kept as it came; one with internal snapshots is converted, the snapshots dropped", async () => {
  const kept = (await all({ poolId: pool, volumeId: uuid(), format: VolumeFormat.QCOW2, url: `${base}/a.qcow2` })).at(-1)!;
  assert.equal(kept.phase, ImportPhase.READY);
  assert.ok(readFileSync(kept.volume!.path).equals(fixtures.get("/a.qcow2")!), "the volume's file is the downloaded file, byte for byte");
  const converted = (await all({ poolId: pool, volumeId: uuid(), format: VolumeFormat.QCOW2, url: `${base}/snap.qcow2` })).at(-1)!;
  assert.equal(converted.phase, ImportPhase.READY);
  assert.doesNotMatch(execFileSync("qemu-img", ["snapshot", "-l", converted.volume!.path], { encoding: "utf8" }), /before/, "converted: no internal snapshot came along");
  assert.match(execFileSync("qemu-io", ["-f", "qcow2", "-r", converted.volume!.path, "-c", "read -P 0xab 0 1M"], { encoding: "utf8" }), /read 1048576\/1048576 bytes/);
});

test("bad downloads end with a clear error and leave no file", async () => {
  const before = poolFiles();
  const cases: [string, Code, RegExp, string?][] = [
    [`${base}/missing`, Code.Unavailable, /HTTP 404/],
    ["http://127.0.0.1:1/x", Code.Unavailable, /ECONNREFUSED/],
    [`${base}/truncated`, Code.Unavailable, /ended early|truncated/],
    [`${base}/a.qcow2.gz`, Code.FailedPrecondition, /sha256 mismatch/, "0".repeat(64)],
    [`${base}/evil.qcow2`, Code.FailedPrecondition, /image refused: .*backing file/],
    [`${base}/huge.qcow2`, Code.ResourceExhausted, /virtual size/],
  ];
  for (const [url, code, message, sha256] of cases) {
    const e = await failed({ poolId: pool, volumeId: uuid(), format: VolumeFormat.QCOW2, url, sha256: sha256 ?? "" });
    assert.equal(e.code, code, `${url}: ${e.message}`);
    assert.match(e.message, message);
    assert.deepEqual(poolFiles(), before, `${url} left no file`);
  }
});

test("a client that goes away mid-download leaves no file and frees the volume id", async () => {
  const before = poolFiles();
  const id = uuid();
  const ac = new AbortController();
  const stream = c.importVolume({ poolId: pool, volumeId: id, format: VolumeFormat.QCOW2, url: `${base}/slow` }, { signal: ac.signal });
  for await (const p of stream) {
    if (p.phase === ImportPhase.DOWNLOADING && p.bytesDone > 0n) break;
  }
  ac.abort();
  await until(() => (poolFiles().join() === before.join() ? true : undefined), "the partial download removed", 10_000);
  const steps = await all({ poolId: pool, volumeId: id, format: VolumeFormat.QCOW2, url: `${base}/a.qcow2.gz` });
  assert.equal(steps.at(-1)?.phase, ImportPhase.READY, "the lock on the id was released");
});

test("malformed imports are INVALID_ARGUMENT with field paths, before any download", async () => {
  const before = requests.length;
  const e = await failed({ poolId: pool, volumeId: "nope", format: VolumeFormat.UNSPECIFIED, url: "file:///etc/shadow", sha256: "XYZ" });
  assert.equal(e.code, Code.InvalidArgument);
  assert.deepEqual(e.findDetails(BadRequestSchema).flatMap((d) => d.fieldViolations.map((v) => v.field)).sort(), ["format", "sha256", "url", "volume_id"]);
  const creds = await failed({ poolId: pool, volumeId: uuid(), format: VolumeFormat.RAW, url: "http://user:pw@127.0.0.1/x" });
  assert.match(creds.message, /credentials/);
  assert.equal(requests.length, before);
});

test("ReadVolume streams a volume's file as stored, in chunks of at most 1 MiB; a linked clone and an unknown volume are refused", async () => {
  const id = (await all({ poolId: pool, volumeId: uuid(), format: VolumeFormat.RAW, url: `${base}/b.raw` })).at(-1)!.volume!.volumeId;
  const chunks: Uint8Array[] = [];
  for await (const m of c.readVolume({ poolId: pool, volumeId: id })) chunks.push(m.data);
  assert.ok(chunks.length >= 10 && chunks.every((x) => x.length > 0 && x.length <= MIB), `chunk sizes: ${chunks.map((x) => x.length).join(",")}`);
  assert.ok(Buffer.concat(chunks).equals(readFileSync(join(poolDir, `${id}.raw`))), "the bytes of the file, in order");

  const base2 = (await all({ poolId: pool, volumeId: uuid(), format: VolumeFormat.QCOW2, url: `${base}/a.qcow2.gz` })).at(-1)!.volume!;
  const clone = await c.createVolume({ poolId: pool, volumeId: uuid(), format: VolumeFormat.QCOW2, sizeBytes: 0n, source: { volumeId: base2.volumeId, mode: CloneMode.LINKED } });
  const linked = await rejection((async () => {
    for await (const _ of c.readVolume({ poolId: pool, volumeId: clone.volumeId })) void _;
  })());
  assert.equal(linked.code, Code.FailedPrecondition);
  assert.match(linked.rawMessage, /linked clone/);
  const unknown = await rejection((async () => {
    for await (const _ of c.readVolume({ poolId: pool, volumeId: uuid() })) void _;
  })());
  assert.equal(unknown.code, Code.NotFound);
});
