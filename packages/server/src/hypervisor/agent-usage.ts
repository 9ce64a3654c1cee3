import type { Client } from "@connectrpc/connect";
import type { VmMetrics, VmService, VmState } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import type { HypervisorMetrics, ObservedPower, VmUsageSample } from "@quantix/core";
import type { AgentCall } from "./agent-migration.js";

/**
 * Usage sampling over an agent's vmm.v1 GetVmInfo, which measures on every call (QEMU:
 * the process's /proc CPU time and RSS, query-blockstats).
 */
export function agentMetrics(client: Client<typeof VmService>, call: AgentCall, powerOf: (state: VmState) => ObservedPower): HypervisorMetrics {
  return {
    async sample(vmId: string): Promise<VmUsageSample> {
      const info = await call(() => client.getVmInfo({ vmId }));
      return { power: powerOf(info.state), ...usageOf(info.metrics) };
    },
  };
}

/**
 * What a VmMetrics really measured. The agent's optional fields are absent when its
 * backend does not measure them; the two plain fields need a rule of their own:
 * cpu_usage_percent is derived from the process's CPU time, so it counts only beside
 * cpu_seconds (a backend without it sends a placeholder), and memory_usage_bytes is a
 * running process's resident set, never 0 when measured.
 */
export function usageOf(m: VmMetrics | undefined): Omit<VmUsageSample, "power"> {
  if (!m) return {};
  return {
    ...(m.cpuSeconds !== undefined ? { cpuSeconds: m.cpuSeconds, cpuPercent: m.cpuUsagePercent } : {}),
    ...(m.memoryUsageBytes > 0n ? { memoryBytes: m.memoryUsageBytes } : {}),
    ...(m.blockReadBytes !== undefined
      ? { block: { readBytes: m.blockReadBytes, writeBytes: m.blockWriteBytes ?? 0n, readOps: m.blockReadOps ?? 0n, writeOps: m.blockWriteOps ?? 0n } }
      : {}),
  };
}
