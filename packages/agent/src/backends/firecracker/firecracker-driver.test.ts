import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { create } from "@bufbuild/protobuf";
import { VmConfigSchema } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { QuantixError } from "@quantix/core";
import { firecrackerDriver } from "./firecracker-driver.js";

test("firecracker rejects a qcow2 disk and firmware boot with FAILED_PRECONDITION naming the capability", (t) => {
  const dir = mkdtempSync("/tmp/qx-fcq-");
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const image = join(dir, "disk.img");
  writeFileSync(image, Buffer.concat([Buffer.from([0x51, 0x46, 0x49, 0xfb]), Buffer.alloc(508)]));
  const base = { cpu: { vcpuCount: 1 }, memory: { sizeBytes: 128n * 1024n * 1024n } };
  const qcow = create(VmConfigSchema, { ...base, boot: { kernelPath: "/k" }, storage: [{ id: "d", path: image }] });
  const firmware = create(VmConfigSchema, base);
  const named = (cap: string) => (e: unknown) => e instanceof QuantixError && e.code === "failed_precondition" && e.message.includes(`"${cap}"`);
  assert.throws(() => firecrackerDriver.checkConfig(qcow), named("qcow2"));
  assert.throws(() => firecrackerDriver.checkConfig(firmware), named("firmware-boot"));
  assert.equal(firecrackerDriver.capabilities.has("reboot"), false);
  assert.equal(firecrackerDriver.capabilities.has("live-migration"), false);
});
