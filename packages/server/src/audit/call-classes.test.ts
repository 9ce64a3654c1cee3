import assert from "node:assert/strict";
import { test } from "node:test";
import type { DescMethod, DescService } from "@bufbuild/protobuf";
import * as reflectionV1 from "@quantix/api/gen/grpc/reflection/v1/reflection_pb.js";
import * as reflectionV1alpha from "@quantix/api/gen/grpc/reflection/v1alpha/reflection_pb.js";
import { PENDING_SERVICES, SERVED_ELSEWHERE, SERVED_FILES } from "../rpc/catalog.js";
import { classOf, DECLARED } from "./call-classes.js";

/** Every service this control plane answers: its own, the pending and elsewhere-served ones of the contract, and reflection. */
function servedServices(): DescService[] {
  const all = new Map<string, DescService>();
  for (const f of SERVED_FILES) for (const s of f.services) all.set(s.typeName, s);
  for (const s of [...PENDING_SERVICES, ...SERVED_ELSEWHERE]) all.set(s.service.typeName, s.service);
  for (const s of [reflectionV1.ServerReflection, reflectionV1alpha.ServerReflection]) all.set(s.typeName, s);
  return [...all.values()];
}

test("every RPC of every served service is classified: a read, a write, or telemetry", () => {
  const writes: string[] = [];
  for (const s of servedServices()) {
    for (const m of s.methods) {
      const c = classOf(m);
      assert.ok(c === "read" || c === "write" || c === "telemetry", `${s.typeName}/${m.name}`);
      if (c !== "read") writes.push(`${s.typeName}/${m.name}`);
      // A client-streaming or bidi call that is not declared is a write (it sends data).
      if (m.methodKind === "client_streaming" || m.methodKind === "bidi_streaming") assert.ok(c !== "read" || DECLARED[`${s.typeName}/${m.name}`] === "read", `${s.typeName}/${m.name} sends data and is not declared a read`);
    }
  }
  // The ones the name rule alone would get wrong, and a few plain ones, pinned.
  const pinned: Record<string, string> = {
    "virtualdom.v1.MemoryGateway/ReadSnapshot": "read",
    "virtualdom.v1.MemoryGateway/SubscribeChanges": "read",
    "virtualdom.v1.MemoryGateway/CollaborativeSession": "write",
    "Quantixkvm.storage.v1.ImageService/ImportImage": "write",
    "Quantixkvm.storage.v1.ImageService/UploadImage": "write",
    "vmm.v1.VmService/MigrateVm": "write",
    "Quantixkvm.compute.v1.NodeService/UpdateHeartbeat": "telemetry",
    "Quantixkvm.compute.v1.NodeService/RegisterNode": "write",
    "Quantixkvm.compute.v1.VMService/StreamMetrics": "read",
    "Quantixkvm.compute.v1.VMService/GetConsoleOutput": "read",
    "Quantixkvm.quota.v1.QuotaService/SetQuota": "write",
    "Quantixkvm.audit.v1.AuditService/WatchAuditRecords": "read",
    "grpc.reflection.v1.ServerReflection/ServerReflectionInfo": "read",
  };
  const byName = new Map<string, DescMethod>(servedServices().flatMap((s) => s.methods.map((m) => [`${s.typeName}/${m.name}`, m] as [string, DescMethod])));
  for (const [name, want] of Object.entries(pinned)) assert.equal(classOf(byName.get(name)!), want, name);
  // No declaration names a method that does not exist.
  for (const name of Object.keys(DECLARED)) assert.ok(byName.has(name), `DECLARED names ${name}, which no served service has`);
  assert.ok(writes.length > 50, `${writes.length} writes`);
});
