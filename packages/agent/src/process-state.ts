import { readFileSync } from "node:fs";

/** The state letter of a /proc/<pid>/stat line ("R", "S", "Z" for a zombie, ...); the name in parentheses may hold anything. */
export function processState(stat: string): string {
  return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
}

/** The start time of a /proc/<pid>/stat line (field 22, clock ticks after boot): a later process given the same pid has another. */
export function processStartTime(stat: string): string {
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? "";
}

/** Whether a /proc/<pid>/stat state letter is a process that has exited: a zombie (Z) or one being torn down (X, x). */
export function hasExited(state: string): boolean {
  return state === "Z" || state === "X" || state === "x";
}

/**
 * Whether `pid` runs. A zombie (exited, not yet reaped by its parent) counts as gone,
 * although it still answers `process.kill(pid, 0)`: supervision that asked that way would
 * wait forever on a VMM that has already ended.
 */
export function isProcessAlive(pid: number): boolean {
  try {
    return !hasExited(processState(readFileSync(`/proc/${pid}/stat`, "utf8")));
  } catch {
    return false;
  }
}
