import assert from "node:assert/strict";
import { test } from "node:test";
import { create, createFileRegistry, fromBinary, toBinary, type DescMessage, type MessageInitShape } from "@bufbuild/protobuf";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import { FieldDescriptorProtoSchema, FileDescriptorProtoSchema, StructSchema, timestampFromMs, type FieldDescriptorProto } from "@bufbuild/protobuf/wkt";
import { VirtualMachineSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { decodeBinary, planDecode } from "./message-decoder.js";
import { apiMessages, randomMessage, rng } from "./testing/random-messages.js";

/**
 * A proto3 type with what our API does not use but the decoder reads: maps of messages,
 * int64, bytes and enums; packed doubles and sint64s; every fixed-width scalar; an
 * optional field; a oneof of a message and a string; itself as a field (for depth).
 */
function kitchen(): DescMessage {
  const T = { DOUBLE: 1, FLOAT: 2, INT64: 3, UINT64: 4, INT32: 5, FIXED64: 6, FIXED32: 7, BOOL: 8, STRING: 9, MESSAGE: 11, BYTES: 12, UINT32: 13, ENUM: 14, SFIXED32: 15, SFIXED64: 16, SINT32: 17, SINT64: 18 } as const;
  const OPTIONAL = 1;
  const REPEATED = 3;
  const field = (name: string, number: number, type: number, more: MessageInitShape<typeof FieldDescriptorProtoSchema> = {}): FieldDescriptorProto =>
    create(FieldDescriptorProtoSchema, { name, number, type, label: OPTIONAL, jsonName: name, ...more });
  const entry = (name: string, value: FieldDescriptorProto) => ({ name, field: [field("key", 1, T.STRING), value], options: { mapEntry: true } });
  const file = create(FileDescriptorProtoSchema, {
    name: "kitchen.proto",
    package: "t",
    syntax: "proto3",
    enumType: [{ name: "Color", value: [{ name: "RED", number: 0 }, { name: "GREEN", number: 1 }] }],
    messageType: [
      { name: "Item", field: [field("name", 1, T.STRING), field("n", 2, T.INT32)] },
      {
        name: "Kitchen",
        field: [
          field("items", 1, T.MESSAGE, { label: REPEATED, typeName: ".t.Kitchen.ItemsEntry" }),
          field("counts", 2, T.MESSAGE, { label: REPEATED, typeName: ".t.Kitchen.CountsEntry" }),
          field("blobs", 3, T.MESSAGE, { label: REPEATED, typeName: ".t.Kitchen.BlobsEntry" }),
          field("colors", 4, T.MESSAGE, { label: REPEATED, typeName: ".t.Kitchen.ColorsEntry" }),
          field("ds", 5, T.DOUBLE, { label: REPEATED }),
          field("s32", 6, T.SINT32),
          field("s64", 7, T.SINT64),
          field("f32", 8, T.FIXED32),
          field("f64", 9, T.FIXED64),
          field("sf32", 10, T.SFIXED32),
          field("sf64", 11, T.SFIXED64),
          field("fl", 12, T.FLOAT),
          field("u64", 13, T.UINT64),
          field("u32", 14, T.UINT32),
          field("opt", 15, T.STRING, { proto3Optional: true, oneofIndex: 0 }),
          field("child", 16, T.MESSAGE, { typeName: ".t.Kitchen" }),
          field("ss", 17, T.SINT64, { label: REPEATED }),
          field("b", 18, T.BOOL),
          field("item", 19, T.MESSAGE, { typeName: ".t.Item", oneofIndex: 1 }),
          field("word", 20, T.STRING, { oneofIndex: 1 }),
          field("text", 21, T.STRING),
          field("i64", 22, T.INT64),
          field("color", 23, T.ENUM, { typeName: ".t.Color" }),
        ],
        oneofDecl: [{ name: "_opt" }, { name: "pick" }],
        nestedType: [
          entry("ItemsEntry", field("value", 2, T.MESSAGE, { typeName: ".t.Item" })),
          entry("CountsEntry", field("value", 2, T.INT64)),
          entry("BlobsEntry", field("value", 2, T.BYTES)),
          entry("ColorsEntry", field("value", 2, T.ENUM, { typeName: ".t.Color" })),
        ],
      },
    ],
  });
  return createFileRegistry(file, () => undefined).getMessage("t.Kitchen")!;
}

const Kitchen = kitchen();

/** The property every test checks: what the plan reads is what fromBinary reads; what it does not read, fromBinary reads or refuses. */
function agrees(desc: DescMessage, bytes: Uint8Array, what: string): "plan" | "fromBinary" | "refused" {
  const ours = planDecode(desc, bytes);
  let reference: unknown;
  try {
    reference = fromBinary(desc, bytes);
  } catch (e) {
    assert.equal(ours, undefined, `${what}: the plan read bytes fromBinary refuses (${String(e)})`);
    assert.throws(() => decodeBinary(desc, bytes), { message: (e as Error).message });
    return "refused";
  }
  assert.deepStrictEqual(decodeBinary(desc, bytes), reference, what);
  if (ours === undefined) return "fromBinary";
  assert.deepStrictEqual(ours, reference, what);
  return "plan";
}

test("every message type of the API: the plan reads what fromBinary reads, 40 random messages each", async () => {
  const all = await apiMessages();
  assert.ok(all.length > 300, `found only ${all.length} message types`);
  const r = rng(41);
  const byPlan = new Set<string>();
  for (const desc of [...all, Kitchen]) {
    for (let i = 0; i < 40; i++) {
      const bytes = toBinary(desc, randomMessage(r, desc) as never);
      if (agrees(desc, bytes, `${desc.typeName} #${i}`) === "plan") byPlan.add(desc.typeName);
    }
  }
  // The plan reads every type but those holding wrappers, Struct or proto2 (reflection, descriptors).
  const left = all.filter((d) => !byPlan.has(d.typeName)).map((d) => d.typeName);
  assert.ok(left.length < all.length / 20, `the plan left ${left.length} types to fromBinary: ${left.join(", ")}`);
  for (const t of ["Quantixkvm.compute.v1.VirtualMachine", "Quantixkvm.compute.v1.CreateVMRequest", "vmm.v1.BootVmResponse", "vmm.v1.VmEvent", "t.Kitchen"]) assert.ok(byPlan.has(t), `${t} is read by fromBinary`);
});

test("damaged bytes: whatever the plan reads, fromBinary reads the same; the rest is fromBinary's to read or refuse", async () => {
  const r = rng(43);
  const types = [Kitchen, VirtualMachineSchema, ...(await apiMessages()).filter((_, i) => i % 9 === 0)];
  const seen = { plan: 0, fromBinary: 0, refused: 0 };
  for (const desc of types) {
    for (let i = 0; i < 6; i++) {
      const bytes = toBinary(desc, randomMessage(r, desc) as never);
      // Cut at every length.
      for (let n = 0; n < bytes.length; n++) seen[agrees(desc, bytes.subarray(0, n), `${desc.typeName} cut at ${n}`)]++;
      // A byte changed, inserted or removed.
      for (let k = 0; k < 30 && bytes.length > 0; k++) {
        const at = Math.floor(r() * bytes.length);
        const value = Math.floor(r() * 256);
        const changed = bytes.slice();
        changed[at] = value;
        const inserted = new Uint8Array([...bytes.subarray(0, at), value, ...bytes.subarray(at)]);
        const removed = new Uint8Array([...bytes.subarray(0, at), ...bytes.subarray(at + 1)]);
        seen[agrees(desc, changed, `${desc.typeName} byte ${at} = ${value}`)]++;
        seen[agrees(desc, inserted, `${desc.typeName} ${value} inserted at ${at}`)]++;
        seen[agrees(desc, removed, `${desc.typeName} byte ${at} removed`)]++;
      }
    }
  }
  // Each way was taken: the test is not passing on the fallback alone.
  assert.ok(seen.plan > 1000 && seen.fromBinary > 100 && seen.refused > 100, JSON.stringify(seen));
});

test("what fromBinary does with repeated and out-of-order fields, the plan does", () => {
  const w = () => new BinaryWriter();
  const item = (name: string, n: number) => w().tag(1, 2).string(name).tag(2, 0).int32(n).finish();
  const cases: [string, Uint8Array][] = [
    // A message field twice: the second merges into the first.
    ["child twice", w().tag(16, 2).bytes(w().tag(21, 2).string("a").finish()).tag(16, 2).bytes(w().tag(18, 0).bool(true).finish()).finish()],
    // A oneof's message member twice merges; another member replaces it.
    ["oneof member twice", w().tag(19, 2).bytes(w().tag(1, 2).string("x").finish()).tag(19, 2).bytes(w().tag(2, 0).int32(2).finish()).finish()],
    ["oneof member replaced", w().tag(19, 2).bytes(item("x", 1)).tag(20, 2).string("word").finish()],
    ["oneof string then message", w().tag(20, 2).string("word").tag(19, 2).bytes(item("y", 3)).finish()],
    // Map entries: value before key, no key, no value, a key twice (the last wins).
    ["map value before key", w().tag(1, 2).bytes(w().tag(2, 2).bytes(item("v", 1)).tag(1, 2).string("k").finish()).finish()],
    ["map entry without key", w().tag(2, 2).bytes(w().tag(2, 0).int64(7n).finish()).finish()],
    ["map entries without value", w().tag(1, 2).bytes(w().tag(1, 2).string("i").finish()).tag(2, 2).bytes(w().tag(1, 2).string("c").finish()).tag(3, 2).bytes(w().tag(1, 2).string("b").finish()).tag(4, 2).bytes(w().tag(1, 2).string("e").finish()).finish()],
    ["map key twice", w().tag(2, 2).bytes(w().tag(1, 2).string("k").tag(2, 0).int64(1n).finish()).tag(2, 2).bytes(w().tag(1, 2).string("k").tag(2, 0).int64(-2n).finish()).finish()],
    ["empty map entry", w().tag(3, 2).bytes(new Uint8Array(0)).finish()],
    // Packed and unpacked items of one list, in one message.
    ["packed and unpacked", w().tag(5, 2).fork().double(1.5).double(-0).double(Number.NaN).join().tag(5, 1).double(2.5).tag(17, 0).sint64(-3n).tag(17, 2).fork().sint64(4n).sint64(-(1n << 63n)).join().finish()],
    // Scalars written the long way round: int32 -5 in ten bytes, uint32 in six, a bool of 2 and one set only in the high bits.
    ["overlong varints", w().tag(19, 2).bytes(w().tag(2, 0).int32(-5).finish()).tag(14, 0).raw(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x8f, 0x00])).tag(18, 0).raw(new Uint8Array([0x80, 0x80, 0x80, 0x80, 0x80, 0x01])).finish()],
    ["bool of two", w().tag(18, 0).uint32(2).finish()],
    ["the last scalar wins", w().tag(21, 2).string("first").tag(21, 2).string("second").tag(22, 0).int64(-1n).tag(22, 0).int64(5n).finish()],
    ["every fixed width", w().tag(8, 5).fixed32(4294967295).tag(9, 1).fixed64((1n << 64n) - 1n).tag(10, 5).sfixed32(-2).tag(11, 1).sfixed64(-(1n << 63n)).tag(12, 5).float(-3.25).tag(13, 0).uint64((1n << 64n) - 1n).tag(6, 0).sint32(-2147483648).tag(7, 0).sint64((1n << 63n) - 1n).finish()],
    ["an optional field set to its zero", w().tag(15, 2).string("").finish()],
    ["an open enum's unknown value", w().tag(23, 0).int32(99).tag(4, 2).bytes(w().tag(1, 2).string("x").tag(2, 0).int32(-7).finish()).finish()],
    ["strings past 16 bytes, and not ASCII", w().tag(21, 2).string("é".repeat(20) + "x".repeat(40)).tag(20, 2).string("日本語").finish()],
    // TextDecoder (fromBinary's) drops a leading byte order mark; a U+FFFD written is kept.
    ["a leading BOM, long", w().tag(21, 2).string("\ufeff" + "x".repeat(30)).finish()],
    ["a leading BOM, short", w().tag(21, 2).string("\ufeffab").finish()],
    ["a BOM inside", w().tag(21, 2).string("x".repeat(30) + "\ufeff").finish()],
    ["U+FFFD written", w().tag(21, 2).string("\ufffd" + "y".repeat(30)).tag(20, 2).string("\ufffd").finish()],
  ];
  for (const [what, bytes] of cases) assert.equal(agrees(Kitchen, bytes, what), "plan", what);
});

