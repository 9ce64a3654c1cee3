import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { NodeSchema, type Node } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";

/** A node with labels, nested messages, lists, a timestamp and a condition: for tests of copying and sharing stored messages. */
export function fixtureNode(): Node {
  return create(NodeSchema, {
    id: "n1",
    hostname: "host-1",
    labels: { rack: "r1", zone: "z1" },
    spec: { schedulable: true, cpu: { logicalCpus: 64, features: ["vmx", "avx2"] }, memory: { totalMib: 262_144n } },
    status: {
      vmIds: ["a", "b", "c"],
      lastHeartbeat: timestampFromMs(1_700_000_000_123),
      usage: { cpuUsagePercent: 12.5, memoryUsedMib: 1024n },
      conditions: [{ type: "Ready", status: 1, reason: "HypervisorUp", message: "up" }],
    },
  });
}
