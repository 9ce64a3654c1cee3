import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { ConsoleRoleKind, VmService } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { silentLogger } from "@quantix/rpc";
import { buildTestGuest, ensureDebianPackages, GUEST_SHELL_ARG, GUEST_SHELL_PROMPT, guestVmConfig, openConsoleSession, type TestGuest } from "@quantix/testing";
import { startAgentServer, type AgentServer } from "../../rpc/agent-server.js";
import { VmManager } from "../../vm-manager.js";
import { QemuBackend } from "./qemu-backend.js";

// Typing into a real TCG guest through the agent's AttachConsole: the shell test guest
// answers on its serial console, which QEMU serves on the chardev socket the agent holds.
const BOOT_MS = 90_000;
let guest: TestGuest;
let stateDir: string;
let backend: QemuBackend;
let server: AgentServer;

before(async () => {
  await ensureDebianPackages(["qemu-system-x86", "qemu-utils", "busybox-static", "cpio"]);
  guest = await buildTestGuest();
  stateDir = await mkdtemp(path.join(os.tmpdir(), "quantix-console-input-"));
  backend = new QemuBackend({ stateDir, kvm: false, imageDirs: [guest.imageDir] });
  const manager = new VmManager({ backend, imageDirs: [guest.imageDir] });
  await manager.start();
  server = await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: silentLogger });
});

after(async () => {
  await server?.close();
  await backend?.close();
  await rm(stateDir, { recursive: true, force: true });
});

test("AttachConsole on QEMU: typed commands reach the guest's shell and its answer comes back", { timeout: 180_000 }, async () => {
  const c = createClient(VmService, createGrpcTransport({ baseUrl: server.url }));
  const vmId = `shell-${process.pid}`;
  const config = guestVmConfig(guest, 128);
  config.boot!.kernelArgs = `${guest.kernelArgs} ${GUEST_SHELL_ARG}`;
  await c.createVm({ vmId, config });
  await c.bootVm({ vmId });
  const s = openConsoleSession((input, o) => c.attachConsole(input as never, o), { kind: { case: "attach", value: { vmId, write: true, tailBytes: 1 << 20 } } });
  try {
    assert.equal((await s.waitRole(() => true, "attached")).role, ConsoleRoleKind.WRITER);
    await s.waitText(guest.marker, BOOT_MS);
    await s.waitText(GUEST_SHELL_PROMPT, BOOT_MS);
    s.type("echo $((6*7))\r");
    // The answer on a line of its own (the echoed command line holds "6*7", not 42).
    await s.waitText("\n42\r", 30_000);
  } finally {
    await s.close();
    await c.shutdownVm({ vmId, force: true }).catch(() => undefined);
    await c.deleteVm({ vmId }).catch(() => undefined);
  }
});
