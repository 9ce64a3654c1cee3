import { setTimeout as sleep } from "node:timers/promises";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ResourceUsageSchema, VmStatus_State as State, type ResourceUsage, type VirtualMachine } from "@quantix/api/gen/Quantixkvm/compute/v1/vm_pb.js";
import { invalidArgument, notFound, QuantixError, type Clock, type HypervisorMetrics, type Store, type VmUsageSample, VM_KIND } from "@quantix/core";
import type { NodeDrivers } from "../hypervisor/node-drivers.js";
import { requireId } from "./vm-service.js";

/** Dependencies of StreamMetrics. */
export interface VmMetricsStreamDeps {
  readonly store: Store;
  readonly drivers: NodeDrivers;
  readonly clock: Clock;
}

const DEFAULT_INTERVAL_SEC = 5;
const MAX_INTERVAL_SEC = 60;
const MiB = 1048576n;
/** States in which a VM has no process to measure: the stream refuses to start, or ends. */
const ENDED: readonly State[] = [State.PENDING, State.PROVISIONING, State.STOPPED, State.SUSPENDED, State.CRASHED, State.ERROR];
/** Powers in which the node's sample describes a live process. */
const LIVE = new Set(["running", "paused", "stopping"]);

/**
 * StreamMetrics: samples one VM's usage through its node's hypervisor every interval
 * (the first sample at once). The VM is read from the store before each sample, so the
 * stream follows a migrated VM to its new node and ends OK once the VM is deleted or has
 * stopped; a client cancel ends it OK too. A sampling error (node unreachable, agent
 * failure) ends it with that error's code.
 */
export class VmMetricsStream {
  constructor(private readonly deps: VmMetricsStreamDeps) {}

  async *stream(vmId: string, intervalSec: number, signal: AbortSignal): AsyncGenerator<ResourceUsage> {
    requireId("vm_id", vmId);
    const intervalMs = intervalOf(intervalSec) * 1000;
    const first = await this.deps.store.of(VM_KIND).get(vmId);
    if (!first) throw notFound("VM", vmId);
    const state = first.status?.state ?? State.UNKNOWN;
    if (ENDED.includes(state)) {
      throw new QuantixError("failed_precondition", `VM '${vmId}' is ${State[state]}: usage is streamed only while it runs or is paused`);
    }
    this.metricsOf(first);
    let due = this.deps.clock.now();
    let vm = first;
    let previous: { cpuSeconds: number; atMs: number } | undefined;
    while (!signal.aborted) {
      let sample: VmUsageSample;
      // The sample's time is when the node was asked: how long its answer takes (a busy
      // host, a slow link) is not part of the interval the stream keeps.
      const asked = this.deps.clock.now();
      try {
        sample = await this.metricsOf(vm).sample(vmId);
      } catch (err) {
        if (signal.aborted) return;
        const now = await this.deps.store.of(VM_KIND).get(vmId);
        if (!now || ENDED.includes(now.status?.state ?? State.UNKNOWN)) return;
        // The VM moved between the store read and the sample (a migration completed): follow it.
        if (err instanceof QuantixError && err.code === "not_found" && now.status?.nodeId !== vm.status?.nodeId) {
          vm = now;
          continue;
        }
        throw err;
      }
      if (signal.aborted) return;
      // A process that is not live yet (starting) or any more (the store lags) is not sampled.
      if (LIVE.has(sample.power)) {
        const at = asked;
        // CPU percent over this stream's own interval, from the process's CPU seconds: the
        // node reports an average since the process started, shared by every reader.
        const cpuPercent = intervalPercent(previous, sample, at, vcpusOf(vm)) ?? sample.cpuPercent;
        if (sample.cpuSeconds !== undefined) previous = { cpuSeconds: sample.cpuSeconds, atMs: at };
        yield toResourceUsage({ ...sample, ...(cpuPercent !== undefined ? { cpuPercent } : {}) }, at);
      }
      due += intervalMs;
      const wait = due - this.deps.clock.now();
      if (wait < 0) due = this.deps.clock.now(); // fell behind (slow node): no burst to catch up
      else if (!(await sleep(wait, true, { signal }).catch(() => false))) return;
      const next = await this.deps.store.of(VM_KIND).get(vmId);
      if (!next || ENDED.includes(next.status?.state ?? State.UNKNOWN)) return;
      vm = next;
    }
  }