test("what the plan leaves to fromBinary comes back as fromBinary reads it, or with its error", () => {
  const w = () => new BinaryWriter();
  const leaves: [string, DescMessage, Uint8Array][] = [
    ["an unknown field (kept in $unknown)", Kitchen, w().tag(21, 2).string("a").tag(99, 0).uint32(1).finish()],
    ["a field in another wire type (fromBinary reads it as its own)", Kitchen, w().tag(6, 2).uint32(4).finish()],
    ["a map key in another wire type", Kitchen, w().tag(2, 2).bytes(w().tag(1, 0).raw(new Uint8Array([0x01, 0x6b])).tag(2, 0).int64(1n).finish()).finish()],
    ["a map key __proto__", Kitchen, w().tag(2, 2).bytes(w().tag(1, 2).string("__proto__").tag(2, 0).int64(1n).finish()).finish()],
    ["a proto2 type (defaults on a prototype)", FileDescriptorProtoSchema, toBinary(FileDescriptorProtoSchema, create(FileDescriptorProtoSchema, { name: "x.proto", syntax: "proto2" }))],
    ["Struct", StructSchema, toBinary(StructSchema, create(StructSchema, { fields: { a: { kind: { case: "numberValue", value: 1 } } } }))],
  ];
  for (const [what, desc, bytes] of leaves) {
    assert.equal(planDecode(desc, bytes), undefined, what);
    assert.equal(agrees(desc, bytes, what), "fromBinary", what);
  }
  const unknown = decodeBinary(Kitchen, leaves[0]![2]) as { $unknown?: unknown[] };
  assert.equal(unknown.$unknown?.length, 1);

  const refused: [string, Uint8Array][] = [
    ["invalid UTF-8 in a string", w().tag(21, 2).bytes(new Uint8Array([0x61, 0xff, 0xfe])).finish()],
    ["a length past the end", w().tag(21, 2).raw(new Uint8Array([0x05, 0x61])).finish()],
    ["a varint of eleven bytes", w().tag(22, 0).raw(new Uint8Array([...Array(10).fill(0xff), 0x01])).finish()],
    ["field number 0", new Uint8Array([0x00, 0x01])],
    ["a tag in six bytes", new Uint8Array([0xaa, 0x81, 0x80, 0x80, 0x80, 0x00, 0x01, 0x61])],
    ["a map entry with a third field", w().tag(1, 2).bytes(w().tag(1, 2).string("k").tag(3, 0).uint32(1).finish()).finish()],
  ];
  for (const [what, bytes] of refused) assert.equal(agrees(Kitchen, bytes, what), "refused", what);

  // Nested past fromBinary's limit of 100: its error, not ours.
  let deep = w().tag(21, 2).string("bottom").finish();
  for (let i = 0; i < 120; i++) deep = w().tag(16, 2).bytes(deep).finish();
  assert.throws(() => decodeBinary(Kitchen, deep), /maximum recursion depth/);
});

