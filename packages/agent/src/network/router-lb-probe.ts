import { spawn, type ChildProcess } from "node:child_process";
import { createInterface } from "node:readline";
import { HostExec } from "./host-exec.js";
import { parseIp4 } from "./ipv4.js";

/**
 * TCP connect checks from inside a router's namespace: one small Node process per router
 * (`ip netns exec qr<id> node -e <constant script>`) that reads one JSON request a line on
 * stdin ({id, host, port, timeout ms}) and answers one JSON line each. One process per
 * router instead of one per check: a check is a connect, not a fork and exec. No request
 * value reaches argv; the helper exits when its stdin closes (the agent gone) and is
 * stopped before its router's namespace is deleted (a live process would keep the
 * namespace alive).
 */

/** A check's outcome. */
export interface ProbeResult {
  readonly ok: boolean;
  /** "connected", "ECONNREFUSED", "timeout after 2000 ms", … */
  readonly reason: string;
  /** The check could not run (the helper failed): says nothing about the member. */
  readonly inconclusive?: boolean;
}

/** Checks a TCP port from inside a router's namespace. */
export interface Prober {
  probe(routerId: string, address: string, port: number, timeoutMs: number): Promise<ProbeResult>;
  /** Stops the router's helper (its pending checks fail). */
  stop(routerId: string): void;
  close(): void;
}

const HELPER = `"use strict";
const net = require("node:net");
const rl = require("node:readline").createInterface({ input: process.stdin });
rl.on("line", (line) => {
  let q;
  try { q = JSON.parse(line); } catch { return; }
  let done = false;
  const s = net.connect({ host: q.host, port: q.port });
  const fin = (ok, reason) => { if (done) return; done = true; s.destroy(); process.stdout.write(JSON.stringify({ id: q.id, ok, reason }) + "\\n"); };
  s.setTimeout(q.timeout, () => fin(false, "timeout after " + q.timeout + " ms"));
  s.on("connect", () => fin(true, "connected"));
  s.on("error", (e) => fin(false, e.code || e.message));
});
rl.on("close", () => process.exit(0));
`;

interface Helper {
  readonly child: ChildProcess;
  readonly pending: Map<number, (r: ProbeResult) => void>;
}

/** The Prober of the agent: a helper process per router namespace, started on first use. */
export class NamespaceProber implements Prober {
  private readonly helpers = new Map<string, Helper>();
  private next = 1;

  /** `netnsOf`: the router's namespace name (derived from ids by the router host). */
  constructor(private readonly netnsOf: (routerId: string) => string) {}

  probe(routerId: string, address: string, port: number, timeoutMs: number): Promise<ProbeResult> {
    if (parseIp4(address) === undefined || !Number.isInteger(port) || port < 1 || port > 65535) return Promise.resolve({ ok: false, reason: "bad target", inconclusive: true });
    const h = this.helper(routerId);
    const id = this.next++;
    return new Promise((resolve) => {
      h.pending.set(id, resolve);
      h.child.stdin?.write(`${JSON.stringify({ id, host: address, port, timeout: timeoutMs })}\n`);
    });
  }

  stop(routerId: string): void {
    const h = this.helpers.get(routerId);
    if (!h) return;
    this.helpers.delete(routerId);
    h.child.kill("SIGKILL");
    for (const r of h.pending.values()) r({ ok: false, reason: "health check helper stopped", inconclusive: true });
    h.pending.clear();
  }

  close(): void {
    for (const id of [...this.helpers.keys()]) this.stop(id);
  }

  private helper(routerId: string): Helper {
    const have = this.helpers.get(routerId);
    if (have) return have;
    const [bin, args] = new HostExec(this.netnsOf(routerId)).argv(process.execPath, ["-e", HELPER]);
    const env = { ...process.env };
    delete env["NODE_OPTIONS"];
    const child = spawn(bin, args, { stdio: ["pipe", "pipe", "ignore"], env });
    const h: Helper = { child, pending: new Map() };
    this.helpers.set(routerId, h);
    createInterface({ input: child.stdout! }).on("line", (line) => {
      try {
        const r = JSON.parse(line) as { id: number; ok: boolean; reason: string };
        const done = h.pending.get(r.id);
        h.pending.delete(r.id);
        done?.({ ok: r.ok === true, reason: String(r.reason) });
      } catch {
        // not ours
      }
    });
    const gone = (why: string) => {
      if (this.helpers.get(routerId) === h) this.helpers.delete(routerId);
      for (const r of h.pending.values()) r({ ok: false, reason: why, inconclusive: true });
      h.pending.clear();
    };
    child.on("exit", (code) => gone(`health check helper exited (${code ?? "signal"})`));
    child.on("error", (err) => gone(`health check helper failed: ${err.message}`));
    child.stdin?.on("error", () => undefined);
    return h;
  }
}
