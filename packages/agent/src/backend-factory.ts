import { mkdir } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { QuantixError } from "@quantix/core";
import type { Backend } from "./backend.js";
import { vmSocketPrefix, type AgentConfig } from "./config.js";

/**
 * Builds the configured backend. Each real backend is imported only when chosen, so an
 * agent for one hypervisor loads nothing of the others.
 */
export async function createBackend(config: AgentConfig): Promise<Backend> {
  switch (config.backend) {
    case "simulated": {
      const { SimulatedBackend } = await import("./backends/simulated/simulated-backend.js");
      return new SimulatedBackend({ bootMs: config.simBootMs });
    }
    case "cloud-hypervisor": {
      const { createCloudHypervisorBackend } = await import("./backends/cloud-hypervisor/cloud-hypervisor-backend.js");
      return createCloudHypervisorBackend({ binary: config.chBinary, stateDir: join(config.stateDir, "cloud-hypervisor"), socketPrefix: await socketPrefix(config.chEndpoint), imageDirs: allowedDirs(config) });
    }
    case "firecracker": {
      const { createFirecrackerBackend } = await import("./backends/firecracker/firecracker-backend.js");
      return createFirecrackerBackend({ binary: config.fcBinary, stateDir: join(config.stateDir, "firecracker"), socketPrefix: await socketPrefix(config.fcEndpoint), imageDirs: allowedDirs(config) });
    }
    case "qemu": {
      const { QemuBackend } = await import("./backends/qemu/qemu-backend.js");
      return new QemuBackend({ stateDir: join(resolve(config.stateDir), "qemu"), binary: config.qemuBinary, kvm: config.qemuKvm, imageDirs: allowedDirs(config), ...qemuNetns(config) });
    }
    default: {
      const never: never = config.backend;
      throw new QuantixError("invalid_argument", `unknown backend ${String(never)}`);
    }
  }
}

/** The per-VM socket prefix of a validated CH/FC endpoint; creates its directory (owner only) if missing. */
async function socketPrefix(endpoint: string): Promise<string> {
  const prefix = vmSocketPrefix(endpoint);
  if (prefix === undefined) throw new QuantixError("invalid_argument", `malformed VMM endpoint '${endpoint}'`);
  await mkdir(dirname(prefix), { recursive: true, mode: 0o700 });
  return prefix;
}

/** Where a VM's host files may lie: each real backend hands its VMM only files it opened and checked against these (host-files.ts). */
function allowedDirs(config: AgentConfig): string[] {
  return [...config.imageDirs, ...config.sharedDirs];
}

/** QEMU runs in the data plane's namespace when the agent programs one (VMCP_NETWORK=on with VMCP_NETWORK_NETNS): its TAPs are there. */
function qemuNetns(config: AgentConfig): { netns?: string } {
  return config.network && config.networkNetns !== undefined ? { netns: config.networkNetns } : {};
}
