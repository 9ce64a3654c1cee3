import { before } from "node:test";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { create } from "@bufbuild/protobuf";
import { VmConfigSchema, type VmConfig } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { buildTestGuest, ensureDebianPackages, GUEST_MARKER } from "@quantix/testing";
import { backendContract } from "../backend.contract.js";
import { readPidFile } from "./qemu-process.js";
import { listVmDirs, vmPaths } from "./qemu-vm-dir.js";
import { QemuBackend } from "./qemu-backend.js";

// The shared Backend contract against real QEMU (TCG) booting the test guest.
let config: VmConfig;
const roots: string[] = [];

before(async () => {
  await ensureDebianPackages(["qemu-system-x86", "busybox-static", "cpio"]);
  const guest = await buildTestGuest();
  config = create(VmConfigSchema, {
    cpu: { vcpuCount: 1 },
    memory: { sizeBytes: 192n * 1048576n },
    boot: { kernelPath: guest.kernelPath, initrdPath: guest.initrdPath, kernelArgs: guest.kernelArgs },
  });
});

backendContract(
  "qemu",
  async () => {
    const stateDir = await mkdtemp(path.join(os.tmpdir(), "quantix-qemu-contract-"));
    roots.push(stateDir);
    const opened: QemuBackend[] = [new QemuBackend({ stateDir, kvm: false })];
    return {
      backend: opened[0] as QemuBackend,
      config,
      reopen: async () => {
        const again = new QemuBackend({ stateDir, kvm: false });
        opened.push(again);
        return again;
      },
      cleanup: async () => {
        for (const b of opened) await b.close();
        // Kill any QEMU a failed case left behind, by its pid file, then drop the state.
        for (const vmId of await listVmDirs(stateDir)) {
          const pid = await readPidFile(vmPaths(stateDir, vmId).pidFile);
          if (pid) try { process.kill(pid, "SIGKILL"); } catch { /* already gone */ }
        }
        await rm(stateDir, { recursive: true, force: true });
      },
    };
  },
  { vmDir: (vmId) => path.join(roots[roots.length - 1] ?? "/nonexistent", "vms", vmId), timeoutMs: 30_000, bootMarker: GUEST_MARKER },
);
