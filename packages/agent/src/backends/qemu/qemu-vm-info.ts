import type { Clock } from "@quantix/core";
import type { BackendVmInfo } from "../../backend.js";
import { readBlockStats } from "./qemu-blockstats.js";
import { processUsage } from "./qemu-process.js";
import type { QemuRuntime } from "./qemu-runtime.js";
import type { VmRecord } from "./qemu-vm-dir.js";

/**
 * What getVMInfo reports for one QEMU VM: its state and usage, measured from the live
 * process (QMP and /proc) when one runs, and from the record otherwise (a record that
 * says "running" without a process is a crash nobody saw).
 */
export async function qemuVmInfo(vmId: string, record: VmRecord, rt: QemuRuntime | undefined, clock: Clock, measure = true): Promise<BackendVmInfo> {
  const base = { vmId, config: record.config, crashReason: record.crashReason };
  if (!rt) return { ...base, state: record.state === "running" ? "crashed" : record.state, metrics: { cpuUsagePercent: 0, memoryUsageBytes: 0n, uptimeSeconds: 0n } };
  const now = clock.now();
  const startedAtMs = record.startedAtMs ?? now;
  // State only: no /proc reads and no query-blockstats, which waits behind a QEMU busy starting.
  if (!measure) return { ...base, state: rt.paused ? "paused" : "running", pid: rt.pid, startedAtMs, metrics: { cpuUsagePercent: 0, memoryUsageBytes: 0n, uptimeSeconds: BigInt(Math.max(0, Math.floor((now - startedAtMs) / 1000))) } };
  const [usage, block] = await Promise.all([processUsage(rt.pid), readBlockStats(rt.qmp)]);
  // The average since the process started: no state shared between readers, so /metrics
  // scrapes and several StreamMetrics do not disturb each other. A reader wanting the
  // percent over its own interval takes the difference of cpu_seconds.
  let cpu = 0;
  if (usage && now > startedAtMs) {
    const vcpus = Math.max(1, record.config.cpu?.vcpuCount ?? 1);
    cpu = Math.min(100, Math.max(0, (usage.cpuMs / (now - startedAtMs) / vcpus) * 100));
  }
  return {
    ...base,
    state: rt.paused ? "paused" : "running",
    pid: rt.pid,
    startedAtMs,
    metrics: {
      cpuUsagePercent: cpu,
      memoryUsageBytes: usage?.rssBytes ?? 0n,
      uptimeSeconds: BigInt(Math.max(0, Math.floor((now - startedAtMs) / 1000))),
      cpuSeconds: usage ? usage.cpuMs / 1000 : undefined,
      block,
    },
  };
}
