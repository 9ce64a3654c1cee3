import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after } from "node:test";
import { create } from "@bufbuild/protobuf";
import { VmConfigSchema } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { backendContract } from "../backend.contract.js";
import { SimulatedBackend } from "./simulated-backend.js";

// The kernel is a real file, as an agent's image directory would hold it: a config the
// simulator runs is one a real backend's agent would accept too (image-dirs.ts).
const images = mkdtempSync(join(tmpdir(), "quantix-sim-images-"));
const kernel = join(images, "vmlinuz");
writeFileSync(kernel, "not a kernel: the simulator does not run it");
after(() => rmSync(images, { recursive: true, force: true }));

// The simulator runs no processes: the SIGKILL case is skipped by the contract itself,
// and its crash is covered by vm-manager.test.ts through simulateCrash().
backendContract(
  "simulated",
  async () => {
    const backend = new SimulatedBackend({ bootMs: 20, consoleIntervalMs: 50 });
    const config = create(VmConfigSchema, { cpu: { vcpuCount: 1 }, memory: { sizeBytes: 256n * 1024n * 1024n }, boot: { kernelPath: kernel } });
    return { backend, config, cleanup: () => backend.close() };
  },
  { processes: false, timeoutMs: 5000, bootMarker: "simulated console: booted" },
);
