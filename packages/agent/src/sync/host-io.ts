import { readFile, access } from "node:fs/promises";

/**
 * Disk and network byte counters of the host since it booted. A pair is undefined when
 * its /proc file could not be read: unknown, never a made-up zero.
 */
export interface HostIo {
  readonly disk?: { readonly readBytes: bigint; readonly writeBytes: bigint };
  readonly network?: { readonly rxBytes: bigint; readonly txBytes: bigint };
}

/** Where the counters are read (tests point them elsewhere). */
export interface HostIoFiles {
  readonly diskstats: string;
  readonly netdev: string;
}

const PROC: HostIoFiles = { diskstats: "/proc/diskstats", netdev: "/proc/net/dev" };

const SECTOR_BYTES = 512n; // /proc/diskstats counts 512-byte sectors whatever the device's own size.

/**
 * Sums /proc/diskstats over whole disks (a partition's I/O is already in its disk's line;
 * loop, RAM and device-mapper devices sit on top of real disks) and /proc/net/dev over
 * every interface but loopback.
 */
export async function readHostIo(files: HostIoFiles = PROC): Promise<HostIo> {
  const [diskstats, netdev] = await Promise.all([readFile(files.diskstats, "utf8").catch(() => undefined), readFile(files.netdev, "utf8").catch(() => undefined)]);
  return {
    ...(diskstats !== undefined ? { disk: await diskBytes(diskstats) } : {}),
    ...(netdev !== undefined ? { network: networkBytes(netdev) } : {}),
  };
}

async function diskBytes(diskstats: string): Promise<{ readBytes: bigint; writeBytes: bigint }> {
  let readBytes = 0n, writeBytes = 0n;
  for (const line of diskstats.split("\n")) {
    const f = line.trim().split(/\s+/);
    const name = f[2];
    if (!name || f.length < 10 || /^(loop|ram|zram|dm-|sr|md)/.test(name) || !/^[a-z0-9]+$/.test(name)) continue;
    if (await access(`/sys/class/block/${name}/partition`).then(() => true, () => false)) continue;
    readBytes += BigInt(f[5]!) * SECTOR_BYTES;
    writeBytes += BigInt(f[9]!) * SECTOR_BYTES;
  }
  return { readBytes, writeBytes };
}

function networkBytes(netdev: string): { rxBytes: bigint; txBytes: bigint } {
  let rxBytes = 0n, txBytes = 0n;
  for (const line of netdev.split("\n").slice(2)) {
    const [name, rest] = line.split(":");
    if (!name || rest === undefined || name.trim() === "lo") continue;
    const f = rest.trim().split(/\s+/);
    rxBytes += BigInt(f[0] ?? "0");
    txBytes += BigInt(f[8] ?? "0");
  }
  return { rxBytes, txBytes };
}
