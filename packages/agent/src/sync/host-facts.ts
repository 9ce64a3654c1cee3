import { readFile, readdir, statfs } from "node:fs/promises";
import * as os from "node:os";
import { create } from "@bufbuild/protobuf";
import { readHostIo, type HostIoFiles } from "./host-io.js";
import { CpuInfoSchema, MemoryInfoSchema, NetworkDeviceSchema, NodeUsageSchema, StorageDeviceSchema, type CpuInfo, type MemoryInfo, type NetworkDevice, type NodeUsage, type StorageDevice } from "@quantix/api/gen/Quantixkvm/compute/v1/node_pb.js";

/** What the control plane needs to know about this host's hardware. */
export interface HostFacts {
  readonly cpu: CpuInfo;
  readonly memory: MemoryInfo;
  readonly storage: StorageDevice[];
  readonly network: NetworkDevice[];
  readonly managementIp: string;
}

async function text(path: string): Promise<string> {
  return readFile(path, "utf8").catch(() => "");
}

/** Reads CPU, memory, disks and NICs from /proc, /sys, statfs and os. */
export async function readHostFacts(stateDir: string): Promise<HostFacts> {
  const cpus = os.cpus();
  const cpuinfo = await text("/proc/cpuinfo");
  const field = (name: string) => new RegExp(`^${name}\\s*:\\s*(.*)$`, "m").exec(cpuinfo)?.[1]?.trim() ?? "";
  const sockets = new Set([...cpuinfo.matchAll(/^physical id\s*:\s*(\d+)/gm)].map((m) => m[1])).size || 1;
  const cores = Number(field("cpu cores")) || Math.max(1, Math.floor(cpus.length / sockets));
  const siblings = Number(field("siblings")) || cores;
  const cpu = create(CpuInfoSchema, {
    model: (field("model name") || cpus[0]?.model || "unknown").slice(0, 255),
    sockets,
    coresPerSocket: cores,
    threadsPerCore: Math.max(1, Math.round(siblings / cores)),
    logicalCpus: cpus.length,
    frequencyMhz: Math.round(Number(field("cpu MHz")) || cpus[0]?.speed || 0),
    features: field("flags").split(/\s+/).filter((f) => ["vmx", "svm", "avx2", "aes", "sse4_2"].includes(f)),
  });
  const meminfo = await text("/proc/meminfo");
  const hugeKb = Number(/^Hugetlb:\s+(\d+)/m.exec(meminfo)?.[1] ?? 0);
  const memory = create(MemoryInfoSchema, { totalMib: BigInt(Math.floor(os.totalmem() / 2 ** 20)), hugepagesMib: BigInt(Math.floor(hugeKb / 1024)) });
  return { cpu, memory, storage: await disks(stateDir), network: await nics(), managementIp: managementIp() };
}

/** Whole disks from /proc/partitions (not partitions, loops or RAM disks); statfs of the state dir when there are none. */
async function disks(stateDir: string): Promise<StorageDevice[]> {
  const out: StorageDevice[] = [];
  for (const line of (await text("/proc/partitions")).split("\n").slice(2)) {
    const [, , blocks, name] = line.trim().split(/\s+/);
    if (!name || !blocks || /^(loop|ram|zram|dm-|sr)/.test(name)) continue;
    if ((await text(`/sys/class/block/${name}/partition`)) !== "") continue;
    const rotational = (await text(`/sys/class/block/${name}/queue/rotational`)).trim() === "1";
    out.push(create(StorageDeviceSchema, {
      name,
      model: (await text(`/sys/class/block/${name}/device/model`)).trim(),
      sizeGib: BigInt(Math.floor(Number(blocks) / 2 ** 20)),
      type: name.startsWith("nvme") ? "nvme" : rotational ? "hdd" : "ssd",
    }));
  }
  if (out.length === 0) {
    const s = await statfs(stateDir);
    out.push(create(StorageDeviceSchema, { name: "state-dir", sizeGib: BigInt(Math.floor((s.blocks * s.bsize) / 2 ** 30)), type: "filesystem" }));
  }
  return out;
}

