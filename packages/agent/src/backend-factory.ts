import { join, resolve } from "node:path";
import { QuantixError } from "@quantix/core";
import type { Backend } from "./backend.js";
import type { AgentConfig } from "./config.js";

/**
 * Builds the configured backend. Each real backend is imported only when chosen, so an
 * agent for one hypervisor loads nothing of the others.
 */
export async function createBackend(config: AgentConfig): Promise<Backend> {
  switch (config.backend) {
    case "simulated": {
      const { SimulatedBackend } = await import("./backends/simulated/simulated-backend.js");
      return new SimulatedBackend();
    }
    case "cloud-hypervisor": {
      const { createCloudHypervisorBackend } = await import("./backends/cloud-hypervisor/cloud-hypervisor-backend.js");
      return createCloudHypervisorBackend({ binary: "cloud-hypervisor", stateDir: join(config.stateDir, "cloud-hypervisor") });
    }
    case "firecracker": {
      const { createFirecrackerBackend } = await import("./backends/firecracker/firecracker-backend.js");
      return createFirecrackerBackend({ binary: "firecracker", stateDir: join(config.stateDir, "firecracker") });
    }
    case "qemu": {
      const { QemuBackend } = await import("./backends/qemu/qemu-backend.js");
      return new QemuBackend({ stateDir: join(resolve(config.stateDir), "qemu"), binary: config.qemuBinary, kvm: config.qemuKvm });
    }
    default: {
      const never: never = config.backend;
      throw new QuantixError("invalid_argument", `unknown backend ${String(never)}`);
    }
  }
}
