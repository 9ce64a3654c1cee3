import { clearField, clone, create, equals, fromBinary, toBinary, type DescMessage } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { NodeSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { CreateVMRequestSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";
import { BootVmResponseSchema, VmState } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { PowerState, VirtualMachineSchema, VmStatus_State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { decodeBinary, encodeChecked } from "@quantix/core";
import { median, nowMs } from "./stats.js";

/** One stored object's encode, ours (encodeChecked) against protobuf-es's checked clone and toBinary, in µs. */
export interface EncodeCost {
  readonly name: string;
  readonly bytes: number;
  readonly oursUs: number;
  readonly protobufEsUs: number;
}

/**
 * What a store does with each object it writes (ADR 0014): a CreateVM's VM without its
 * resource_version, and a node holding 100 VM ids (a heartbeat's object at scale). Each
 * side runs 5,000 times untimed, then 30,000 timed, in turns (median of 3 turns).
 */
export function encodeCosts(): EncodeCost[] {
  const { vm, node } = stored();
  const cases: [string, DescMessage, object, string | undefined][] = [
    ["VM (CreateVM's stored object)", VirtualMachineSchema, vm, "resourceVersion"],
    ["node with 100 VM ids", NodeSchema, node, undefined],
  ];
  return cases.map(([name, schema, msg, omit]) => {
    const field = schema.fields.find((f) => f.localName === omit);
    const theirs = () => {
      const c = clone(schema, msg as never);
      if (field) clearField(c, field);
      return toBinary(schema, c);
    };
    const ours = () => encodeChecked(schema, msg, omit);
    const bytes = ours();
    if (Buffer.compare(bytes, theirs()) !== 0) throw new Error(`bench: encodeChecked and protobuf-es disagree on the ${name}`);
    const [oursUs, protobufEsUs] = turns(ours, theirs);
    return { name, bytes: bytes.length, oursUs, protobufEsUs };
  });
}

/**
 * What the control plane decodes (the decoder beside ADR 0014's encoder): a stored VM and a
 * node with 100 VM ids as a SQL store reads its rows, a CreateVM request, and an agent's
 * BootVm answer. Ours (decodeBinary) against protobuf-es's fromBinary, checked equal first,
 * timed as encodeCosts times.
 */
export function decodeCosts(): EncodeCost[] {
  const { vm, node } = stored();
  const request = create(CreateVMRequestSchema, { name: "bench-000001", projectId: "00000000-0000-0000-0000-000000000001", spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, disks: [{ id: "root", sizeGib: 20n }] }, labels: { tier: "web" } });
  const boot = create(BootVmResponseSchema, { success: true, state: VmState.RUNNING, startedAt: timestampFromMs(Date.now()) });
  const cases: [string, DescMessage, object][] = [
    ["stored VM", VirtualMachineSchema, vm],
    ["node with 100 VM ids", NodeSchema, node],
    ["CreateVM request", CreateVMRequestSchema, request],
    ["agent's BootVm answer", BootVmResponseSchema, boot],
  ];
  return cases.map(([name, schema, msg]) => {
    // As they arrive: a Buffer (an HTTP/2 frame's, a row's).
    const bytes = Buffer.from(toBinary(schema, msg as never));
    const ours = () => decodeBinary(schema, bytes);
    const theirs = () => fromBinary(schema, bytes);
    if (!equals(schema, ours() as never, theirs() as never)) throw new Error(`bench: decodeBinary and fromBinary disagree on the ${name}`);
    const [oursUs, protobufEsUs] = turns(ours, theirs);
    return { name, bytes: bytes.length, oursUs, protobufEsUs };
  });
}

/** Each side 5,000 times untimed, then 30,000 timed, in turns: the median of 3 turns each, in µs a call. */
function turns(ours: () => unknown, theirs: () => unknown): [number, number] {
  const time = (fn: () => unknown, n: number) => {
    const t0 = nowMs();
    for (let i = 0; i < n; i++) fn();
    return ((nowMs() - t0) * 1000) / n;
  };
  time(ours, 5_000);
  time(theirs, 5_000);
  const a: number[] = [];
  const b: number[] = [];
  for (let turn = 0; turn < 3; turn++) {
    a.push(time(ours, 30_000));
    b.push(time(theirs, 30_000));
  }
  return [median(a), median(b)];
}

/** A stored VM (CreateVM's) and a node holding 100 VM ids (a heartbeat's object at scale). */
function stored(): { vm: object; node: object } {
  const now = timestampFromMs(Date.now());
  const vm = create(VirtualMachineSchema, {
    id: "5f0c8a34-3f0e-4d44-9f43-2f0a3a7f6f10",
    name: "bench-000001",
    projectId: "00000000-0000-0000-0000-000000000001",
    spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n }, desiredPowerState: PowerState.STOPPED },
    status: { state: VmStatus_State.STOPPED },
    createdAt: now,
    updatedAt: now,
    generation: 1n,
    resourceVersion: 42n,
  });
  const node = create(NodeSchema, {
    id: "n1",
    hostname: "host-1",
    labels: { rack: "r1", zone: "z1" },
    spec: { schedulable: true, cpu: { logicalCpus: 64, features: ["vmx", "avx2"] }, memory: { totalMib: 262_144n } },
    status: {
      vmIds: Array.from({ length: 100 }, (_, i) => `00000000-0000-4000-8000-${String(i).padStart(12, "0")}`),
      lastHeartbeat: now,
      usage: { cpuUsagePercent: 12.5, memoryUsedMib: 1024n },
      conditions: [{ type: "Ready", status: 1, reason: "HypervisorUp", message: "up" }],
    },
  });
  return { vm, node };
}
