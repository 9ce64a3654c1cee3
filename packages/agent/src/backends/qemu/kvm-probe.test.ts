import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { silentLogger } from "@quantix/rpc";
import { startAgentServer } from "../../rpc/agent-server.js";
import { VmManager } from "../../vm-manager.js";
import { probeKvm } from "./kvm-probe.js";
import { QemuBackend } from "./qemu-backend.js";

test("with VMCP_QEMU_KVM=true, GET /_/health reports whether KVM can run a vCPU here, and what to set if not", async () => {
  const probe = await probeKvm("qemu-system-x86_64");
  const stateDir = await mkdtemp(join(tmpdir(), "qx-kvm-"));
  const backend = new QemuBackend({ stateDir, kvm: true });
  const manager = new VmManager({ backend });
  await manager.start();
  const server = await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: silentLogger });
  try {
    const res = await fetch(`${server.url}/_/health`);
    const body = (await res.json()) as { status: string; ping: { ok: boolean; detail?: string } };
    if (probe.usable) {
      assert.equal(res.status, 200, JSON.stringify(body));
      assert.equal(body.ping.ok, true);
    } else {
      // These machines: QEMU opens the paravirtualised /dev/kvm, then aborts at the first vCPU run.
      assert.equal(res.status, 503);
      assert.equal(body.status, "degraded");
      assert.match(body.ping.detail ?? "", /KVM .*set VMCP_QEMU_KVM=false/);
    }
  } finally {
    await server.close();
    await backend.close();
    await rm(stateDir, { recursive: true, force: true });
  }
});
