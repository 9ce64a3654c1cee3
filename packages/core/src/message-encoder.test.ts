import assert from "node:assert/strict";
import { test } from "node:test";
import { clearField, clone, create, fromBinary, toBinary, type DescMessage } from "@bufbuild/protobuf";
import { BytesValueSchema, FileDescriptorProtoSchema, StructSchema, timestampFromMs } from "@bufbuild/protobuf/wkt";
import { NodeSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VirtualMachineSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { checkMessage, encodeChecked, encodeFrozen, MessageCheckError } from "./message-encoder.js";
import { deepFreeze } from "./freeze.js";
import { fixtureNode } from "./message-fixtures.js";
import { apiMessages, randomMessage, rng } from "./testing/random-messages.js";

/** What the store did before: protobuf-es's checked clone, then toBinary (with `omit` cleared). */
function reference(desc: DescMessage, m: object, omit?: string): Uint8Array {
  const c = clone(desc, m as never);
  const f = desc.fields.find((x) => x.localName === omit);
  if (f) clearField(c, f);
  return toBinary(desc, c);
}

test("every message type of the API: the same bytes as protobuf-es's clone and toBinary, 40 random messages each", async () => {
  const all = await apiMessages();
  assert.ok(all.length > 300, `found only ${all.length} message types`);
  const r = rng(19);
  let compared = 0;
  for (const desc of all) {
    for (let i = 0; i < 40; i++) {
      const m = randomMessage(r, desc);
      const ours = encodeChecked(desc, m);
      assert.deepEqual(ours, reference(desc, m), `${desc.typeName} #${i}`);
      // The bytes read back as the message (as protobuf-es reads them).
      assert.deepEqual(toBinary(desc, fromBinary(desc, ours)), ours);
      compared++;
    }
  }
  assert.equal(compared, all.length * 40);
});

test("a field left out (the store's resource_version) is written as protobuf-es writes the message with it cleared", () => {
  const r = rng(7);
  for (let i = 0; i < 200; i++) {
    const vm = randomMessage(r, VirtualMachineSchema) as { resourceVersion: bigint };
    vm.resourceVersion = BigInt(i * 1000);
    assert.deepEqual(encodeChecked(VirtualMachineSchema, vm, "resourceVersion"), reference(VirtualMachineSchema, vm, "resourceVersion"));
  }
});

test("frozen stored messages, unknown fields and proto2 defaults are written as toBinary writes them", () => {
  const node = deepFreeze(fixtureNode());
  assert.deepEqual(encodeChecked(NodeSchema, node), toBinary(NodeSchema, node));
  // Unknown fields (a newer writer's) are kept, after the known ones.
  const withUnknown = fromBinary(NodeSchema, new Uint8Array([...toBinary(NodeSchema, fixtureNode()), 0xf8, 0x3e, 0x05, 0xfa, 0x3e, 0x02, 0x68, 0x69]));
  assert.equal(withUnknown.$unknown?.length, 2);
  assert.deepEqual(encodeChecked(NodeSchema, withUnknown), toBinary(NodeSchema, withUnknown));
  // proto2 (explicit presence, defaults on the prototype): only the fields set are written.
  const fd = create(FileDescriptorProtoSchema, { name: "a.proto", messageType: [{ name: "M", field: [{ name: "x", number: 1 }] }] });
  assert.deepEqual(encodeChecked(FileDescriptorProtoSchema, fd), toBinary(FileDescriptorProtoSchema, fd));
  // Types protobuf-es unboxes (wrappers, Struct) go through protobuf-es itself.
  const struct = create(StructSchema, { fields: { a: { kind: { case: "stringValue", value: "x" } } } });
  assert.deepEqual(encodeChecked(StructSchema, struct), toBinary(StructSchema, struct));
  assert.deepEqual(encodeChecked(BytesValueSchema, create(BytesValueSchema, { value: new Uint8Array([1]) })), new Uint8Array([10, 1, 1]));
});

test("a value that is not its field's type is refused, naming the field, as protobuf-es's clone refuses it", () => {
  const cases: [string, (vm: Record<string, any>) => void][] = [
    ["compute.v1.VirtualMachine.name", (vm) => (vm["name"] = 5)],
    ["compute.v1.VirtualMachine.name", (vm) => (vm["name"] = "lone \ud800 surrogate")],
    ["compute.v1.VirtualMachine.name", (vm) => (vm["name"] = "reversed \udc00\ud800 pair")],
    ["compute.v1.VirtualMachine.generation", (vm) => (vm["generation"] = "12x")],
    ["compute.v1.VirtualMachine.generation", (vm) => (vm["generation"] = 1n << 64n)],
    ["compute.v1.VirtualMachine.labels", (vm) => (vm["labels"] = { a: 1 })],
    ["compute.v1.VmSpec.cpu", (vm) => (vm["spec"]["cpu"] = "two")],
    ["compute.v1.CpuConfig.cores", (vm) => (vm["spec"]["cpu"]["cores"] = 1.5)],
    ["compute.v1.CpuConfig.cores", (vm) => (vm["spec"]["cpu"]["cores"] = 2 ** 31)],
    ["compute.v1.VmSpec.desired_power_state", (vm) => (vm["spec"]["desiredPowerState"] = 2 ** 31)],
    ["compute.v1.VmStatus.conditions", (vm) => (vm["status"]["conditions"] = "none")],
  ];
  for (const [field, spoil] of cases) {
    const vm = create(VirtualMachineSchema, { name: "a", generation: 1n, spec: { cpu: { cores: 2 } }, status: {} }) as unknown as Record<string, any>;
    spoil(vm);
    assert.throws(() => encodeChecked(VirtualMachineSchema, vm), (err: unknown) => err instanceof MessageCheckError && err.message.includes(field), field);
    // checkMessage (the memory store's check of what it stores) refuses it the same way.
    assert.throws(() => checkMessage(VirtualMachineSchema, vm), (err: unknown) => err instanceof MessageCheckError && err.message.includes(field), field);
    // protobuf-es refuses it too (its checked clone, or toBinary after it).
    assert.throws(() => reference(VirtualMachineSchema, vm), Error, `protobuf-es accepts ${field}`);
  }
  // A refused message leaves nothing behind: the next one is written whole.
  const good = create(VirtualMachineSchema, { name: "ok", generation: 2n, spec: { cpu: { cores: 2 } } });
  assert.deepEqual(encodeChecked(VirtualMachineSchema, good), reference(VirtualMachineSchema, good));
  checkMessage(VirtualMachineSchema, good);
  checkMessage(StructSchema, create(StructSchema, { fields: { a: { kind: { case: "numberValue", value: 1 } } } }));
  // A message of another type where one is expected.
  const vm = create(VirtualMachineSchema, { createdAt: timestampFromMs(0) }) as unknown as Record<string, any>;
  vm["createdAt"] = create(NodeSchema, {});
  assert.throws(() => encodeChecked(VirtualMachineSchema, vm), /expected google\.protobuf\.Timestamp, got Quantixkvm\.compute\.v1\.Node/);
});

test("a checked message is not changed by encoding it", () => {
  const vm = create(VirtualMachineSchema, { id: "v", name: "n", resourceVersion: 7n, spec: { cpu: { cores: 1 } } });
  const before = clone(VirtualMachineSchema, vm);
  encodeChecked(VirtualMachineSchema, vm, "resourceVersion");
  assert.deepEqual(vm, before);
});

test("checkMessage accepts what encodeChecked encodes: random messages of every type", async () => {
  const r = rng(23);
  for (const desc of await apiMessages()) for (let i = 0; i < 5; i++) checkMessage(desc, randomMessage(r, desc));
});

test("encodeFrozen: a frozen message's whole bytes (resource_version too), made once and shared", () => {
  const vm = deepFreeze(create(VirtualMachineSchema, { id: "v", name: "n", resourceVersion: 9n, spec: { cpu: { cores: 1 } } }));
  const bytes = encodeFrozen(VirtualMachineSchema, vm);
  assert.deepEqual(bytes, toBinary(VirtualMachineSchema, vm));
  assert.equal(fromBinary(VirtualMachineSchema, bytes).resourceVersion, 9n);
  assert.equal(encodeFrozen(VirtualMachineSchema, vm), bytes, "the second call returns the same bytes, not a new encoding");
  // Another frozen object with the same fields has its own entry (objects, not values, are the keys).
  const twin = deepFreeze(clone(VirtualMachineSchema, vm));
  assert.notEqual(encodeFrozen(VirtualMachineSchema, twin), bytes);
  assert.deepEqual(encodeFrozen(VirtualMachineSchema, twin), bytes);
});
