import assert from "node:assert/strict";
import { test } from "node:test";
import { create, equals, fromBinary, toBinary } from "@bufbuild/protobuf";
import { EventType } from "@quantix/api/gen/Quantixkvm/common/v1/common_pb.js";
import { VirtualMachineSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { ListVMsResponseSchema, VmUpdateSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { deepFreeze } from "@quantix/core";
import { encodeMessage } from "./encode-cache.js";

const vm = (name: string) =>
  deepFreeze(create(VirtualMachineSchema, { id: `id-${name}`, name, labels: { a: "b" }, spec: { cpu: { cores: 2 }, memory: { sizeMib: 1024n }, disks: [{ id: "root", sizeGib: 10n }] }, resourceVersion: 42n }));

test("a frozen message is encoded once and its bytes are reused", () => {
  const m = vm("one");
  const a = encodeMessage(VirtualMachineSchema, m);
  assert.equal(encodeMessage(VirtualMachineSchema, m), a, "the same bytes object");
  assert.deepEqual(a, toBinary(VirtualMachineSchema, m));
});

test("a wrapper around frozen messages encodes to the same message as toBinary", () => {
  const update = create(VmUpdateSchema, { type: EventType.MODIFIED, vm: vm("two"), resourceVersion: 7n });
  const decoded = fromBinary(VmUpdateSchema, encodeMessage(VmUpdateSchema, update));
  assert.ok(equals(VmUpdateSchema, decoded, fromBinary(VmUpdateSchema, toBinary(VmUpdateSchema, update))));
  const list = create(ListVMsResponseSchema, { vms: [vm("x"), vm("y"), vm("z")], totalCount: 3, nextPageToken: "t", resourceVersion: 9n });
  const back = fromBinary(ListVMsResponseSchema, encodeMessage(ListVMsResponseSchema, list));
  assert.deepEqual(back.vms.map((v) => v.name), ["x", "y", "z"]);
  assert.ok(equals(ListVMsResponseSchema, back, fromBinary(ListVMsResponseSchema, toBinary(ListVMsResponseSchema, list))));
});

test("messages that are not frozen are encoded as usual", () => {
  const m = create(VirtualMachineSchema, { id: "mutable", name: "m" });
  const first = encodeMessage(VirtualMachineSchema, m);
  m.name = "changed";
  assert.equal(fromBinary(VirtualMachineSchema, encodeMessage(VirtualMachineSchema, m)).name, "changed");
  assert.notEqual(first, encodeMessage(VirtualMachineSchema, m));
});
