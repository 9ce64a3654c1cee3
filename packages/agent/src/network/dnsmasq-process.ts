import { spawn } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { replacePrivateFile } from "../private-file.js";
import { endProcess, pidFileProcess } from "../process-state.js";
import { join } from "node:path";
import type { HostExec } from "./host-exec.js";
import { DNSMASQ_FILES } from "./dnsmasq-config.js";

/** What the supervisor observed of a network's dnsmasq. */
export interface DnsmasqState {
  readonly pid: number;
  /** Empty when it runs; otherwise why not (its last log lines). */
  readonly problem: string;
}

/**
 * Supervises one network's dnsmasq: starts it (inside the agent's namespace), reloads it
 * with SIGHUP when only its files change, restarts it when its arguments change, and
 * adopts the one a previous agent started (found by its pid file and checked by its
 * command line, which names this network's directory). It runs detached, so DHCP and
 * DNS keep answering while the agent restarts.
 */
export class DnsmasqSupervisor {
  constructor(
    private readonly h: HostExec,
    /** The network's directory (derived from its id). */
    readonly dir: string,
    private readonly binary = "dnsmasq",
  ) {}

  /** Makes dnsmasq run with `args` and these files; returns what it observed. */
  async ensure(args: readonly string[], files: { hosts: string; opts: string; addnHosts: string }): Promise<DnsmasqState> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    let changed = false;
    changed = (await this.write(DNSMASQ_FILES.hosts, files.hosts)) || changed;
    changed = (await this.write(DNSMASQ_FILES.opts, files.opts)) || changed;
    changed = (await this.write(DNSMASQ_FILES.addnHosts, files.addnHosts)) || changed;
    const argsText = JSON.stringify(args);
    const sameArgs = (await readFile(join(this.dir, "args.json"), "utf8").catch(() => "")) === argsText;
    let pid = await this.runningPid();
    if (pid && !sameArgs) {
      await this.kill(pid);
      pid = 0;
    }
    if (pid) {
      if (changed) process.kill(pid, "SIGHUP");
      return { pid, problem: "" };
    }
    await writeFile(join(this.dir, "args.json"), argsText);
    return this.start(args);
  }

  /** The running dnsmasq's pid, 0 when none (for status). */
  async observe(): Promise<DnsmasqState> {
    const pid = await this.runningPid();
    if (pid) return { pid, problem: "" };
    const log = await readFile(join(this.dir, DNSMASQ_FILES.log), "utf8").catch(() => "");
    return { pid: 0, problem: `dnsmasq is not running${lastLines(log)}` };
  }

  /** Stops dnsmasq and removes the network's directory. */
  async remove(): Promise<void> {
    const pid = await this.runningPid();
    if (pid) await this.kill(pid);
    await rm(this.dir, { recursive: true, force: true });
  }

  /** Stops dnsmasq, keeping its files (tests ending an agent). */
  async stop(): Promise<void> {
    const pid = await this.runningPid();
    if (pid) await this.kill(pid);
  }

  private async start(args: readonly string[]): Promise<DnsmasqState> {
    await rm(join(this.dir, DNSMASQ_FILES.pid), { force: true });
    const logFd = openSync(join(this.dir, DNSMASQ_FILES.log), "w");
    const [bin, argv] = this.h.argv(this.binary, args);
    const child = spawn(bin, argv, { detached: true, stdio: ["ignore", logFd, logFd] });
    closeSync(logFd);
    let exited: string | undefined;
    child.on("exit", (code, signal) => (exited = signal ?? String(code)));
    child.on("error", (err) => (exited = err.message));
    child.unref();
    // Up when its pid file names it (written once its sockets are bound), or failed.
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      if (exited !== undefined) break;
      const pid = await this.runningPid();
      if (pid) return { pid, problem: "" };
      await new Promise((r) => setTimeout(r, 25));
    }
    const log = await readFile(join(this.dir, DNSMASQ_FILES.log), "utf8").catch(() => "");
    if (exited === undefined) child.kill("SIGKILL");
    return { pid: 0, problem: `dnsmasq did not start (${exited === undefined ? "no pid file after 5 s" : `exited: ${exited}`})${lastLines(log)}` };
  }

  private runningPid(): Promise<number> {
    // Another process reusing the pid lacks our hostsfile argument.
    return pidFileProcess(join(this.dir, DNSMASQ_FILES.pid), (argv) => argv.includes(`--dhcp-hostsfile=${join(this.dir, DNSMASQ_FILES.hosts)}`));
  }

  private async kill(pid: number): Promise<void> {
    await endProcess(pid, async () => (await this.runningPid()) === pid);
    await rm(join(this.dir, DNSMASQ_FILES.pid), { force: true });
  }

  /** Writes a file atomically when its content differs; returns whether it did. */
  private async write(name: string, content: string): Promise<boolean> {
    const path = join(this.dir, name);
    if ((await readFile(path, "utf8").catch(() => undefined)) === content) return false;
    await replacePrivateFile(path, content);
    return true;
  }
}

function lastLines(log: string): string {
  const lines = log.trim().split("\n").filter((l) => l !== "").slice(-3);
  return lines.length ? `: ${lines.join(" | ")}` : "";
}