  /** The sampler of the VM's node, or the reason there is none. */
  private metricsOf(vm: VirtualMachine): HypervisorMetrics {
    const nodeId = vm.status?.nodeId ?? "";
    if (!nodeId) throw new QuantixError("failed_precondition", `VM '${vm.id}' is not placed on a node, so it has no usage to measure; start it first`);
    const driver = this.deps.drivers.get(nodeId);
    if (!driver) throw new QuantixError("unavailable", `VM '${vm.id}' has no reachable node (node '${nodeId}' is not connected); retry when its node is READY`);
    if (!driver.capabilities.has("metrics") || !driver.metrics) {
      throw new QuantixError("failed_precondition", `VM '${vm.id}' runs on a ${driver.kind} hypervisor, which lacks the 'metrics' capability`);
    }
    return driver.metrics;
  }
}

/** The VM's vCPUs (cores × sockets × threads). */
function vcpusOf(vm: VirtualMachine): number {
  const c = vm.spec?.cpu;
  return Math.max(1, (c?.cores ?? 1) * Math.max(1, c?.sockets ?? 1) * Math.max(1, c?.threadsPerCore ?? 1));
}

/** CPU used between two samples as a percentage of the VM's vCPUs (0-100), or undefined. */
export function intervalPercent(previous: { cpuSeconds: number; atMs: number } | undefined, sample: VmUsageSample, atMs: number, vcpus: number): number | undefined {
  if (!previous || sample.cpuSeconds === undefined || atMs <= previous.atMs || sample.cpuSeconds < previous.cpuSeconds) return undefined;
  const percent = ((sample.cpuSeconds - previous.cpuSeconds) / ((atMs - previous.atMs) / 1000) / vcpus) * 100;
  return Math.min(100, Math.max(0, percent));
}

/** interval_sec: 1-60 seconds, 0 meaning 5. */
export function intervalOf(intervalSec: number): number {
  if (intervalSec === 0) return DEFAULT_INTERVAL_SEC;
  if (!Number.isInteger(intervalSec) || intervalSec < 1 || intervalSec > MAX_INTERVAL_SEC) {
    throw invalidArgument([{ field: "interval_sec", reason: "OUT_OF_RANGE", description: `must be between 1 and ${MAX_INTERVAL_SEC} (0 means ${DEFAULT_INTERVAL_SEC}), got ${intervalSec}` }]);
  }
  return intervalSec;
}

/**
 * A node's sample as ResourceUsage. What the node did not measure is named in
 * not_measured and left 0; NICs are never measured by a node's hypervisor today.
 */
export function toResourceUsage(s: VmUsageSample, sampledAtMs: number): ResourceUsage {
  const notMeasured: string[] = [];
  if (s.cpuPercent === undefined) notMeasured.push("cpu_usage_percent");
  if (s.memoryBytes === undefined) notMeasured.push("memory_used_mib");
  if (!s.block) notMeasured.push("disk_read_bytes", "disk_write_bytes");
  notMeasured.push("network_rx_bytes", "network_tx_bytes");
  if (s.cpuSeconds === undefined) notMeasured.push("cpu_seconds");
  if (!s.block) notMeasured.push("disk_read_ops", "disk_write_ops");
  return create(ResourceUsageSchema, {
    cpuUsagePercent: s.cpuPercent ?? 0,
    memoryUsedMib: s.memoryBytes !== undefined ? (s.memoryBytes + MiB / 2n) / MiB : 0n,
    diskReadBytes: s.block?.readBytes ?? 0n,
    diskWriteBytes: s.block?.writeBytes ?? 0n,
    sampledAt: timestampFromMs(sampledAtMs),
    cpuSeconds: s.cpuSeconds ?? 0,
    diskReadOps: s.block?.readOps ?? 0n,
    diskWriteOps: s.block?.writeOps ?? 0n,
    notMeasured,
  });
}
