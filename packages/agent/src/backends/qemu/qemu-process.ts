import { spawn } from "node:child_process";
import { openSync, closeSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { processState } from "../../process-state.js";

/**
 * Starting, recognising and measuring QEMU processes. A QEMU is spawned detached in its
 * own session so that it outlives the agent; while the agent that spawned it lives, Node
 * reaps it and reports its exit status; an adopted one (left by an earlier agent) is
 * not our child, so its end is seen through its QMP socket closing plus a pid check.
 */

/** How a QEMU process ended, as far as we can know. */
export interface QemuExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** A QEMU we spawned: its pid and a promise of its exit status. */
export interface SpawnedQemu {
  readonly pid: number;
  readonly exited: Promise<QemuExit>;
}

/**
 * Spawns `binary args` detached, stdout and stderr appended to `logFile`; `inherit`
 * descriptors become QEMU's fds 3, 4, ... in order.
 */
export function spawnQemu(binary: string, args: readonly string[], logFile: string, inherit: readonly number[] = []): Promise<SpawnedQemu> {
  const log = openSync(logFile, "a");
  try {
    const child = spawn(binary, args, { detached: true, stdio: ["ignore", log, log, ...inherit] });
    const exited = new Promise<QemuExit>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
    return new Promise((resolve, reject) => {
      child.once("error", reject);
      child.once("spawn", () => {
        // Unref so the agent may exit while the guest runs; Node still reaps the child.
        child.unref();
        resolve({ pid: child.pid ?? 0, exited });
      });
    });
  } finally {
    closeSync(log);
  }
}

/** Whether `pid` is a live (not zombie) process whose command line contains `needle`. */
export async function isQemuProcess(pid: number, needle: string): Promise<boolean> {
  try {
    const [cmdline, stat] = await Promise.all([readFile(`/proc/${pid}/cmdline`, "utf8"), readFile(`/proc/${pid}/stat`, "utf8")]);
    return processState(stat) !== "Z" && cmdline.split("\0").includes(needle);
  } catch {
    return false;
  }
}

/** Reads a pid file; undefined when absent or not a number. */
export async function readPidFile(file: string): Promise<number | undefined> {
  const text = await readFile(file, "utf8").catch(() => "");
  const pid = Number.parseInt(text.trim(), 10);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/** CPU time used (ms) and resident memory (bytes) of a process. */
export interface ProcessUsage {
  readonly cpuMs: number;
  readonly rssBytes: bigint;
}

const TICKS_PER_SECOND = 100; // USER_HZ on Linux, fixed by the kernel ABI.

/** Reads /proc/<pid>/stat (utime+stime) and /proc/<pid>/status (VmRSS); undefined once gone. */
export async function processUsage(pid: number): Promise<ProcessUsage | undefined> {
  try {
    const [stat, status] = await Promise.all([readFile(`/proc/${pid}/stat`, "utf8"), readFile(`/proc/${pid}/status`, "utf8")]);
    // Fields after the command name, which is in parentheses and may contain spaces.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]);
    const rssKiB = /^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1];
    return { cpuMs: (ticks * 1000) / TICKS_PER_SECOND, rssBytes: BigInt(rssKiB ?? "0") * 1024n };
  } catch {
    return undefined;
  }
}

/** Words for an exit status: "exit code 1", "signal SIGKILL". */
export function describeExit(exit: QemuExit): string {
  if (exit.signal) return `signal ${exit.signal}`;
  return `exit code ${exit.code ?? "unknown"}`;
}

/** Sends SIGKILL if the process is still there. */
export function killHard(pid: number): void {
  try {
    process.kill(pid, "SIGKILL");
  } catch {
    // Already gone.
  }
}

