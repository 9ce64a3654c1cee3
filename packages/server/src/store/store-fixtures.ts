import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { VirtualMachineSchema, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";

/** A minimal valid VM with fresh ids, for store tests outside the contract suite. */
export function fixtureVm(): VirtualMachine {
  return create(VirtualMachineSchema, { id: randomUUID(), projectId: randomUUID(), name: `vm-${randomUUID().slice(0, 8)}`, spec: { cpu: { cores: 1 }, memory: { sizeMib: 256n } } });
}
