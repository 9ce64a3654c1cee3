import assert from "node:assert/strict";
import { test } from "node:test";
import { create, fromBinary, toBinary, type DescMessage } from "@bufbuild/protobuf";
import { GetVMRequestSchema, ListVMsRequestSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { ImportImageRequestSchema } from "@quantix/api/gen/Quantixkvm/storage/v1/image_service_pb.js";
import { planDecode } from "@quantix/core";
import { decodeMessage } from "./grpc-wire.js";

/** What fromBinary makes of `bytes`: its message, or the fact that it throws. */
function reference(schema: DescMessage, bytes: Uint8Array): { message: unknown } | "throws" {
  try {
    return { message: fromBinary(schema, bytes) };
  } catch {
    return "throws";
  }
}

/** decodeMessage (core's plan decoder, fromBinary where it declines) gives what fromBinary gives, or throws where it throws. */
function assertSameAsFromBinary(schema: DescMessage, bytes: Uint8Array): void {
  const want = reference(schema, bytes);
  if (want === "throws") {
    assert.throws(() => decodeMessage(schema, bytes), `${schema.typeName} ${Buffer.from(bytes).toString("hex")}`);
    return;
  }
  assert.deepStrictEqual(decodeMessage(schema, bytes), want.message, `${schema.typeName} ${Buffer.from(bytes).toString("hex")}`);
}

/** A small deterministic generator (mulberry32), so a failure names bytes that come back. */
function random(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test("requests are decoded without fromBinary, to the message fromBinary makes: strings, numbers, maps, oneofs, non-ASCII", () => {
  const read: [DescMessage, Uint8Array][] = [
    [GetVMRequestSchema, toBinary(GetVMRequestSchema, create(GetVMRequestSchema, { id: "11111111-1111-1111-1111-111111111111" }))],
    [GetVMRequestSchema, new Uint8Array(0)],
    [ListVMsRequestSchema, toBinary(ListVMsRequestSchema, create(ListVMsRequestSchema, { projectId: "p1", nodeId: "n", pageToken: "t", orderBy: "name desc" }))],
    [ListVMsRequestSchema, toBinary(ListVMsRequestSchema, create(ListVMsRequestSchema, { projectId: "p", pageSize: 5 }))],
    [ListVMsRequestSchema, toBinary(ListVMsRequestSchema, create(ListVMsRequestSchema, { labels: { a: "b" } }))],
    [ImportImageRequestSchema, toBinary(ImportImageRequestSchema, create(ImportImageRequestSchema, { target: { case: "imageId", value: "img" } }))],
    [GetVMRequestSchema, toBinary(GetVMRequestSchema, create(GetVMRequestSchema, { id: "vm-é" }))],
  ];
  for (const [schema, bytes] of read) {
    const what = `${schema.typeName} ${Buffer.from(bytes).toString("hex")}`;
    const plan = planDecode(schema, bytes);
    assert.ok(plan, `${what}: decoded by the plan`);
    assert.deepStrictEqual(plan, fromBinary(schema, bytes), what);
    assertSameAsFromBinary(schema, bytes);
  }
});

test("what the plan declines goes to fromBinary: unknown fields, other wire types, invalid UTF-8, cut input", () => {
  const declined: [DescMessage, Uint8Array][] = [
    [GetVMRequestSchema, Uint8Array.from([0x0a, 0x02, 0xff, 0xfe])],
    [GetVMRequestSchema, Uint8Array.from([0x12, 0x01, 0x61])], // field 2, unknown
    [GetVMRequestSchema, Uint8Array.from([0x0a, 0x05, 0x61])], // cut string
    [GetVMRequestSchema, Uint8Array.from([0x0a])], // cut length
    [GetVMRequestSchema, Uint8Array.from([0x08, 0x01])], // field 1 as a varint
  ];
  for (const [schema, bytes] of declined) {
    assert.equal(planDecode(schema, bytes), undefined, `${schema.typeName} ${Buffer.from(bytes).toString("hex")}`);
    assertSameAsFromBinary(schema, bytes);
  }
});

test("decodeMessage gives what fromBinary gives, or fails where it fails, on valid, repeated, mutated and cut encodings", () => {
  const next = random(20261206);
  const text = () => {
    const pool = ["", "a", "vm-1", "11111111-1111-1111-1111-111111111111", "x".repeat(200), "é", "\u0000", "p_q-r"];
    return pool[Math.floor(next() * pool.length)]!;
  };
  const samples: [DescMessage, Uint8Array][] = [];
  for (let i = 0; i < 300; i++) {
    samples.push([GetVMRequestSchema, toBinary(GetVMRequestSchema, create(GetVMRequestSchema, { id: text() }))]);
    samples.push([ListVMsRequestSchema, toBinary(ListVMsRequestSchema, create(ListVMsRequestSchema, { projectId: text(), nodeId: text(), pageToken: text(), orderBy: text(), pageSize: next() < 0.3 ? 7 : 0 }))]);
    samples.push([ImportImageRequestSchema, toBinary(ImportImageRequestSchema, create(ImportImageRequestSchema, next() < 0.5 ? { target: { case: "imageId", value: text() } } : {}))]);
  }
  for (const [schema, bytes] of samples) {
    assertSameAsFromBinary(schema, bytes);
    // The same field twice (the later wins), a cut, and one byte changed.
    const twice = Buffer.concat([bytes, bytes]);
    assertSameAsFromBinary(schema, twice);
    if (bytes.length > 0) {
      assertSameAsFromBinary(schema, bytes.subarray(0, Math.floor(next() * bytes.length)));
      const changed = Uint8Array.from(bytes);
      changed[Math.floor(next() * changed.length)] = Math.floor(next() * 256);
      assertSameAsFromBinary(schema, changed);
    }
  }
});

test("a decoded request is the caller's own: decoding the same bytes again gives a new message", () => {
  const bytes = toBinary(GetVMRequestSchema, create(GetVMRequestSchema, { id: "vm-1" }));
  const a = decodeMessage(GetVMRequestSchema, bytes);
  a.id = "changed";
  assert.equal(decodeMessage(GetVMRequestSchema, bytes).id, "vm-1");
});
