import type { Rejection } from "./filters.js";

/**
 * One sentence saying why no node fits, one clause per reason with its node count, most
 * common first (then alphabetical, so the text is stable): "0/3 nodes fit: 2 insufficient
 * memory (need 8192 MiB, largest free 4096 MiB), 1 tainted maintenance:NoSchedule".
 */
export function explain(total: number, rejections: readonly Rejection[]): string {
  if (total === 0) return "0/0 nodes fit: there are no nodes";
  const groups = new Map<string, number>();
  let mem: { n: number; need: number; largest: number } | undefined;
  let cpu: { n: number; need: number; largest: number } | undefined;
  for (const r of rejections) {
    switch (r.kind) {
      case "memory":
        mem = { n: (mem?.n ?? 0) + 1, need: r.needMib, largest: Math.max(mem?.largest ?? 0, r.freeMib) };
        break;
      case "cpu":
        cpu = { n: (cpu?.n ?? 0) + 1, need: r.needVcpus, largest: Math.max(cpu?.largest ?? 0, r.freeVcpus) };
        break;
      case "other":
        groups.set(r.text, (groups.get(r.text) ?? 0) + 1);
        break;
      default: {
        const never: never = r;
        throw new Error(`unknown rejection ${String(never)}`);
      }
    }
  }
  if (mem) groups.set(`insufficient memory (need ${mem.need} MiB, largest free ${mem.largest} MiB)`, mem.n);
  if (cpu) groups.set(`insufficient CPU (need ${cpu.need} vCPU${cpu.need === 1 ? "" : "s"}, largest free ${cpu.largest})`, cpu.n);
  const clauses = [...groups].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)).map(([text, n]) => `${n} ${text}`);
  return `0/${total} nodes fit: ${clauses.join(", ")}`;
}
