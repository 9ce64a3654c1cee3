import { execFile, execFileSync, spawn } from "node:child_process";
import { readFileSync, watch } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { promisify } from "node:util";
import type { HostNetworkState } from "@quantix/agent";
import { ROOT } from "./proc.js";
import { nowMs } from "./stats.js";

/**
 * Hosts simulated as network namespaces for `--only=network`: each has an underlay veth
 * with one address (what the agent reports as its VXLAN source), and every name starts
 * with the bench's prefix so teardown removes exactly what the bench made.
 */

const execFileP = promisify(execFile);

/** The bench's namespace and link prefix (names stay within 15 characters). */
export const NET_PREFIX = `qxb${(process.pid & 0xfff).toString(16)}`;

/** Runs a command (argv, no shell) and returns its stdout; throws with its stderr. */
export const sh = (args: readonly string[], input?: string): string =>
  execFileSync(args[0]!, args.slice(1), { stdio: ["pipe", "pipe", "pipe"], timeout: 20_000, ...(input !== undefined ? { input } : {}) }).toString();

/** The same, asynchronously (commands timed by the baselines run this way, as the agent runs its own). */
export const run = async (args: readonly string[], input?: string): Promise<string> => {
  if (input === undefined) return (await execFileP(args[0]!, args.slice(1), { timeout: 20_000 })).stdout;
  return new Promise((resolve, reject) => {
    const child = execFile(args[0]!, args.slice(1), { timeout: 20_000 }, (err, stdout, stderr) => (err ? reject(new Error(`${args.join(" ")}: ${stderr || err.message}`)) : resolve(stdout)));
    child.stdin?.end(input);
  });
};

/** Namespaces made by this run, deleted by {@link removeNamespaces}. */
const made: string[] = [];

/** A namespace with lo up and, given `underlay`, a veth pair inside it carrying that address (/24). */
export function makeNamespace(name: string, underlay?: string): string {
  sh(["ip", "netns", "add", name]);
  made.push(name);
  sh(["ip", "-n", name, "link", "set", "lo", "up"]);
  if (underlay !== undefined) {
    sh(["ip", "-n", name, "link", "add", `${name}u`, "type", "veth", "peer", "name", `${name}v`]);
    sh(["ip", "-n", name, "addr", "add", `${underlay}/24`, "dev", `${name}u`]);
    for (const l of [`${name}u`, `${name}v`]) sh(["ip", "-n", name, "link", "set", l, "up"]);
  }
  return name;
}

/**
 * Hosts whose underlays reach each other: a bridge in namespace `<prefix>ul` and one veth
 * per host, so VXLAN between them is real. Returns the hosts' namespaces.
 */
export function makeJoinedHosts(prefix: string, addresses: readonly string[]): string[] {
  const hub = makeNamespace(`${prefix}ul`);
  sh(["ip", "-n", hub, "link", "add", "br0", "type", "bridge"]);
  sh(["ip", "-n", hub, "link", "set", "br0", "up"]);
  return addresses.map((addr, i) => {
    const ns = makeNamespace(`${prefix}h${i}`);
    sh(["ip", "-n", ns, "link", "add", "ul0", "type", "veth", "peer", "name", `p${i}`, "netns", hub]);
    sh(["ip", "-n", ns, "addr", "add", `${addr}/24`, "dev", "ul0"]);
    sh(["ip", "-n", ns, "link", "set", "ul0", "up"]);
    sh(["ip", "-n", hub, "link", "set", `p${i}`, "master", "br0", "up"]);
    return ns;
  });
}

/** Deletes every namespace this run made (their links go with them). */
export function removeNamespaces(): void {
  for (const ns of made.splice(0).reverse()) {
    try {
      sh(["ip", "netns", "del", ns]);
    } catch {
      // already gone
    }
  }
}

/** A TestAgent's data plane state file (written before it touches the host). */
export const readHostState = (stateDir: string): HostNetworkState => JSON.parse(readFileSync(join(stateDir, "network", "state.json"), "utf8")) as HostNetworkState;

/** The forwarding check of `tap-probe.py`, started (and ready) in a namespace before the clock starts. */
export interface TapProbe {
  /** Gives the probe the port to play; resolves with the CLOCK_MONOTONIC time (ms, as {@link nowMs}) of the first answer through the TAP. */
  check(tap: string, mac: string, ip: string, target: string): Promise<number>;
  kill(): void;
}

