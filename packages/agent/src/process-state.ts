import { readFileSync } from "node:fs";

/** The state letter of a /proc/<pid>/stat line ("R", "S", "Z" for a zombie, ...); the name in parentheses may hold anything. */
export function processState(stat: string): string {
  return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
}

/**
 * Whether `pid` runs. A zombie (exited, not yet reaped by its parent) counts as gone,
 * although it still answers `process.kill(pid, 0)`: supervision that asked that way would
 * wait forever on a VMM that has already ended.
 */
export function isProcessAlive(pid: number): boolean {
  try {
    return processState(readFileSync(`/proc/${pid}/stat`, "utf8")) !== "Z";
  } catch {
    return false;
  }
}