test("bytes come back as fromBinary returns them: views of the input, a Buffer's as Buffers", () => {
  const vm = create(VirtualMachineSchema, { id: "vm-1", name: "web", labels: { a: "b" }, createdAt: timestampFromMs(1_700_000_000_000) });
  const blob = toBinary(Kitchen, create(Kitchen, { blobs: { k: new Uint8Array([1, 2, 3]) } } as never));
  for (const bytes of [Buffer.from(blob), blob]) {
    assert.equal(agrees(Kitchen, bytes, "blob"), "plan");
    const value = (planDecode(Kitchen, bytes) as { blobs: Record<string, Uint8Array> }).blobs["k"]!;
    assert.equal(value.buffer, bytes.buffer);
    assert.equal(Buffer.isBuffer(value), Buffer.isBuffer(bytes));
  }
  assert.equal(agrees(VirtualMachineSchema, Buffer.from(toBinary(VirtualMachineSchema, vm)), "a VM from a Buffer"), "plan");
});

test("each decoded message has containers of its own", () => {
  const bytes = toBinary(Kitchen, create(Kitchen, { ds: [1], items: { a: {} } } as never));
  const a = planDecode(Kitchen, bytes) as { ds: number[]; items: Record<string, object>; counts: Record<string, bigint> };
  const b = planDecode(Kitchen, bytes) as typeof a;
  a.ds.push(2);
  a.counts["x"] = 1n;
  assert.deepEqual(b.ds, [1]);
  assert.deepEqual(b.counts, {});
  const empty = planDecode(Kitchen, new Uint8Array(0)) as { ds: number[]; pick: object };
  assert.notEqual(empty.ds, a.ds);
  assert.deepStrictEqual(empty.pick, { case: undefined });
});
