import assert from "node:assert/strict";
import { describe, it } from "node:test";

import { create } from "@bufbuild/protobuf";
import { BootConfigSchema } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { CreateVMRequestSchema, type CreateVMRequest } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_service_pb.js";

import { validateCreateVm } from "./vm-validation.js";

/** A valid request; `change` edits a fresh copy of it. */
function request(change: (r: CreateVMRequest) => void = () => {}): CreateVMRequest {
  const r = create(CreateVMRequestSchema, {
    name: "web-1",
    labels: { app: "web" },
    spec: {
      cpu: { cores: 2 },
      memory: { sizeMib: 2048n },
      disks: [{ id: "root", sizeGib: 20n }],
      nics: [{ id: "eth0", networkId: "net-1", macAddress: "52:54:00:12:34:56" }],
    },
  });
  change(r);
  return r;
}

const fields = (r: CreateVMRequest) => validateCreateVm(r).map((v) => v.field);

function ok(change: (r: CreateVMRequest) => void, what: string): void {
  assert.deepEqual(validateCreateVm(request(change)), [], what);
}

/** Asserts exactly one violation, of `field`. */
function rejected(change: (r: CreateVMRequest) => void, field: string, what: string): void {
  assert.deepEqual(fields(request(change)), [field], what);
}

const labelsOf = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, "v"]));

describe("validateCreateVm", () => {
  it("accepts the valid base request", () => assert.deepEqual(validateCreateVm(request()), []));

  it("name: 1 to 255 characters", () => {
    ok((r) => (r.name = "a"), "1 char");
    ok((r) => (r.name = "a".repeat(255)), "255 chars");
    rejected((r) => (r.name = ""), "name", "0 chars");
    rejected((r) => (r.name = "a".repeat(256)), "name", "256 chars");
  });

  it("name: starts with a letter, then letters, digits, '-' and '_'", () => {
    ok((r) => (r.name = "a-b_c"), "a-b_c");
    ok((r) => (r.name = "Z9"), "Z9");
    for (const name of ["1abc", "a b", "a,b", "-ab", "_ab", "a.b", "a\nb"]) rejected((r) => (r.name = name), "name", JSON.stringify(name));
  });

  it("cpu cores: 1 to 256", () => {
    ok((r) => (r.spec!.cpu!.cores = 1), "1");
    ok((r) => (r.spec!.cpu!.cores = 256), "256");
    rejected((r) => (r.spec!.cpu!.cores = 0), "spec.cpu.cores", "0");
    rejected((r) => (r.spec!.cpu!.cores = 257), "spec.cpu.cores", "257");
  });

  it("memory size_mib: 256 to 1048576", () => {
    ok((r) => (r.spec!.memory!.sizeMib = 256n), "256");
    ok((r) => (r.spec!.memory!.sizeMib = 1_048_576n), "1048576");
    rejected((r) => (r.spec!.memory!.sizeMib = 255n), "spec.memory.size_mib", "255");
    rejected((r) => (r.spec!.memory!.sizeMib = 1_048_577n), "spec.memory.size_mib", "1048577");
  });

  it("disk size_gib: 1 to 65536", () => {
    ok((r) => (r.spec!.disks[0]!.sizeGib = 1n), "1");
    ok((r) => (r.spec!.disks[0]!.sizeGib = 65_536n), "65536");
    rejected((r) => (r.spec!.disks[0]!.sizeGib = 0n), "spec.disks[0].size_gib", "0");
    rejected((r) => (r.spec!.disks[0]!.sizeGib = 65_537n), "spec.disks[0].size_gib", "65537");
  });

  it("disk host_path: absolute, no control characters, not with volume_id or image_id; size_gib optional with it", () => {
    ok((r) => ((r.spec!.disks[0]!.hostPath = "/var/lib/quantix/images/root.qcow2"), (r.spec!.disks[0]!.sizeGib = 0n)), "an image file with size 0");
    rejected((r) => (r.spec!.disks[0]!.hostPath = "images/root.qcow2"), "spec.disks[0].host_path", "relative");
    rejected((r) => (r.spec!.disks[0]!.hostPath = "/images/a\nb"), "spec.disks[0].host_path", "newline");
    rejected((r) => ((r.spec!.disks[0]!.hostPath = "/images/a.raw"), (r.spec!.disks[0]!.volumeId = "vol-1")), "spec.disks[0].host_path", "with a volume");
  });

  it("labels: at most 50; keys up to 63 characters; values up to 255", () => {
    ok((r) => (r.labels = labelsOf(50)), "50 labels");
    rejected((r) => (r.labels = labelsOf(51)), "labels", "51 labels");
    ok((r) => (r.labels = { ["k".repeat(63)]: "v" }), "63-char key");
    rejected((r) => (r.labels = { ["k".repeat(64)]: "v" }), `labels["${"k".repeat(64)}"]`, "64-char key");
    ok((r) => (r.labels = { k: "v".repeat(255) }), "255-char value");
    rejected((r) => (r.labels = { k: "v".repeat(256) }), 'labels["k"]', "256-char value");
  });

  it("reports every violation of one request, each with its field path", () => {
    const r = request((r) => {
      r.name = "1bad";
      r.spec!.cpu!.cores = 0;
      r.spec!.memory!.sizeMib = 100n;
      r.spec!.disks[0]!.sizeGib = 0n;
    });
    assert.deepEqual(fields(r).sort(), ["name", "spec.cpu.cores", "spec.disks[0].size_gib", "spec.memory.size_mib"]);
    for (const v of validateCreateVm(r)) assert.ok(v.description.length > 0 && v.reason.length > 0, v.field);
  });

  it("requires spec, cpu and memory", () => {
    assert.deepEqual(fields(create(CreateVMRequestSchema, { name: "web-1" })), ["spec"]);
    rejected((r) => (r.spec!.cpu = undefined), "spec.cpu", "no cpu");
    rejected((r) => (r.spec!.memory = undefined), "spec.memory", "no memory");
  });

  it("kernel_path: absolute, without '..' segments or control characters", () => {
    const kernel = (kernelPath: string) => (r: CreateVMRequest) => {
      r.spec!.boot = create(BootConfigSchema, { directBoot: { kernelPath } });
    };
    const field = "spec.boot.direct_boot.kernel_path";
    ok(kernel("/var/lib/quantix/vmlinuz"), "absolute path");
    rejected(kernel("/boot/vmlinuz\n-append evil"), field, "newline");
    rejected(kernel("/boot/../etc/shadow"), field, "'..' segment");
    rejected(kernel("boot/vmlinuz"), field, "relative");
  });

  it("mac_address: six hex bytes, unicast (even first byte)", () => {
    ok((r) => (r.spec!.nics[0]!.macAddress = "52:54:00:12:34:56"), "unicast");
    rejected((r) => (r.spec!.nics[0]!.macAddress = "53:54:00:12:34:56"), "spec.nics[0].mac_address", "odd first byte");
    rejected((r) => (r.spec!.nics[0]!.macAddress = "01:00:5e:00:00:01"), "spec.nics[0].mac_address", "multicast");
    rejected((r) => (r.spec!.nics[0]!.macAddress = "52:54:00:12:34"), "spec.nics[0].mac_address", "five bytes");
  });
});
