import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { QemuBackend, startAgentServer, VmManager } from "@quantix/agent";
import { until } from "@quantix/testing";
import { buildTestGuest, ensureDebianPackages, GUEST_MARKER } from "@quantix/testing";
import { silentLogger } from "@quantix/rpc";
import { httpAgentConnection } from "./agent-connection.js";
import { connectedAgentHypervisor, directBootSpec } from "./agent-hypervisor-test-kit.js";
import { hypervisorPortContract } from "./hypervisor-port.contract.js";

// The port over host agents driving real QEMU (TCG) with the tiny test guest; a second
// agent, sharing the guest's directory, is the migration target. Each case starts its own
// QEMU; only the graceful shutdown and the console wait for the guest's userspace (about
// 9 s under TCG). Every wait has a deadline.
const TIMEOUT_MS = 60_000;

/** An agent over QEMU on port 0, in its own state directory, and the port to it. */
async function qemuAgent(sharedDir: string) {
  const stateDir = await mkdtemp(join(tmpdir(), "quantix-port-qemu-"));
  const backend = new QemuBackend({ stateDir: join(stateDir, "qemu"), kvm: false });
  const manager = new VmManager({ backend, sharedDirs: [sharedDir] });
  await manager.start();
  const server = await startAgentServer(manager, { host: "127.0.0.1", port: 0, log: silentLogger, graceMs: 100 });
  const port = await connectedAgentHypervisor(httpAgentConnection(server.url), backend.type);
  const close = async () => {
    await port.close();
    await server.close();
    for (const vm of await backend.listVMs()) await manager.delete(vm.vmId, true).catch(() => undefined);
    await backend.close();
    await rm(stateDir, { recursive: true, force: true });
  };
  return { port, backend, manager, close };
}

hypervisorPortContract(
  "AgentHypervisor over an agent with real QEMU (TCG)",
  async () => {
    await ensureDebianPackages(["qemu-system-x86", "busybox-static", "cpio"]);
    const guest = await buildTestGuest();
    const [here, there] = [await qemuAgent(guest.imageDir), await qemuAgent(guest.imageDir)];
    return {
      port: here.port,
      peer: there.port,
      spec: directBootSpec(guest.kernelPath, guest.initrdPath, guest.kernelArgs),
      bootMarker: GUEST_MARKER,
      guestReady: async (vmId) => {
        const marked = async () => new TextDecoder().decode(await here.backend.consoleTail(vmId, 1 << 20)).includes(GUEST_MARKER);
        await until(async () => ((await marked()) ? true : undefined), `the guest ${vmId} in userspace`, TIMEOUT_MS, 100);
      },
      crash: async (vmId) => {
        const pid = (await here.manager.info(vmId)).pid;
        if (pid === undefined) throw new Error(`VM ${vmId} has no QEMU process to kill`);
        process.kill(pid, "SIGKILL");
      },
      async cleanup() {
        await here.close();
        await there.close();
      },
    };
  },
  { timeoutMs: TIMEOUT_MS },
);
