import { execFile } from "node:child_process";

/**
 * Reachability probes run inside a network namespace, asynchronously. A test whose control
 * plane and agents run in its own process must never probe with execFileSync: a ping that
 * waits a second for no answer blocks that process's event loop, so a probe every 200 ms
 * leaves the control plane a fifth of the time to reconcile (a VPN test's reconcile took
 * 64 s that way and its tunnel never came up within the deadline).
 */

/** Whether `ip netns exec <ns> <args...>` exits 0 within `timeoutMs`. */
export function succeedsInNs(ns: string, args: readonly string[], timeoutMs = 15_000): Promise<boolean> {
  return new Promise((resolve) => {
    execFile("ip", ["netns", "exec", ns, ...args], { timeout: timeoutMs }, (err) => resolve(err === null));
  });
}

/** Whether namespace `ns` gets an answer to one ping of `ip` within `waitSec` seconds. */
export function pingsFrom(ns: string, ip: string, waitSec = 1): Promise<boolean> {
  return succeedsInNs(ns, ["ping", "-c", "1", "-W", String(waitSec), ip]);
}

/** Whether namespace `ns` completes a TCP handshake with `ip`:`port` within two seconds (bash's /dev/tcp; the address is an argument, not code). */
export function connectsFrom(ns: string, ip: string, port: number): Promise<boolean> {
  return succeedsInNs(ns, ["timeout", "2", "bash", "-c", 'exec 3<>"/dev/tcp/$0/$1"', ip, String(port)]);
}
