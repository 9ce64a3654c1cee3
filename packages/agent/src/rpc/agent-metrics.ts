import { PrometheusText } from "@quantix/core";
import type { Backend, BackendVmInfo, BackendVmState } from "../backend.js";

const STATES: readonly BackendVmState[] = ["created", "running", "paused", "shutdown", "crashed"];

/**
 * The agent's Prometheus exposition: VMs by state, and per VM what the backend measures
 * (CPU seconds, resident memory, block bytes and operations). A series the backend does
 * not measure is left out rather than reported as 0.
 */
export async function renderAgentMetrics(backend: Backend): Promise<string> {
  const vms = await backend.listVMs();
  const out = new PrometheusText();
  out.family("quantix_agent_vms", "gauge", "VMs on this host by state.");
  for (const state of STATES) out.sample("quantix_agent_vms", { state }, vms.filter((v) => v.state === state).length);
  const per = (name: string, type: "counter" | "gauge", help: string, value: (m: BackendVmInfo["metrics"]) => number | bigint | undefined) => {
    const rows = vms.flatMap((vm) => {
      const v = vm.state === "running" || vm.state === "paused" ? value(vm.metrics) : undefined;
      return v === undefined ? [] : [{ vmId: vm.vmId, v }];
    });
    out.family(name, type, help);
    for (const r of rows) out.sample(name, { vm_id: r.vmId }, r.v);
  };
  per("quantix_agent_vm_cpu_seconds_total", "counter", "CPU time the VM's hypervisor process has used since it started.", (m) => m.cpuSeconds);
  per("quantix_agent_vm_rss_bytes", "gauge", "Resident memory of the VM's hypervisor process.", (m) => m.memoryUsageBytes);
  per("quantix_agent_vm_block_read_bytes_total", "counter", "Bytes read from the VM's disks since its hypervisor started.", (m) => m.block?.readBytes);
  per("quantix_agent_vm_block_write_bytes_total", "counter", "Bytes written to the VM's disks since its hypervisor started.", (m) => m.block?.writeBytes);
  per("quantix_agent_vm_block_read_ops_total", "counter", "Read operations on the VM's disks since its hypervisor started.", (m) => m.block?.readOps);
  per("quantix_agent_vm_block_write_ops_total", "counter", "Write operations on the VM's disks since its hypervisor started.", (m) => m.block?.writeOps);
  return out.toString();
}
