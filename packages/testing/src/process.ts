import { spawn, type ChildProcess } from "node:child_process";
import { readFileSync } from "node:fs";
import http from "node:http";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

/** The repository's root. */
export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));

/** The control plane's TypeScript entry point run through tsx, as the tests run it by default. */
export const TSX_CONTROL_PLANE: readonly string[] = ["--import", "tsx", "packages/server/src/main.ts"];

/**
 * What `npm start` runs after its build (package.json `scripts.start`, `node <args>`): the
 * arguments to give node, from the repository's root. The one definition of the compiled
 * command: the footprint bench and the compiled-start test read it here.
 */
export function npmStartArgs(): string[] {
  return npmScriptArgs("start");
}

/** The node arguments of package.json's script `name` (`node <args>`): `start` (the control plane) or `agent`, both compiled. */
export function npmScriptArgs(name: "start" | "agent"): string[] {
  const script = (JSON.parse(readFileSync(`${REPO_ROOT}package.json`, "utf8")) as { scripts: Record<string, string | undefined> }).scripts[name] ?? "";
  const [program, ...args] = script.trim().split(/\s+/);
  if (program !== "node" || args.length === 0) throw new Error(`package.json's ${name} script is not "node <args>": ${script}`);
  return args;
}

/** How a child process ended. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A control plane running as its own process (`packages/server/src/main.ts`, or compiled: `npmStartArgs()`). */
export interface ControlPlaneProcess {
  child: ChildProcess;
  /** Resolves with the URL from the "control plane listening" log line. */
  url: Promise<string>;
  exited: Promise<Exit>;
  stderr(): string;
  /** The last part of standard output (JSON log lines). */
  stdout(): string;
  /** SIGKILLs the process if it still runs, and waits for it to be gone. */
  kill(signal?: NodeJS.Signals): Promise<Exit>;
}

/**
 * Starts the real control plane binary with only the given QUANTIX_* settings (none are
 * inherited from the test's environment); `nodeArgs` says how (through tsx by default).
 */
export function spawnControlPlane(quantixEnv: Record<string, string>, nodeArgs: readonly string[] = TSX_CONTROL_PLANE): ControlPlaneProcess {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("QUANTIX_") && k !== "NODE_TEST_CONTEXT") env[k] = v;
  const child = spawn(process.execPath, nodeArgs, { cwd: REPO_ROOT, env: { ...env, ...quantixEnv }, stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  let out = "";
  child.stderr!.setEncoding("utf8").on("data", (d: string) => (err = (err + d).slice(-20_000)));
  const exited = new Promise<Exit>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  const url = new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on("line", (line) => {
      out = (out + line + "\n").slice(-50_000);
      try {
        const rec = JSON.parse(line) as { msg?: string; url?: string };
        if (rec.msg === "control plane listening" && rec.url) resolve(rec.url);
      } catch {
        // Not a log line; only the JSON lines matter here.
      }
    });
    void exited.then((e) => reject(new Error(`the control plane exited (${e.code ?? e.signal}) before listening: ${err}`)));
  });
  url.catch(() => undefined);
  return {
    child,
    url,
    exited,
    stderr: () => err,
    stdout: () => out,
    async kill(signal: NodeJS.Signals = "SIGKILL") {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
}

/** Rejects when `p` takes longer than `ms`. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms)));
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A child process whose output is collected, for tests of a command's exit code and messages. */
export interface RunningProcess {
  readonly child: ChildProcess;
  /** Resolves with the exit code (null after a signal). */
  readonly exited: Promise<number | null>;
  out(): string;
  err(): string;
}

/** Runs `node <args>` with extra environment, collecting stdout and stderr. */
export function runNode(args: readonly string[], env: Record<string, string> = {}, cwd?: string): RunningProcess {
  const child = spawn(process.execPath, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"], ...(cwd ? { cwd } : {}) });
  let out = "";
  let err = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, exited, out: () => out, err: () => err };
}

/**
 * Which process answered `GET /_/health` on a new connection (its `pid`): with
 * QUANTIX_WORKERS, which worker the kernel handed the connection to.
 */
export async function healthPid(url: string): Promise<number> {
  return ((await healthOf(url)) as { pid: number }).pid;
}

/** The body of `GET /_/health` on a new connection (so, with QUANTIX_WORKERS, from whichever worker took it). */
export function healthOf(url: string): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = http.get(`${url}/_/health`, { agent: false }, (res) => {
      let body = "";
      res.setEncoding("utf8").on("data", (d: string) => (body += d));
      res.on("end", () => resolve(JSON.parse(body) as unknown));
    });
    req.on("error", reject);
    req.setTimeout(5000, () => req.destroy(new Error("no answer to /_/health within 5 s")));
  });
}