/** Network devices from /sys/class/net, without loopback and virtual ones the agent makes (tap, veth). */
async function nics(): Promise<NetworkDevice[]> {
  const names = await readdir("/sys/class/net").catch(() => Object.keys(os.networkInterfaces()));
  const out: NetworkDevice[] = [];
  for (const name of names.sort()) {
    if (name === "lo" || /^(tap|veth)/.test(name)) continue;
    const num = async (f: string) => Math.max(0, Number((await text(`/sys/class/net/${name}/${f}`)).trim()) || 0);
    out.push(create(NetworkDeviceSchema, { name, macAddress: (await text(`/sys/class/net/${name}/address`)).trim(), speedMbps: await num("speed"), mtu: await num("mtu") }));
  }
  return out;
}

/** The first non-internal IPv4 address, else loopback. */
function managementIp(): string {
  for (const addrs of Object.values(os.networkInterfaces())) {
    for (const a of addrs ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  }
  return "127.0.0.1";
}

/** CPU time counters from the first line of /proc/stat. */
export interface CpuTimes {
  readonly busy: number;
  readonly total: number;
}

/** Reads the aggregate CPU counters; undefined when /proc/stat cannot be read. */
export async function readCpuTimes(file = "/proc/stat"): Promise<CpuTimes | undefined> {
  const nums = ((await text(file)).split("\n")[0] ?? "").trim().split(/\s+/).slice(1).map(Number);
  if (nums.length < 4 || nums.some((n) => !Number.isFinite(n))) return undefined;
  const total = nums.reduce((a, b) => a + b, 0);
  const idle = (nums[3] ?? 0) + (nums[4] ?? 0);
  return { busy: total - idle, total };
}

/**
 * Host usage: CPU between the samples `prev` and `now`, memory, load, disk and network
 * counters now. What could not be measured (no earlier CPU sample, no time between the
 * two, an unreadable /proc file) is named in not_measured and left 0.
 */
export async function readUsage(prev: CpuTimes | undefined, now: CpuTimes | undefined, ioFiles?: HostIoFiles): Promise<NodeUsage> {
  const [meminfo, hostIo] = await Promise.all([text("/proc/meminfo"), readHostIo(ioFiles)]);
  const notMeasured: string[] = [];
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, "m").exec(meminfo)?.[1] ?? NaN);
  const dt = prev && now ? now.total - prev.total : 0;
  const cpu = prev && now && dt > 0 ? ((now.busy - prev.busy) / dt) * 100 : undefined;
  if (cpu === undefined) notMeasured.push("cpu_usage_percent");
  const total = kb("MemTotal");
  const available = kb("MemAvailable");
  if (!Number.isFinite(total)) notMeasured.push("memory_total_mib");
  if (!Number.isFinite(total) || !Number.isFinite(available)) notMeasured.push("memory_used_mib");
  if (!hostIo.disk) notMeasured.push("disk_read_bytes", "disk_write_bytes");
  if (!hostIo.network) notMeasured.push("network_rx_bytes", "network_tx_bytes");
  const [load1 = 0, load5 = 0, load15 = 0] = os.loadavg();
  return create(NodeUsageSchema, {
    cpuUsagePercent: cpu === undefined ? 0 : Math.round(cpu * 10) / 10,
    memoryUsedMib: Number.isFinite(total - available) ? BigInt(Math.floor(Math.max(0, total - available) / 1024)) : 0n,
    memoryTotalMib: Number.isFinite(total) ? BigInt(Math.floor(total / 1024)) : 0n,
    loadAverage1m: load1,
    loadAverage5m: load5,
    loadAverage15m: load15,
    diskReadBytes: hostIo.disk?.readBytes ?? 0n,
    diskWriteBytes: hostIo.disk?.writeBytes ?? 0n,
    networkRxBytes: hostIo.network?.rxBytes ?? 0n,
    networkTxBytes: hostIo.network?.txBytes ?? 0n,
    notMeasured,
  });
}
