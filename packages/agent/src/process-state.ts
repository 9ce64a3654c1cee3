import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";

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

/**
 * The process a pid file names, when it runs and `ours` recognises its command line (a
 * later process given the same pid is someone else's); 0 otherwise.
 */
export async function pidFileProcess(file: string, ours: (argv: readonly string[]) => boolean): Promise<number> {
  const pid = Number((await readFile(file, "utf8").catch(() => "")).trim());
  if (!Number.isInteger(pid) || pid <= 1 || !isProcessAlive(pid)) return 0;
  const argv = (await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "")).split("\0");
  return ours(argv) ? pid : 0;
}

/** Ends a daemon: SIGTERM, then SIGKILL when `still()` holds after `graceMs`. Nothing when it is already gone. */
export async function endProcess(pid: number, still: () => Promise<boolean>, graceMs = 3000): Promise<void> {
  try {
    process.kill(pid, "SIGTERM");
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (Date.now() < deadline && (await still())) await new Promise((r) => setTimeout(r, 20));
  if (await still()) process.kill(pid, "SIGKILL");
}
