import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { loadavg } from "node:os";

/** One line of the table; `data` keeps the raw numbers for the JSON file. */
export interface Row {
  readonly row: string;
  readonly ours: string;
  readonly baseline: string;
  readonly ratio: string;
  readonly target: string;
  readonly met: string;
  readonly data: Record<string, unknown>;
}

/** A target on the ratio ours/baseline, or on an absolute value. */
export interface Target {
  readonly op: ">=" | "<=" | "=";
  readonly value: number;
  /** What the target constrains, e.g. "ratio" or "ms". */
  readonly on: "ratio" | "value";
  readonly unit?: string;
}

/** Formats a number with thousands separators and `digits` decimals. */
export const num = (v: number, digits = 0): string =>
  Number.isFinite(v) ? v.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits }) : "n/a";

const check = (v: number, t: Target): boolean => (t.op === ">=" ? v >= t.value : t.op === "<=" ? v <= t.value : v === t.value);
const describe = (t: Target): string => `${t.op === "=" ? "=" : t.op === ">=" ? "≥" : "≤"} ${t.on === "ratio" ? t.value.toFixed(2) : num(t.value)}${t.unit ? ` ${t.unit}` : ""}`;

/** A row comparing ours with a baseline measured in the same run: ratio = ours / baseline. */
export function compare(row: string, ours: number, baseline: number, fmt: (v: number) => string, baselineName: string, target?: Target, extra: Record<string, unknown> = {}): Row {
  const ratio = ours / baseline;
  const judged = target?.on === "ratio" ? ratio : ours;
  return {
    row,
    ours: fmt(ours),
    baseline: `${fmt(baseline)} (${baselineName})`,
    ratio: Number.isFinite(ratio) ? ratio.toFixed(2) : "n/a",
    target: target ? describe(target) : "",
    met: target ? (check(judged, target) ? "yes" : "NO") : "",
    data: { ours, baseline, baselineName, ratio, target, ...extra },
  };
}

/** A row with an absolute number and no baseline (machine recorded with the run). */
export function absolute(row: string, ours: number, fmt: (v: number) => string, target?: Target, extra: Record<string, unknown> = {}): Row {
  return { row, ours: fmt(ours), baseline: "—", ratio: "—", target: target ? describe(target) : "", met: target ? (check(ours, target) ? "yes" : "NO") : "", data: { ours, target, ...extra } };
}

/** A row for something not measurable in this build, with the reason. */
export const notAvailable = (row: string, reason: string): Row => ({ row, ours: `n/a: ${reason}`, baseline: "—", ratio: "—", target: "", met: "", data: { ours: null, reason } });

const COLUMNS = ["row", "ours", "baseline", "ratio", "target", "met"] as const;

/** The table as fixed-width text. */
export function formatTable(rows: readonly Row[]): string {
  const width = COLUMNS.map((c) => Math.max(c.length, ...rows.map((r) => r[c].length)));
  const line = (cells: readonly string[]) => cells.map((c, i) => (i === 0 || i === 2 ? c.padEnd(width[i]!) : c.padStart(width[i]!))).join("  ").trimEnd();
  return [line(COLUMNS), line(width.map((w) => "-".repeat(w))), ...rows.map((r) => line(COLUMNS.map((c) => r[c])))].join("\n");
}

/** What the numbers were measured on. */
export function machine(): Record<string, unknown> {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  return {
    node: process.version,
    cpuModel: /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown",
    cores: cpuinfo.split("\n").filter((l) => l.startsWith("processor")).length,
    loadAverageAtStart: loadavg(),
    git: gitState(),
  };
}

/** The commit measured, and whether packages/ had uncommitted changes (the server is edited concurrently). */
function gitState(): { commit: string; dirtyPackages: boolean } | undefined {
  try {
    const git = (...args: string[]) => execFileSync("git", args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
    return { commit: git("rev-parse", "HEAD"), dirtyPackages: git("status", "--porcelain", "--", "packages") !== "" };
  } catch {
    return undefined;
  }
}
