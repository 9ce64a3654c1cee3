import { spawn } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { isProcessAlive } from "../../process-state.js";

/** How a VMM process ended, as far as the agent could see. */
export interface VmmExit {
  /** The exit code, when the agent is the process's parent and saw it. */
  readonly code?: number | undefined;
  readonly signal?: string | undefined;
}

/** A running VMM process. */
export interface VmmProcess {
  readonly pid: number;
  /** Calls `onExit` once when the process is gone; returns a function that stops watching. */
  watch(onExit: (exit: VmmExit) => void): () => void;
}

/**
 * Starts `binary` detached in its own session, so it outlives the agent (an agent
 * restart must not stop guests). Its stdout and stderr go to `logFile`, not to a pipe,
 * because a pipe would break when the agent exits. No shell is involved.
 */
export function spawnVmm(binary: string, args: readonly string[], logFile: string, pollMs = 100, inherit: readonly number[] = []): VmmProcess {
  const log = openSync(logFile, "a", 0o600);
  let childExit: VmmExit | undefined;
  try {
    // `inherit` descriptors become the VMM's fds 3, 4, ... in order.
    const child = spawn(binary, args, { detached: true, stdio: ["ignore", log, log, ...inherit] });
    if (child.pid === undefined) throw new Error(`could not start ${binary}`);
    child.on("error", () => undefined);
    child.once("exit", (code, signal) => (childExit = { code: code ?? undefined, signal: signal ?? undefined }));
    child.unref();
    return adoptVmm(child.pid, pollMs, () => childExit);
  } finally {
    closeSync(log);
  }
}

/**
 * Watches a VMM process the agent may not be the parent of (re-adopted after a restart):
 * liveness is polled from /proc, which is all a non-parent can see.
 */
export function adoptVmm(pid: number, pollMs = 100, exitInfo: () => VmmExit | undefined = () => undefined): VmmProcess {
  return {
    pid,
    watch(onExit) {
      const timer = setInterval(() => {
        const seen = exitInfo();
        if (seen || !isProcessAlive(pid)) {
          clearInterval(timer);
          onExit(seen ?? {});
        }
      }, pollMs);
      timer.unref();
      return () => clearInterval(timer);
    },
  };
}

/**
 * Whether `pid` is the VMM serving `apiSocket`: its command line names that socket. Guards
 * against a pid from a pid file that the kernel has since given to another process.
 */
export function isVmmFor(pid: number, apiSocket: string): boolean {
  try {
    const args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    return args.includes(apiSocket) || args.includes(`path=${apiSocket}`);
  } catch {
    return false;
  }
}

/** Sends `signal` to `pid`, ignoring a process that is already gone. */
export function signalVmm(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone: nothing to stop.
  }
}

/** The resident memory of `pid` in bytes, or 0 when unknown. */
export function residentBytes(pid: number): bigint {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? BigInt(m[1]) * 1024n : 0n;
  } catch {
    return 0n;
  }
}
