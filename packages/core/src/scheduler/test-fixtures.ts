import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { NodeSchema, NodeStatus_Phase, type Node, type Taint } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import { VmSpecSchema, type PlacementPolicySchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import type { SchedulableVm } from "./cluster.js";

/** A node for scheduler tests: READY, schedulable, with this much allocatable. */
export function testNode(id: string, o: { vcpus?: number; memMib?: number; phase?: NodeStatus_Phase; schedulable?: boolean; labels?: Record<string, string>; taints?: Partial<Taint>[]; caps?: string[] } = {}): Node {
  return create(NodeSchema, {
    id,
    hostname: `host-${id}`,
    labels: o.labels ?? {},
    spec: { schedulable: o.schedulable ?? true, taints: (o.taints ?? []).map((t) => ({ key: t.key ?? "", value: t.value ?? "", effect: t.effect ?? 0 })) },
    status: {
      phase: o.phase ?? NodeStatus_Phase.READY,
      allocatable: { cpuCores: o.vcpus ?? 8, memoryMib: BigInt(o.memMib ?? 16_384) },
      hypervisor: { type: "simulated", capabilities: o.caps ?? [] },
    },
  });
}

/** A VM for scheduler tests asking for vcpus and memory, with a placement policy. */
export function testVm(id: string, o: { vcpus?: number; memMib?: number; labels?: Record<string, string>; placement?: MessageInitShape<typeof PlacementPolicySchema> } = {}): SchedulableVm {
  const spec = create(VmSpecSchema, { cpu: { cores: o.vcpus ?? 1, sockets: 1, threadsPerCore: 1 }, memory: { sizeMib: BigInt(o.memMib ?? 1024) } });
  if (o.placement) spec.placement = create(VmSpecSchema, { placement: o.placement }).placement;
  return { id, labels: o.labels ?? {}, spec };
}
