import assert from "node:assert/strict";
import { test } from "node:test";
import { QuantixError } from "@quantix/core";
import { loadAgentConfig } from "./config.js";

test("defaults follow the seed (qemu, KVM on, 127.0.0.1:9090)", () => {
  const c = loadAgentConfig({});
  assert.equal(c.backend, "qemu");
  assert.equal(c.qemuKvm, true);
  assert.equal(c.qemuBinary, "qemu-system-x86_64");
  assert.equal(c.address, "127.0.0.1");
  assert.equal(c.port, 9090);
  assert.equal(c.controlPlane, undefined);
  assert.ok(c.stateDir.endsWith(".quantix-agent"));
});

test("flags override env vars", () => {
  const c = loadAgentConfig({ VMCP_BACKEND: "qemu", VMCP_PORT: "1" }, ["--backend", "simulated", "--port=0", "--control-plane", "http://127.0.0.1:8080/", "--qemu-kvm", "false"]);
  assert.equal(c.backend, "simulated");
  assert.equal(c.port, 0);
  assert.equal(c.qemuKvm, false);
  assert.equal(c.controlPlane, "http://127.0.0.1:8080");
});

test("every bad setting is named at once", () => {
  let err: unknown;
  try {
    loadAgentConfig({ VMCP_BACKEND: "xen", VMCP_PORT: "70000", VMCP_QEMU_KVM: "maybe", QUANTIX_CONTROL_PLANE: "ftp://x", QUANTIX_NODE_NAME: "bad name" }, ["--nope"]);
  } catch (e) {
    err = e;
  }
  assert.ok(err instanceof QuantixError);
  for (const name of ["VMCP_BACKEND", "'xen'", "VMCP_PORT", "VMCP_QEMU_KVM", "QUANTIX_CONTROL_PLANE", "QUANTIX_NODE_NAME", "--nope"]) assert.ok(err.message.includes(name), `${name} missing from: ${err.message}`);
});
