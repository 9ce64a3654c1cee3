import { linkSync, readFileSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { QuantixError } from "@quantix/core";
import { hasExited, processStartTime, processState } from "./process-state.js";

/** The lock file in an agent's state directory. */
export const STATE_DIR_LOCK = "agent.lock";

/**
 * Takes the agent's exclusive hold on its state directory. Two agents on one directory
 * would both re-adopt the same VMs and fight over them, so the second refuses to start.
 * The lock is a file holding the owner's pid and start time (flock needs native code); it
 * appears with its content in one step (written aside, then hard-linked into place,
 * which fails if it exists), so a starting agent never reads it half-written. A lock
 * whose process is gone, has exited (a zombie not yet reaped) or started at another time
 * (a reused pid) was left by an agent that died: it is taken over. Returns the release.
 */
export function lockStateDir(dir: string): () => void {
  const lock = join(dir, STATE_DIR_LOCK);
  const owner = `${process.pid} ${processStartTime(read("/proc/self/stat"))}`.trim();
  const aside = `${lock}.${process.pid}`;
  writeFileSync(aside, owner, { mode: 0o600 });
  try {
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        linkSync(aside, lock);
        return () => {
          if (read(lock) === owner) unlinkSync(lock);
        };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
        const [pid, start] = read(lock).split(" ");
        const holder = Number(pid);
        if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && holds(holder, start)) {
          throw new QuantixError("failed_precondition", `VMCP_STATE_DIR ${dir} is in use by another agent (pid ${holder}); stop it, or give this agent its own VMCP_STATE_DIR`);
        }
        // Left by an agent that died (a crash, SIGKILL): take it over.
        try {
          unlinkSync(lock);
        } catch {
          // Another starting agent removed it first; the next attempt decides.
        }
      }
    }
  } finally {
    unlinkSync(aside);
  }
  throw new QuantixError("failed_precondition", `VMCP_STATE_DIR ${dir}: its lock file ${STATE_DIR_LOCK} could not be taken; retry`);
}

function read(file: string): string {
  try {
    return readFileSync(file, "utf8").trim();
  } catch {
    return "";
  }
}

/**
 * Whether the process a lock names still holds it: it runs (not a zombie) and started
 * when the lock says. A lock of an older release names only a pid: then a Node process
 * with that pid is taken as its holder.
 */
function holds(pid: number, start: string | undefined): boolean {
  const stat = read(`/proc/${pid}/stat`);
  if (stat === "" || hasExited(processState(stat))) return false;
  if (start !== undefined) return processStartTime(stat) === start;
  return read(`/proc/${pid}/cmdline`).includes("node");
}
