import { spawn } from "node:child_process";
import { median } from "./stats.js";

/** One h2load run's result. */
export interface H2loadResult {
  readonly reqPerSec: number;
  readonly seconds: number;
  readonly requests: number;
  readonly succeeded: number;
  readonly failed: number;
  readonly errored: number;
  /** Requests that did not end with a 2xx response (h2load checks HTTP status only). */
  readonly notOk: number;
}

/** What to load: a POST of one body to one URL. */
export interface H2loadTarget {
  readonly url: string;
  readonly bodyFile: string;
  readonly headers: Readonly<Record<string, string>>;
  /** HTTP/1.1 instead of h2c. */
  readonly h1?: boolean;
  readonly clients: number;
  readonly streams: number;
}

export const H2LOAD_INSTALL = "apt-get install -y --no-install-recommends nghttp2-client";

/** Saturation throughput of one target over several runs. */
export interface Saturation {
  /** The median of the runs' rates. */
  readonly reqPerSec: number;
  /** Non-2xx or unfinished requests over all runs. */
  readonly notOk: number;
  readonly runs: readonly H2loadResult[];
}

/**
 * Saturation throughput of targets compared with each other. Each gets a warm-up run of
 * `warmup` requests and a probe sized to last about a second; then `rounds` rounds run
 * every target in turn, each run sized from its probe to last about `seconds`, so that
 * drift in the machine's load hits all targets alike. The median run counts. Every run is
 * bounded in count (maxRequests) and in time.
 */
export async function saturateAll(targets: readonly H2loadTarget[], rounds = 3, seconds = 3, warmup = 3000, maxRequests = 2_000_000): Promise<Saturation[]> {
  const size = (r: H2loadResult, s: number) => Math.max(warmup, Math.min(maxRequests, Math.round(r.reqPerSec * s)));
  const sizes: number[] = [];
  for (const t of targets) {
    const warm = await h2load(t, warmup, 30_000);
    sizes.push(size(await h2load(t, size(warm, 1), 30_000), seconds));
  }
  const runs: H2loadResult[][] = targets.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (const [i, t] of targets.entries()) runs[i]!.push(await h2load(t, sizes[i]!, Math.max(30_000, seconds * 5000)));
  }
  return runs.map((rs) => ({ reqPerSec: median(rs.map((x) => x.reqPerSec)), notOk: rs.reduce((a, x) => a + x.notOk, 0), runs: rs }));
}

/** Runs h2load once, killing it after `timeoutMs`. */
export function h2load(t: H2loadTarget, n: number, timeoutMs: number): Promise<H2loadResult> {
  const args = ["-c", "1", "h2load", "-n", String(n), "-c", String(t.clients), "-m", String(t.streams), "-d", t.bodyFile];
  if (t.h1) args.push("--h1");
  for (const [k, v] of Object.entries(t.headers)) args.push("-H", `${k}: ${v}`);
  args.push(t.url);
  return new Promise((resolve, reject) => {
    const child = spawn("taskset", args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.setEncoding("utf8").on("data", (d: string) => (out += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (out += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      try {
        resolve(parse(out));
      } catch (err) {
        reject(new Error(`h2load exited ${code}: ${String(err)}\n${out.slice(-2000)}`));
      }
    });
  });
}

function parse(out: string): H2loadResult {
  const fin = /finished in ([\d.]+)(m?s), ([\d.]+) req\/s/.exec(out);
  const req = /requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored/.exec(out);
  const codes = /status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/.exec(out);
  if (!fin || !req || !codes) throw new Error("unexpected h2load output");
  return {
    reqPerSec: Number(fin[3]),
    seconds: Number(fin[1]) / (fin[2] === "ms" ? 1000 : 1),
    requests: Number(req[1]),
    succeeded: Number(req[2]),
    failed: Number(req[3]),
    errored: Number(req[4]),
    notOk: Number(req[1]) - Number(codes[1]),
  };
}
