import { readFileSync } from "node:fs";

/**
 * Whether `pid` is a running process. A zombie (exited, not yet reaped by its parent)
 * still answers `process.kill(pid, 0)`, so tests that asked "did QEMU stop?" that way
 * could pass or hang on a process that had already ended; this reads the state letter of
 * /proc/<pid>/stat instead, as the agent's own supervision does.
 */
export function isProcessAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The state letter follows the parenthesised command name, which may itself contain ")".
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) !== "Z";
  } catch {
    return false;
  }
}
