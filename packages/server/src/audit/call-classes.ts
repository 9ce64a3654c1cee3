import type { DescMethod } from "@bufbuild/protobuf";

/**
 * What a call is, for the audit trail: a read (never recorded), a write (always
 * recorded, answered or refused), or agent telemetry (a node's periodic heartbeat:
 * recorded only when refused, or the trail would hold one record per node every 10 s).
 */
export type CallClass = "read" | "write" | "telemetry";

/** Method names that read: Get…, List…, Watch…, Stream… (unary reads and server streams that only follow). */
const READ_PREFIX = /^(Get|List|Watch|Stream)[A-Z]/;

/**
 * The methods the name rule gets wrong, by "package.Service/Method": reads not named as
 * such, and calls that are telemetry. A method named here must exist (the classification
 * test fails for a stale entry). At the merge with the identity work, this becomes a
 * column of the per-RPC policy table.
 */
export const DECLARED: Readonly<Record<string, CallClass>> = {
  // The document gateway's reads (adr-0001).
  "virtualdom.v1.MemoryGateway/ReadSnapshot": "read",
  "virtualdom.v1.MemoryGateway/SubscribeChanges": "read",
  // gRPC server reflection: describes the API.
  "grpc.reflection.v1.ServerReflection/ServerReflectionInfo": "read",
  "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": "read",
  // An agent's heartbeat every 10 s (HEARTBEAT_INTERVAL_SEC): recorded when refused.
  "Quantixkvm.compute.v1.NodeService/UpdateHeartbeat": "telemetry",
};

/** The class of a method: declared, else by its name. */
export function classOf(method: DescMethod): CallClass {
  return DECLARED[`${method.parent.typeName}/${method.name}`] ?? (READ_PREFIX.test(method.name) ? "read" : "write");
}
