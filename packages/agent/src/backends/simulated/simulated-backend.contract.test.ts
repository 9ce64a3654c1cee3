import { create } from "@bufbuild/protobuf";
import { VmConfigSchema } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import { backendContract } from "../backend.contract.js";
import { SimulatedBackend } from "./simulated-backend.js";

// The simulator runs no processes: the SIGKILL case is skipped by the contract itself,
// and its crash is covered by vm-manager.test.ts through simulateCrash().
backendContract(
  "simulated",
  async () => {
    const backend = new SimulatedBackend({ bootMs: 20, consoleIntervalMs: 50 });
    const config = create(VmConfigSchema, { cpu: { vcpuCount: 1 }, memory: { sizeBytes: 256n * 1024n * 1024n }, boot: { kernelPath: "/boot/vmlinuz" } });
    return { backend, config, cleanup: () => backend.close() };
  },
  { processes: false, timeoutMs: 5000, bootMarker: "simulated console: booted" },
);
