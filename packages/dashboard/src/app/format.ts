import { VmStatus_State } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { NodeStatus_Phase } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";
import type { Timestamp } from "@bufbuild/protobuf/wkt";

export const vmState = (s: VmStatus_State | undefined) => VmStatus_State[s ?? 0] ?? String(s);
export const nodePhase = (p: NodeStatus_Phase | undefined) => NodeStatus_Phase[p ?? 0] ?? String(p);
export const mib = (n: bigint | number | undefined) => {
  const v = Number(n ?? 0);
  return v >= 1024 ? `${(v / 1024).toFixed(v % 1024 === 0 ? 0 : 1)} GiB` : `${v} MiB`;
};
export const time = (t: Timestamp | undefined) => (t ? new Date(Number(t.seconds) * 1000 + Math.floor(t.nanos / 1e6)).toLocaleString() : "—");
export const pct = (a: number, b: number) => (b > 0 ? Math.round((a / b) * 100) : 0);
