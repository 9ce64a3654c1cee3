import type { RpcMetrics } from "@quantix/rpc";
import { Counter, Gauge, Registry } from "prom-client";
import type { Backend, BackendVmInfo, BackendVmState } from "../backend.js";

const STATES: readonly BackendVmState[] = ["created", "running", "paused", "shutdown", "crashed"];

/**
 * The agent's Prometheus exposition: its RPCs (when `rpc` is given), VMs by state, and per
 * VM what the backend measures (CPU seconds, resident memory, block bytes and operations).
 * A series the backend does not measure is left out rather than reported as 0. The VM
 * families are built anew from one listing per scrape, so a VM that is gone leaves no series.
 */
export async function renderAgentMetrics(backend: Backend, rpc?: RpcMetrics): Promise<string> {
  const vms = await backend.listVMs();
  const registers = [new Registry()];
  const byState = new Gauge({ name: "quantix_agent_vms", help: "VMs on this host by state.", labelNames: ["state"], registers });
  for (const state of STATES) byState.set({ state }, vms.filter((v) => v.state === state).length);
  const per = (name: string, type: "counter" | "gauge", help: string, value: (m: BackendVmInfo["metrics"]) => number | bigint | undefined) => {
    const metric = type === "counter" ? new Counter({ name, help, labelNames: ["vm_id"], registers }) : new Gauge({ name, help, labelNames: ["vm_id"], registers });
    for (const vm of vms) {
      const v = vm.state === "running" || vm.state === "paused" ? value(vm.metrics) : undefined;
      if (v === undefined) continue;
      if (metric instanceof Counter) metric.inc({ vm_id: vm.vmId }, Number(v));
      else metric.set({ vm_id: vm.vmId }, Number(v));
    }
  };
  per("quantix_agent_vm_cpu_seconds_total", "counter", "CPU time the VM's hypervisor process has used since it started.", (m) => m.cpuSeconds);
  per("quantix_agent_vm_rss_bytes", "gauge", "Resident memory of the VM's hypervisor process.", (m) => m.memoryUsageBytes);
  per("quantix_agent_vm_block_read_bytes_total", "counter", "Bytes read from the VM's disks since its hypervisor started.", (m) => m.block?.readBytes);
  per("quantix_agent_vm_block_write_bytes_total", "counter", "Bytes written to the VM's disks since its hypervisor started.", (m) => m.block?.writeBytes);
  per("quantix_agent_vm_block_read_ops_total", "counter", "Read operations on the VM's disks since its hypervisor started.", (m) => m.block?.readOps);
  per("quantix_agent_vm_block_write_ops_total", "counter", "Write operations on the VM's disks since its hypervisor started.", (m) => m.block?.writeOps);
  return Registry.merge(rpc ? [rpc.registry, ...registers] : registers).metrics();
}
