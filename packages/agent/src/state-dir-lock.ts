import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs";
import { join } from "node:path";
import { QuantixError } from "@quantix/core";
import { processState } from "./process-state.js";

/** The lock file in an agent's state directory. */
export const STATE_DIR_LOCK = "agent.lock";

/**
 * Takes the agent's exclusive hold on its state directory. Two agents on one directory
 * would both re-adopt the same VMs and fight over them, so the second refuses to start.
 * The lock is a file created with O_EXCL holding the owner's pid (flock needs native
 * code). A lock whose pid is gone, a zombie, or a process other than Node (a reused
 * pid) was left by an agent that died: it is taken over. Returns the release.
 */
export function lockStateDir(dir: string): () => void {
  const lock = join(dir, STATE_DIR_LOCK);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fd = openSync(lock, "wx", 0o600);
      writeSync(fd, String(process.pid));
      closeSync(fd);
      return () => {
        if (read(lock) === String(process.pid)) unlinkSync(lock);
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const holder = Number(read(lock));
      if (Number.isInteger(holder) && holder > 0 && holder !== process.pid && liveNode(holder)) {
        throw new QuantixError("failed_precondition", `VMCP_STATE_DIR ${dir} is in use by another agent (pid ${holder}); stop it, or give this agent its own VMCP_STATE_DIR`);
      }
      // Left by an agent that died (a crash, SIGKILL), or half-written: take it over.
      try {
        unlinkSync(lock);
      } catch {
        // Another starting agent removed it first; the next attempt decides.
      }
    }
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

/** Whether `pid` runs (not a zombie) and is a Node process. */
function liveNode(pid: number): boolean {
  try {
    if (processState(readFileSync(`/proc/${pid}/stat`, "utf8")) === "Z") return false;
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").includes("node");
  } catch {
    return false;
  }
}
