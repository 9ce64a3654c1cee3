import { create } from "@bufbuild/protobuf";
import { VmMetricsSchema, type VmMetrics } from "@quantix/api/gen/vmm/v1/vm_pb.js";
import type { BackendVmInfo } from "../backend.js";

/**
 * A backend's measurements as vmm.v1 VmMetrics. What the backend does not measure stays
 * absent (the optional fields), so a reader never mistakes "unknown" for zero.
 */
export function toVmMetrics(m: BackendVmInfo["metrics"]): VmMetrics {
  return create(VmMetricsSchema, {
    cpuUsagePercent: m.cpuUsagePercent,
    memoryUsageBytes: m.memoryUsageBytes,
    uptimeSeconds: m.uptimeSeconds,
    ...(m.cpuSeconds !== undefined ? { cpuSeconds: m.cpuSeconds } : {}),
    ...(m.block ? { blockReadBytes: m.block.readBytes, blockWriteBytes: m.block.writeBytes, blockReadOps: m.block.readOps, blockWriteOps: m.block.writeOps } : {}),
  });
}
