import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { until } from "./until.js";

/** A process whose parent never reaps it: once killed, it stays a zombie until `release()`. */
export interface UnreapedProcess {
  readonly pid: number;
  /** Everything it has written to stdout so far. */
  out(): string;
  /** SIGKILLs it and waits until it is a zombie (state Z in /proc/<pid>/stat). */
  killToZombie(): Promise<void>;
  /** Ends its parent, so that init reaps it. */
  release(): void;
}

/**
 * Runs `command args...` as the child of a shell that then execs `sleep`, which never
 * waits for children: killed, the command becomes a zombie (what a SIGKILLed server is
 * until its supervisor reaps it) and stays one while the test looks. The arguments are
 * passed to the shell as positional parameters, never spliced into its script.
 */
export async function spawnUnreaped(command: string, args: readonly string[], env: Record<string, string> = {}): Promise<UnreapedProcess> {
  const parent = spawn("sh", ["-c", '"$@" & echo "unreaped-pid $!"; exec sleep 3600', "sh", command, ...args], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "inherit"] });
  let out = "";
  parent.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  const pid = await until(() => {
    const m = /unreaped-pid (\d+)/.exec(out);
    return m ? Number(m[1]) : undefined;
  }, "the unreaped process's pid", 10_000);
  return {
    pid,
    out: () => out,
    async killToZombie() {
      process.kill(pid, "SIGKILL");
      await until(() => (stateOf(pid) === "Z" ? true : undefined), `pid ${pid} to become a zombie`, 10_000);
    },
    release() {
      parent.kill("SIGKILL");
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Already gone.
      }
    },
  };
}

/** The state letter in /proc/<pid>/stat, or undefined when there is no such process. */
function stateOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
  } catch {
    return undefined;
  }
}
