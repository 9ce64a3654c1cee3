import assert from "node:assert/strict";
import { test } from "node:test";
import { clone, create, equals, isFieldSet } from "@bufbuild/protobuf";
import { BytesValueSchema, FileDescriptorProtoSchema, StructSchema } from "@bufbuild/protobuf/wkt";
import { NodeSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { copyMessage } from "./copy-message.js";
import { deepFreeze } from "./freeze.js";
import { fixtureNode } from "./message-fixtures.js";

const node = fixtureNode;

test("a copy equals protobuf-es's clone, frozen source or not, and shares nothing with it", () => {
  const src = deepFreeze(node());
  const copy = copyMessage(src);
  assert.ok(equals(NodeSchema, copy, clone(NodeSchema, src)));
  assert.deepEqual(copy, clone(NodeSchema, src));
  assert.ok(!Object.isFrozen(copy) && !Object.isFrozen(copy.status) && !Object.isFrozen(copy.status!.vmIds));
  copy.status!.vmIds.push("d");
  copy.labels["rack"] = "r2";
  copy.spec!.cpu!.features[0] = "svm";
  assert.deepEqual(src.status!.vmIds, ["a", "b", "c"]);
  assert.equal(src.labels["rack"], "r1");
  assert.equal(src.spec!.cpu!.features[0], "vmx");
});

test("oneofs, bytes and explicit presence (proto2 defaults on the prototype) copy as clone copies them", () => {
  const struct = create(StructSchema, { fields: { a: { kind: { case: "stringValue", value: "x" } }, b: { kind: { case: "listValue", value: { values: [{ kind: { case: "numberValue", value: 1 } }] } } } } });
  assert.ok(equals(StructSchema, copyMessage(struct), struct));
  const bytes = create(BytesValueSchema, { value: new Uint8Array([1, 2, 3]) });
  const b = copyMessage(bytes);
  b.value[0] = 9;
  assert.deepEqual([...bytes.value], [1, 2, 3]);
  // A Buffer (whose slice() is a view, not a copy) is copied too: the memory store copies what callers write.
  const buffer = Buffer.from([4, 5, 6]);
  const fromBuffer = copyMessage(create(BytesValueSchema, { value: buffer }));
  buffer[0] = 9;
  assert.deepEqual([...fromBuffer.value], [4, 5, 6]);
  const fd = create(FileDescriptorProtoSchema, { name: "a.proto" });
  const f = copyMessage(fd);
  assert.ok(equals(FileDescriptorProtoSchema, f, fd));
  assert.equal(isFieldSet(f, FileDescriptorProtoSchema.field.name), true);
  assert.equal(isFieldSet(f, FileDescriptorProtoSchema.field.package), false);
  assert.equal(f.package, "");
});
