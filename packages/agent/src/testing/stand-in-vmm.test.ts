import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { until } from "@quantix/testing";
import { UnixHttpClient } from "../backends/rest-vmm/unix-http-client.js";
import type { VmmFlavor } from "./api-spec.js";
import { standInBinary } from "./stand-in-fixture.js";
import { violationsPath, type Violation } from "./stand-in-server.js";

/**
 * Runs one stand-in process on a fresh socket; `body` gets its API client and the path of
 * a kernel file (the stand-in opens the files it boots, as the real VMM does).
 */
async function withStandIn(flavor: VmmFlavor, body: (api: UnixHttpClient, kernel: string) => Promise<void>): Promise<void> {
  const dir = mkdtempSync("/tmp/qx-si-");
  const kernel = join(dir, "vmlinux");
  writeFileSync(kernel, "not a kernel: the stand-in does not run it");
  const socket = join(dir, "api.sock");
  const flag = flavor === "firecracker" ? "--api-sock" : "--api-socket";
  const child = spawn(standInBinary(flavor), [flag, socket], { stdio: "ignore", env: { ...process.env, QUANTIX_STANDIN_VIOLATIONS_DIR: "" } });
  try {
    const api = new UnixHttpClient(socket);
    // Ready when it answers, not when its socket file appears (a busy machine separates the two).
    await until(async () => (existsSync(socket) && (await violations(api)) ? true : undefined), "the stand-in to answer");
    await body(api, kernel);
  } finally {
    child.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
}

async function violations(api: UnixHttpClient): Promise<Violation[]> {
  return (await api.send("GET", violationsPath)).body as Violation[];
}

test("firecracker stand-in records requests the spec forbids and answers them with a fault", async () => {
  await withStandIn("firecracker", async (api, kernel) => {
    assert.equal((await api.send("PUT", "/boot-source", { kernel_image_path: kernel })).status, 204);
    assert.deepEqual(await violations(api), []);
    const unknown = await api.send("PUT", "/no-such-thing", {});
    const wrongMethod = await api.send("DELETE", "/machine-config");
    const badBody = await api.send("PUT", "/machine-config", { vcpu_count: 0, mem_size_mib: "lots", extra: true });
    assert.equal(unknown.status, 404);
    assert.equal(wrongMethod.status, 405);
    assert.equal(badBody.status, 400);
    assert.match(String((badBody.body as { fault_message: string }).fault_message), /minimum/);
    assert.equal((await api.send("PATCH", "/vm", { state: "Paused" })).status, 400, "PATCH /vm before InstanceStart");
    assert.equal((await api.send("PUT", "/actions", { action_type: "InstanceStart" })).status, 204);
    assert.equal((await api.send("PUT", "/actions", { action_type: "InstanceStart" })).status, 400, "InstanceStart twice");
    assert.equal((await api.send("PUT", "/machine-config", { vcpu_count: 1, mem_size_mib: 128 })).status, 400, "pre-boot PUT after start");
    const seen = await violations(api);
    assert.deepEqual(seen.map((v) => `${v.method} ${v.path}`), [
      "PUT /no-such-thing", "DELETE /machine-config", "PUT /machine-config", "PUT /machine-config", "PUT /machine-config",
      "PATCH /vm", "PUT /actions", "PUT /machine-config",
    ]);
    assert.ok(seen.some((v) => v.problem.includes("extra")), "an undeclared property is named");
  });
});

test("cloud-hypervisor stand-in answers 404/405 for wrong states and records them", async () => {
  await withStandIn("cloud-hypervisor", async (api, kernel) => {
    assert.equal((await api.send("GET", "/api/v1/vmm.ping")).status, 200);
    assert.equal((await api.send("PUT", "/api/v1/vm.boot")).status, 404, "boot before vm.create");
    assert.equal((await api.send("PUT", "/api/v1/vm.create", { cpus: { boot_vcpus: 1, max_vcpus: 1 } })).status, 400, "payload is required");
    assert.equal((await api.send("PUT", "/api/v1/vm.create", { payload: { kernel } })).status, 204);
    assert.equal((await api.send("PUT", "/api/v1/vm.pause")).status, 405, "pause before boot");
    assert.equal((await api.send("GET", "/vm.info")).status, 404, "the /api/v1 prefix is required");
    assert.equal((await api.send("PUT", "/api/v1/vm.boot")).status, 204);
    const info = await api.send("GET", "/api/v1/vm.info");
    assert.equal((info.body as { state: string }).state, "Running");
    const seen = await violations(api);
    assert.deepEqual(seen.map((v) => v.path), ["/api/v1/vm.boot", "/api/v1/vm.create", "/api/v1/vm.pause", "/vm.info"]);
  });
});

test("a request the spec forbids is refused with the schema's reason, and recorded", async () => {
  await withStandIn("firecracker", async (api) => {
    const bad = await api.send("PUT", "/machine-config", { vcpu_count: 40, mem_size_mib: 128, smt: "yes" });
    assert.equal(bad.status, 400);
    const reason = (bad.body as { fault_message: string }).fault_message;
    assert.match(reason, /\$\.vcpu_count: 40 is above the maximum 32/);
    assert.match(reason, /\$\.smt: expected boolean, got string/);
    const seen = await violations(api);
    assert.deepEqual(seen.map((v) => v.problem).sort(), ["$.smt: expected boolean, got string", "$.vcpu_count: 40 is above the maximum 32"]);
  });
});
