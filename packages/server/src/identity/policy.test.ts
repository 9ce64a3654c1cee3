import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import type { DescService } from "@bufbuild/protobuf";
import * as reflectionV1 from "@quantix/api/gen/grpc/reflection/v1/reflection_pb.js";
import * as reflectionV1alpha from "@quantix/api/gen/grpc/reflection/v1alpha/reflection_pb.js";
import { PENDING_SERVICES, SERVED_ELSEWHERE, SERVED_FILES } from "../rpc/catalog.js";
import { POLICY } from "./policy.js";

/** Every service the control plane answers or lists: its served descriptors, the pending and elsewhere-served services, and reflection. */
function allServices(): DescService[] {
  const services = new Map<string, DescService>();
  for (const f of SERVED_FILES) for (const s of f.services) services.set(s.typeName, s);
  for (const { service } of [...PENDING_SERVICES, ...SERVED_ELSEWHERE]) services.set(service.typeName, service);
  for (const s of [reflectionV1.ServerReflection, reflectionV1alpha.ServerReflection]) services.set(s.typeName, s);
  return [...services.values()];
}

const procedures = allServices().flatMap((s) => s.methods.map((m) => `${s.typeName}/${m.name}`));

test("every RPC of every service has a declared policy", () => {
  const missing = procedures.filter((p) => !POLICY[p]);
  assert.deepEqual(missing, [], `RPCs without a policy in identity/policy.ts: ${missing.join(", ")}`);
  // The served files include the identity services and the pending ones: the list is not trivially short.
  assert.ok(procedures.length > 150, `only ${procedures.length} RPCs found`);
  assert.ok(procedures.includes("Quantixkvm.identity.v1.IdentityService/Login"));
  assert.ok(procedures.includes("virtualdom.v1.MemoryGateway/WriteDiff"));
});

test("no policy names an RPC that does not exist (a renamed RPC would keep a stale entry)", () => {
  const known = new Set(procedures);
  assert.deepEqual(Object.keys(POLICY).filter((p) => !known.has(p)), []);
});

test("the policy's key cases, read by hand", () => {
  assert.equal(POLICY["Quantixkvm.identity.v1.IdentityService/Login"]!.access, "public");
  assert.equal(POLICY["Quantixkvm.identity.v1.IdentityService/WhoAmI"]!.access, "authenticated");
  assert.equal(POLICY["Quantixkvm.identity.v1.IdentityService/RotateSigningKey"]!.access, "system-admin");
  assert.equal(POLICY["Quantixkvm.compute.v1.NodeService/DecommissionNode"]!.access, "system-admin");
  assert.equal(POLICY["Quantixkvm.compute.v1.NodeService/RegisterNode"]!.access, "agent");
  const get = POLICY["Quantixkvm.compute.v1.VMService/GetVM"]!;
  const create = POLICY["Quantixkvm.compute.v1.VMService/CreateVM"]!;
  const start = POLICY["Quantixkvm.compute.v1.VMService/StartVM"]!;
  assert.deepEqual([get.access === "project" && get.role, create.access === "project" && create.role, start.access === "project" && start.role], ["reader", "member", "member"]);
  const bind = POLICY["Quantixkvm.identity.v1.ProjectService/SetRoleBinding"]!;
  assert.equal(bind.access === "project" && bind.role, "admin");
  assert.equal(POLICY["virtualdom.v1.MemoryGateway/WriteDiff"]!.scope, "dom.write");
  assert.equal(POLICY["virtualdom.v1.MemoryGateway/ReadSnapshot"]!.scope, "dom.read");
});

test("docs/api/identity.md's policy table names every RPC of the services built", () => {
  const doc = readFileSync(new URL("../../../../docs/api/identity.md", import.meta.url), "utf8");
  const built = SERVED_FILES.flatMap((f) => f.services).filter((s) => !PENDING_SERVICES.some((p) => p.service.typeName === s.typeName) && !SERVED_ELSEWHERE.some((p) => p.service.typeName === s.typeName));
  const missing = built.flatMap((s) => s.methods.map((m) => m.name)).filter((name) => !new RegExp(`\\b${name}\\b`).test(doc));
  assert.deepEqual(missing, []);
});
