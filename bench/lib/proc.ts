import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { npmScriptArgs } from "@quantix/testing";
import { sleep } from "./stats.js";

/** The repository root (bench/..): every process runs from here. */
export const ROOT = new URL("../..", import.meta.url).pathname;
/** Where run artefacts live; server logs go to LOG_DIR. */
export const RESULTS_DIR = join(ROOT, "bench", "results");
export const LOG_DIR = join(RESULTS_DIR, "logs");

/** A child process pinned to one core whose stdout and stderr go to a log file. */
export interface Server {
  readonly name: string;
  readonly pid: number;
  readonly port: number;
  readonly url: string;
  readonly logFile: string;
  stop(): Promise<void>;
}

const live = new Set<ChildProcess>();
process.on("exit", () => {
  for (const c of live) c.kill("SIGKILL");
});

/** Our two programs and the package.json scripts users run them with: compiled JavaScript (scripts/build-packages.ts), not tsx. */
const COMPILED: Readonly<Record<string, "start" | "agent">> = { "packages/server/src/main.ts": "start", "packages/agent/src/main.ts": "agent" };
let built = false;

/**
 * Starts `node --import tsx <script> <args>` as startNode does; the control plane and the
 * agent as `npm start` and `npm run agent` run them (their compiled JavaScript, built once
 * per bench run by `npm run build:packages`), so the bench measures what users run, not
 * tsx's loader (its keepNames, for one, names every function a call makes).
 */
export function startServer(name: string, script: string, args: readonly string[], env: Record<string, string>, cpu: number | string = 0): Promise<Server> {
  const compiled = COMPILED[script];
  if (!compiled) return startNode(name, ["--import", "tsx", script, ...args], env, cpu);
  if (!built) {
    const r = spawnSync("npm", ["run", "-s", "build:packages"], { cwd: ROOT, stdio: ["ignore", "ignore", "inherit"] });
    if (r.status !== 0) throw new Error(`npm run build:packages failed (${r.status ?? r.signal}); the bench runs the compiled control plane and agent`);
    built = true;
  }
  return startNode(name, [...npmScriptArgs(compiled), ...args], env, cpu);
}

/**
 * Starts `node <nodeArgs>` under `taskset -c <cpu>` and waits until its log
 * shows the port: our server's "control plane listening" (or the agent's "agent listening")
 * line, or a baseline's {"port":N}.
 * Output goes to a file descriptor, never to a pipe that nobody drains.
 */
export async function startNode(name: string, nodeArgs: readonly string[], env: Record<string, string>, cpu: number | string = 0): Promise<Server> {
  // Another bench run may have removed the log directory when it finished.
  mkdirSync(LOG_DIR, { recursive: true });
  const logFile = join(LOG_DIR, `${name}.log`);
  const fd = openSync(logFile, "w");
  const child = spawn("taskset", ["-c", String(cpu), process.execPath, ...nodeArgs], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ["ignore", fd, fd],
  });
  closeSync(fd);
  live.add(child);
  let exited = false;
  child.on("exit", () => {
    exited = true;
    live.delete(child);
  });
  const deadline = Date.now() + 90_000;
  let port = 0;
  while (port === 0) {
    if (exited) throw new Error(`${name} exited during start; see ${logFile}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`${name} did not report its port within 90 s; see ${logFile}`);
    }
    await sleep(50);
    port = findPort(readFileSync(logFile, "utf8"));
  }
  // taskset execs node, so the child's pid is the server's own (its /proc/<pid>/status is the server's).
  const pid = child.pid!;
  return {
    name,
    pid,
    port,
    url: `http://127.0.0.1:${port}`,
    logFile,
    async stop() {
      if (exited) return;
      const gone = new Promise<void>((r) => child.once("exit", () => r()));
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 5000);
      await gone;
      clearTimeout(t);
    },
  };
}

function findPort(log: string): number {
  for (const line of log.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      const o = JSON.parse(line) as { msg?: string; url?: string; port?: number };
      if (typeof o.port === "number") return o.port;
      if ((o.msg === "control plane listening" || o.msg === "agent listening") && o.url) return Number(new URL(o.url).port);
    } catch {
      // A partly written line: read it again on the next poll.
    }
  }
  return 0;
}

/** The resident set size of a process in bytes (VmRSS in /proc/<pid>/status). */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** Whether a program is on PATH. */
export function hasProgram(name: string): boolean {
  return spawnSync("sh", ["-c", `command -v ${name}`], { stdio: "ignore" }).status === 0;
}

/**
 * CPU seconds a process has used (user + system), with those of its children it has waited
 * for (`/proc/<pid>/stat` utime, stime, cutime, cstime; clock ticks of 1/100 s). The
 * difference over a span is what a step cost in CPU, whatever else the machine runs.
 */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the command name in parentheses (which may hold spaces): state is field 3.
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const ticks = [11, 12, 13, 14].reduce((sum, i) => sum + Number(f[i]), 0);
  return ticks / 100;
}

/**
 * Time a process's threads have run on a CPU, in ms, to the nanosecond the scheduler keeps
 * (`/proc/<pid>/task/<tid>/schedstat`'s first field, summed over threads); cpuSeconds'
 * clock ticks are too coarse for one call. Exact for a process that is not running when
 * read (the kernel updates a running thread's figure at its ticks).
 */
export function runMs(pid: number): number {
  let ns = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, "utf8").split(" ")[0]);
    } catch {
      // A thread that ended between the listing and the read.
    }
  }
  return ns / 1e6;
}

/** CPU seconds of the children this process has waited for (cutime + cstime of /proc/self/stat). */
export function childCpuSeconds(): number {
  const stat = readFileSync("/proc/self/stat", "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[13]) + Number(f[14])) / 100;
}
