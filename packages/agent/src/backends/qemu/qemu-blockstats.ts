import type { BlockStats } from "../../backend.js";
import type { QmpClient } from "./qmp-client.js";

/** One device of QEMU's `query-blockstats` answer (only the fields read here). */
interface BlockstatsEntry {
  readonly stats?: { readonly rd_bytes?: number; readonly wr_bytes?: number; readonly rd_operations?: number; readonly wr_operations?: number };
}

/**
 * Totals of QEMU's block statistics over every device the guest sees. Only the top-level
 * entries count: a device's `parent` (its format/protocol node) would count the same I/O
 * twice. Undefined when QMP does not answer (the caller then reports "not measured").
 */
export async function readBlockStats(qmp: QmpClient): Promise<BlockStats | undefined> {
  let entries: BlockstatsEntry[];
  try {
    entries = await qmp.execute<BlockstatsEntry[]>("query-blockstats", undefined, 2_000);
  } catch {
    return undefined;
  }
  let readBytes = 0n, writeBytes = 0n, readOps = 0n, writeOps = 0n;
  for (const e of entries) {
    readBytes += BigInt(e.stats?.rd_bytes ?? 0);
    writeBytes += BigInt(e.stats?.wr_bytes ?? 0);
    readOps += BigInt(e.stats?.rd_operations ?? 0);
    writeOps += BigInt(e.stats?.wr_operations ?? 0);
  }
  return { readBytes, writeBytes, readOps, writeOps };
}
