import { readFile, access } from "node:fs/promises";

/** Disk and network byte counters of the host since it booted. */
export interface HostIo {
  readonly diskReadBytes: bigint;
  readonly diskWriteBytes: bigint;
  readonly networkRxBytes: bigint;
  readonly networkTxBytes: bigint;
}

const SECTOR_BYTES = 512n; // /proc/diskstats counts 512-byte sectors whatever the device's own size.

/**
 * Sums /proc/diskstats over whole disks (a partition's I/O is already in its disk's line;
 * loop, RAM and device-mapper devices sit on top of real disks) and /proc/net/dev over
 * every interface but loopback.
 */
export async function readHostIo(): Promise<HostIo> {
  const [diskstats, netdev] = await Promise.all([readFile("/proc/diskstats", "utf8").catch(() => ""), readFile("/proc/net/dev", "utf8").catch(() => "")]);
  let diskReadBytes = 0n, diskWriteBytes = 0n;
  for (const line of diskstats.split("\n")) {
    const f = line.trim().split(/\s+/);
    const name = f[2];
    if (!name || f.length < 10 || /^(loop|ram|zram|dm-|sr|md)/.test(name) || !/^[a-z0-9]+$/.test(name)) continue;
    if (await access(`/sys/class/block/${name}/partition`).then(() => true, () => false)) continue;
    diskReadBytes += BigInt(f[5]!) * SECTOR_BYTES;
    diskWriteBytes += BigInt(f[9]!) * SECTOR_BYTES;
  }
  let networkRxBytes = 0n, networkTxBytes = 0n;
  for (const line of netdev.split("\n").slice(2)) {
    const [name, rest] = line.split(":");
    if (!name || rest === undefined || name.trim() === "lo") continue;
    const f = rest.trim().split(/\s+/);
    networkRxBytes += BigInt(f[0] ?? "0");
    networkTxBytes += BigInt(f[8] ?? "0");
  }
  return { diskReadBytes, diskWriteBytes, networkRxBytes, networkTxBytes };
}
