import { HostCommandError, type HostExec } from "./host-exec.js";
import type { RouterDesired } from "./router-model.js";

/**
 * The connections of load balancer members gone from the spec: each binding is a
 * (VIP, protocol, listener port, member address, member port), and only the conntrack
 * entries of bindings that went are deleted, so the members that stay keep their
 * established connections (conntrack holds their NAT).
 */

/** A router's bindings, "vip proto port member mport" each (canonical values from the validated spec). */
export function lbBindings(r: RouterDesired | undefined): string[] {
  return (r?.loadBalancers ?? []).flatMap((lb) => lb.listeners.flatMap((l) => l.members.map((m) => `${lb.vip} ${l.protocol} ${l.port} ${m.address} ${m.port}`)));
}

/** Deletes the entries of `bindings` in the router's namespace; the error to report, if any. */
export async function deleteLbConnections(rt: HostExec, bindings: readonly string[]): Promise<string | undefined> {
  for (const b of bindings) {
    const [vip, proto, port, member, mport] = b.split(" ") as [string, string, string, string, string];
    try {
      await rt.inNs("conntrack", ["-D", "-f", "ipv4", "-p", proto, "--orig-dst", vip, "--dport", port, "--reply-src", member, "--reply-port-src", mport]);
    } catch (err) {
      // conntrack exits 1 when no entry matched: that is no failure.
      if (err instanceof HostCommandError && /0 flow entries have been deleted/.test(err.message)) continue;
      return `${err instanceof Error ? err.message : String(err)}${/No such file|ENOENT/.test(String(err)) ? " (install the conntrack package)" : ""}`;
    }
  }
  return undefined;
}