export async function startTapProbe(ns: string): Promise<TapProbe> {
  const child = spawn("ip", ["netns", "exec", ns, "python3", join(ROOT, "bench", "lib", "tap-probe.py")], { stdio: ["pipe", "pipe", "pipe"] });
  let err = "";
  child.stderr.on("data", (b: Buffer) => (err += b.toString()));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async (what: string): Promise<string> => {
    const r = await lines.next();
    if (r.done) throw new Error(`the TAP probe in ${ns} ended before ${what}: ${err.trim()}`);
    return r.value;
  };
  if ((await next("it was ready")) !== "ready") throw new Error(`the TAP probe in ${ns} did not start: ${err.trim()}`);
  return {
    async check(tap, mac, ip, target) {
      child.stdin.end(`${tap} ${mac} ${ip} ${target}\n`);
      const line = await next("it answered");
      const m = /^ok (\d+)$/.exec(line);
      if (!m) throw new Error(`the TAP probe in ${ns} (${tap}): ${line} ${err.trim()}`);
      // process.hrtime (nowMs) and Python's time.monotonic_ns read the same CLOCK_MONOTONIC.
      return Number(BigInt(m[1]!)) / 1e6;
    },
    kill: () => child.kill("SIGKILL"),
  };
}

/** Polls `fn` until it returns a value, or throws naming `what` after `ms`. */
export async function poll<T>(fn: () => Promise<T | undefined>, what: string, ms = 60_000, everyMs = 100): Promise<T> {
  const deadline = nowMs() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (nowMs() > deadline) throw new Error(`${what}: not within ${ms / 1000} s`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** `nft monitor new rules` in a namespace: when each rule change is committed, without loading the host by polling. */
export interface NftMonitor {
  /** Resolves with {@link nowMs} at the first announced line (since the monitor started, or since line `from`: see {@link mark}) that matches `re`. */
  waitFor(re: RegExp, ms?: number, from?: number): Promise<number>;
  /** How many lines it has announced so far (for a later waitFor to look only at what comes next). */
  mark(): number;
  kill(): void;
}

/**
 * `what` is `rules` by default (nft 1.0.6's monitor dies, "Memory allocation failure",
 * on some of the host agent's bridge set element events); `new` (rules, sets and their
 * elements) watches a router's table, whose maps are plain addresses.
 */
export async function startNftMonitor(ns: string, what: "rules" | "all" = "rules"): Promise<NftMonitor> {
  const child = spawn("ip", ["netns", "exec", ns, "nft", "monitor", "new", ...(what === "rules" ? ["rules"] : [])], { stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr.on("data", (b: Buffer) => (err += b.toString()));
  const seen: { line: string; at: number }[] = [];
  const waiters = new Set<() => void>();
  createInterface({ input: child.stdout }).on("line", (line) => {
    seen.push({ line, at: nowMs() });
    for (const w of waiters) w();
  });
  const mon: NftMonitor = {
    waitFor(re, ms = 60_000, from = 0) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const hit = seen.slice(from).find((s) => re.test(s.line));
          if (!hit) return;
          waiters.delete(check);
          clearTimeout(timer);
          resolve(hit.at);
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`nft monitor in ${ns}: no line matching ${re} within ${ms / 1000} s (${seen.length} lines seen${err ? `; nft said: ${err.trim()}` : ""}${child.exitCode !== null ? `; it exited with ${child.exitCode}` : ""})`));
        }, ms);
        waiters.add(check);
        check();
      });
    },
    mark: () => seen.length,
    kill: () => child.kill("SIGKILL"),
  };
  // Subscribed once it reports a change to a table of our own (no table of the agent's is touched).
  const marker = `qxbmon${process.pid}`;
  const ready = mon.waitFor(new RegExp(`^add rule inet ${marker} c accept$`), 10_000);
  ready.catch(() => undefined);
  for (let i = 0; i < 100; i++) {
    sh(["ip", "netns", "exec", ns, "nft", `add table inet ${marker}; add chain inet ${marker} c; add rule inet ${marker} c accept; delete table inet ${marker}`]);
    if (await Promise.race([ready.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 50))])) return mon;
  }
  child.kill("SIGKILL");
  throw new Error(`nft monitor in ${ns} did not start: ${err.trim()}`);
}

/**
 * Calls `check` on each change of an agent's state file (`file`: the networks' or the routers'; inotify on its directory; the
 * agent renames the file into place before it touches the host) until it returns true,
 * and records {@link nowMs} then. Event-driven, so it costs the agents (in this process) nothing while idle.
 */
export function watchStateFile(stateDir: string, check: (text: string) => boolean, file: "state.json" | "routers.json" = "state.json"): { readonly at: () => number; stop(): void } {
  const dir = join(stateDir, "network");
  let at = NaN;
  const look = () => {
    if (!Number.isNaN(at)) return;
    try {
      if (check(readFileSync(join(dir, file), "utf8"))) at = nowMs();
    } catch {
      // between the agent's write and rename: the next event
    }
  };
  const w = watch(dir, look);
  look();
  return { at: () => at, stop: () => w.close() };
}
