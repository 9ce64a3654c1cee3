import assert from "node:assert/strict";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { ImageFormat, ImageSchema, ImageState, ImageStatusSchema } from "@quantix/api/gen/Quantixkvm/storage/v1/image_pb.js";
import { FakeClock } from "@quantix/testing";
import type { NodeImportProgress } from "../storage/node-storage.js";
import { detectedFormat, PROGRESS_WRITE_BYTES, ProgressThrottle, writeError, writeProgress, writeReady } from "./image-import.js";

const MIB = 1n << 20n;
const step = (phase: NodeImportProgress["phase"], bytesDone: bigint, extra: Partial<NodeImportProgress> = {}): NodeImportProgress => ({ phase, bytesDone, bytesTotal: 64n * MIB, sha256: "", detectedFormat: "", ...extra });

test("progress is written at a bounded rate: each phase change, then at most every second or 4 MiB", async () => {
  const clock = new FakeClock();
  const t = new ProgressThrottle(clock);
  assert.equal(t.due(step("downloading", 0n)), true, "the first step");
  assert.equal(t.due(step("downloading", 1n * MIB)), false);
  assert.equal(t.due(step("downloading", 3n * MIB)), false);
  assert.equal(t.due(step("downloading", PROGRESS_WRITE_BYTES)), true, "4 MiB more");
  assert.equal(t.due(step("downloading", PROGRESS_WRITE_BYTES + MIB)), false);
  await clock.advance(1000);
  assert.equal(t.due(step("downloading", PROGRESS_WRITE_BYTES + 2n * MIB)), true, "a second later");
  assert.equal(t.due(step("verifying", 64n * MIB)), true, "a new phase at once");
  assert.equal(t.due(step("converting", 64n * MIB)), true);
  // 64 MiB in 1 MiB steps within one second: at most 64/4 + 1 writes.
  const u = new ProgressThrottle(clock);
  let writes = 0;
  for (let i = 0n; i <= 64n; i++) if (u.due(step("downloading", i * MIB))) writes++;
  assert.ok(writes <= 17, `${writes} writes`);
});

test("the status tells the phase, the bytes and, when ready, what the node measured; an error keeps the reason", () => {
  const img = create(ImageSchema, { id: "i", generation: 1n, spec: { source: { expectedSha256: "ab".repeat(32) } }, status: create(ImageStatusSchema, { state: ImageState.QUEUED }) });
  writeProgress(img.status!, step("downloading", 8n * MIB), 1n, 0);
  assert.equal(img.status!.state, ImageState.IMPORTING);
  assert.equal(img.status!.importProgressPercent, 10);
  assert.equal(img.status!.conditions.find((c) => c.type === "Imported")?.reason, "Downloading");
  writeProgress(img.status!, step("verifying", 64n * MIB, { sha256: "ab".repeat(32) }), 1n, 0);
  assert.equal(img.status!.state, ImageState.CONVERTING);
  writeReady(img, step("ready", 64n * MIB, { sha256: "ab".repeat(32), detectedFormat: "vpc" }), { volumeId: "i", format: "qcow2", virtualSizeBytes: 10n * MIB, actualSizeBytes: MIB, backingVolumeId: "", path: "/p" }, { nodeId: "n", poolId: "p" }, 1n, 0);
  assert.equal(img.status!.state, ImageState.AVAILABLE);
  assert.equal(img.status!.detectedFormat, ImageFormat.VHD);
  assert.equal(img.status!.storedFormat, ImageFormat.QCOW2);
  assert.equal(img.status!.observedGeneration, 1n);
  assert.equal(img.status!.conditions.find((c) => c.type === "ChecksumVerified")?.reason, "Matched");
  assert.deepEqual(img.status!.copies.map((c) => [c.nodeId, c.poolId]), [["n", "p"]]);
  writeError(img.status!, "ImportUnavailable", "the image server answered HTTP 404", 2n, 0);
  assert.equal(img.status!.state, ImageState.ERROR);
  assert.equal(img.status!.errorMessage, "the image server answered HTTP 404");
  assert.equal(img.status!.conditions.find((c) => c.type === "Ready")?.reason, "ImportUnavailable");
  assert.equal(detectedFormat("qed"), ImageFormat.UNSPECIFIED);
});
