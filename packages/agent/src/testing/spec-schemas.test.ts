import { test } from "node:test";
import assert from "node:assert/strict";
import { loadApiSpec, type VmmFlavor } from "./api-spec.js";
import { specSchemas } from "./spec-schemas.js";

// The stand-in's schema checks (ajv over the vendored specs): every check it relied on
// before ajv (types, required, enum, ranges, integer formats, undeclared properties,
// references) still holds, and every schema of both specs compiles in ajv's strict mode.

const ref = (flavor: VmmFlavor, name: string) => (flavor === "firecracker" ? { $ref: `#/definitions/${name}` } : { $ref: `#/components/schemas/${name}` });

test("every schema of both vendored specs compiles, and a valid value passes", async () => {
  const { readFileSync } = await import("node:fs");
  const { parse } = await import("yaml");
  for (const [flavor, file] of [["firecracker", "firecracker.yaml"], ["cloud-hypervisor", "cloud-hypervisor.yaml"]] as const) {
    const doc = parse(readFileSync(new URL(`../../../../third_party/specs/${file}`, import.meta.url), "utf8")) as Record<string, Record<string, unknown>>;
    const names = Object.keys(doc["definitions"] ?? (doc["components"]!["schemas"] as object));
    const spec = loadApiSpec(flavor);
    for (const name of names) assert.ok(Array.isArray(spec.validate(ref(flavor, name), undefined)), `${flavor} ${name}`);
  }
  assert.deepEqual(loadApiSpec("firecracker").validate(ref("firecracker", "MachineConfiguration"), { vcpu_count: 2, mem_size_mib: 256 }), []);
});

test("each violation names where and which rule of the spec it breaks", () => {
  const fc = loadApiSpec("firecracker");
  assert.deepEqual(fc.validate(ref("firecracker", "MachineConfiguration"), { vcpu_count: 0, mem_size_mib: "lots", extra: true }).sort(), [
    "$.extra: property not declared by the spec",
    "$.mem_size_mib: expected integer, got string",
    "$.vcpu_count: 0 is below the minimum 1",
  ]);
  assert.deepEqual(fc.validate(ref("firecracker", "MachineConfiguration"), { vcpu_count: 1 }), ['$: missing required property "mem_size_mib"']);
  assert.deepEqual(fc.validate(ref("firecracker", "InstanceActionInfo"), { action_type: "Explode" }), ['$.action_type: "Explode" is not one of ["FlushMetrics","InstanceStart","SendCtrlAltDel"]']);
  const ch = loadApiSpec("cloud-hypervisor");
  const problems = ch.validate(ref("cloud-hypervisor", "VmConfig"), { payload: { kernel: 5 }, platform: { iommu_address_width_bits: 300 } });
  assert.ok(problems.includes("$.payload.kernel: expected string, got integer"), problems.join("; "));
  assert.ok(problems.includes("$.platform.iommu_address_width_bits: 300 does not fit uint8"), problems.join("; "));
});

test("schemas that say nothing of other properties are closed; additionalProperties schemas still apply", () => {
  const check = specSchemas({
    definitions: {
      Open: { type: "object", additionalProperties: true },
      Map: { type: "object", additionalProperties: { type: "integer", format: "uint16" } },
      Ref: { $ref: "#/definitions/Map", description: "a reference's siblings do not apply" },
    },
  });
  assert.deepEqual(check({ $ref: "#/definitions/Open" }, { anything: [1] }), []);
  assert.deepEqual(check({ $ref: "#/definitions/Ref" }, { a: 1, b: 70000 }), ["$.b: 70000 does not fit uint16"]);
  assert.deepEqual(check({ type: "array", items: { type: "object", properties: { id: { type: "string" } } } }, [{ id: "x" }, { id: "y", ID: "z" }]), ["$[1].ID: property not declared by the spec"]);
});
