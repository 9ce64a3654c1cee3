import { execFile } from "node:child_process";
import { NETNS_NAME } from "./names.js";

/**
 * Runs the host's network tools (ip, bridge, nft, dnsmasq, sysctl) in one network
 * namespace: the root namespace for the production agent, a named one when tests run
 * "hosts" as namespaces. Arguments are argv entries (no shell); every call has a deadline.
 */
export class HostExec {
  /** `netns`: a namespace name from the agent's configuration (never a request's), or undefined for the root namespace. */
  constructor(readonly netns?: string) {
    if (netns !== undefined && !NETNS_NAME.test(netns)) throw new Error(`bad network namespace name ${JSON.stringify(netns)}`);
  }

  /** `ip` with `-n <netns>`. */
  ip(args: readonly string[]): Promise<string> {
    return this.run("ip", [...this.nsArgs(), ...args]);
  }

  /** `ip -json ...`, parsed. */
  async ipJson<T>(args: readonly string[]): Promise<T> {
    const out = await this.ip(["-json", ...args]);
    return (out.trim() === "" ? [] : JSON.parse(out)) as T;
  }

  /** `bridge` with `-n <netns>`. */
  bridge(args: readonly string[]): Promise<string> {
    return this.run("bridge", [...this.nsArgs(), ...args]);
  }

  /** `nft -f -` fed `script`: one atomic transaction. */
  nft(script: string): Promise<string> {
    return this.inNs("nft", ["-f", "-"], script);
  }

  /** Another command run inside the namespace (`ip netns exec`). */
  inNs(bin: string, args: readonly string[], input?: string): Promise<string> {
    return this.netns === undefined ? this.run(bin, args, input) : this.run("ip", ["netns", "exec", this.netns, bin, ...args], input);
  }

  /** argv that runs `bin args` inside the namespace (for spawning a daemon). */
  argv(bin: string, args: readonly string[]): [string, string[]] {
    return this.netns === undefined ? [bin, [...args]] : ["ip", ["netns", "exec", this.netns, bin, ...args]];
  }

  private nsArgs(): string[] {
    return this.netns === undefined ? [] : ["-n", this.netns];
  }

  private run(bin: string, args: readonly string[], input?: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const child = execFile(bin, args, { timeout: 15_000, maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
        if (err) reject(new HostCommandError(bin, args, stderr.trim() || err.message));
        else resolve(stdout);
      });
      if (input !== undefined) child.stdin?.end(input);
    });
  }
}

/** A failed host command, with what it printed. */
export class HostCommandError extends Error {
  override readonly name = "HostCommandError";
  constructor(
    readonly bin: string,
    readonly args: readonly string[],
    readonly stderr: string,
  ) {
    super(`${bin} ${args.slice(0, 6).join(" ")}${args.length > 6 ? " …" : ""}: ${stderr}`);
  }
}
