import { mkdir, readFile } from "node:fs/promises";
import { replacePrivateFile, SerialQueue } from "../private-file.js";
import { join } from "node:path";
import { notFound, QuantixError } from "@quantix/core";
import { addnHosts, dhcpHosts, dhcpOpts, dnsmasqArgs, wantsDnsmasq } from "./dnsmasq-config.js";
import { DnsmasqSupervisor, type DnsmasqState } from "./dnsmasq-process.js";
import { HostCommandError, HostExec } from "./host-exec.js";
import { bridgeAddresses, ensureBridge, ensureForwarding, ensureTap, ensureVxlan, forwardingOn, observeFdb, observeLinks, removeStaleLinks, desiredFdb, wantedLinks, VXLAN_OVERHEAD, type LinkView } from "./links.js";
import { overlaps4, parsePrefix4 } from "./ipv4.js";
import type { HostNetworkState, NetworkDesired, SecurityGroupDesired } from "./model.js";
import { bridgeName, gatewayMac, shortId, tapName, vxlanName } from "./names.js";
import { emptyRuleset, hostRuleset, memberDelta } from "./nft-ruleset.js";
import { ensureRemoteNeighbours, remoteNeighboursProblem } from "./remote-neighbours.js";

/** One observed condition. */
export interface Condition {
  readonly type: string;
  readonly status: boolean;
  readonly reason: string;
  readonly message: string;
}

/** A port as observed. */
export interface PortView {
  readonly portId: string;
  readonly networkId: string;
  readonly tap: string;
  readonly state: "down" | "active" | "error";
  readonly carrier: boolean;
  readonly conditions: readonly Condition[];
}

/** A network as observed. */
export interface NetworkView {
  readonly spec: NetworkDesired;
  readonly generation: string;
  readonly bridge: string;
  readonly vxlan: string;
  readonly dnsmasqPid: number;
  readonly conditions: readonly Condition[];
  readonly ports: readonly PortView[];
}

/** Where the host's networking lives. */
export interface NetworkHostOptions {
  /** The agent's state directory: the state file and dnsmasq's files go below `<stateDir>/network`. */
  readonly stateDir: string;
  /** The network namespace to program; undefined (production) is the agent's own. */
  readonly netns?: string;
  /** How often converge() runs by itself (restarting a dead dnsmasq, recreating a deleted link); 0: never. */
  readonly resyncMs?: number;
  /**
   * Tests only: a veth found under a port's TAP name is kept as the port's device (its
   * peer is a namespace standing in for a guest) instead of being replaced by a TAP.
   */
  readonly adoptVethPorts?: boolean;
}

const EMPTY: HostNetworkState = { networks: {}, securityGroups: {} };

/**
 * This host's network data plane: keeps the desired state (a state file, written before
 * the host is touched) and converges the kernel to it, level-based: every apply, delete
 * and resync runs the same converge over all networks and groups. Calls are serialised.
 */
export class NetworkHost {
  private state: HostNetworkState = EMPTY;
  private readonly queue = new SerialQueue();
  private readonly h: HostExec;
  private readonly dir: string;
  /** Per network: the last converge's failures, by condition type. */
  private readonly errors = new Map<string, Map<string, string>>();
  /** Why the last flush of connections failed ("" when it did not). */
  private conntrackError = "";
  private firewallError = "";
  private dnsmasq = new Map<string, DnsmasqState>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly o: NetworkHostOptions) {
    this.h = new HostExec(o.netns);
    this.dir = join(o.stateDir, "network");
  }

  /** Loads the state file and converges (an agent's start: re-applies what it had, removes what it does not want). */
  async start(): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    const text = await readFile(join(this.dir, "state.json"), "utf8").catch(() => undefined);
    if (text !== undefined) this.state = JSON.parse(text) as HostNetworkState;
    await this.serial(() => this.converge());
    if (this.o.resyncMs) {
      this.timer = setInterval(() => void this.serial(() => this.converge()).catch(() => undefined), this.o.resyncMs);
      this.timer.unref();
    }
  }

  /** Stops the resync; `stopDnsmasq` also ends the networks' dnsmasq (tests; the production agent leaves them serving). */
  async close(stopDnsmasq = false): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.serial(async () => {
      if (stopDnsmasq) for (const id of Object.keys(this.state.networks)) await this.supervisor(id).stop();
    });
  }

  /** ApplyNetwork with a validated spec. */
  applyNetwork(spec: NetworkDesired, generation: bigint): Promise<NetworkView> {
    return this.serial(async () => {
      this.checkAgainstOthers(spec);
      await this.checkUnderlay(spec);
      await this.save({ ...this.state, networks: { ...this.state.networks, [spec.networkId]: { spec, generation: String(generation) } } });
      await this.converge();
      return this.view(spec.networkId);
    });
  }

  /** DeleteNetwork. */
  deleteNetwork(networkId: string): Promise<void> {
    return this.serial(async () => {
      if (!this.state.networks[networkId]) throw notFound("network", networkId);
      const { [networkId]: _gone, ...rest } = this.state.networks;
      await this.save({ ...this.state, networks: rest });
      await this.supervisor(networkId).remove();
      this.dnsmasq.delete(networkId);
      this.errors.delete(networkId);
      await this.converge();
    });
  }

  getNetwork(networkId: string): Promise<NetworkView> {
    return this.serial(async () => {
      if (!this.state.networks[networkId]) throw notFound("network", networkId);
      return this.view(networkId);
    });
  }

  listNetworks(): Promise<NetworkView[]> {
    return this.serial(async () => {
      const out: NetworkView[] = [];
      for (const id of Object.keys(this.state.networks).sort()) out.push(await this.view(id));
      return out;
    });
  }

  getPort(portId: string): Promise<PortView> {
    return this.serial(async () => {
      const net = Object.values(this.state.networks).find((n) => n.spec.ports.some((p) => p.portId === portId));
      if (!net) throw notFound("port", portId);
      return (await this.view(net.spec.networkId)).ports.find((p) => p.portId === portId)!;
    });
  }

  /** The TAP and MAC of a port declared on this host, for a VM's NIC; undefined when unknown. */
  portTap(portId: string): { tap: string; mac: string } | undefined {
    for (const n of Object.values(this.state.networks)) {
      const p = n.spec.ports.find((x) => x.portId === portId);
      if (p) return { tap: tapName(p.portId), mac: p.mac };
    }
    return undefined;
  }

  applySecurityGroup(spec: SecurityGroupDesired, generation: bigint): Promise<{ spec: SecurityGroupDesired; generation: string; conditions: Condition[] }> {
    return this.serial(async () => {
      const before = this.state.securityGroups[spec.securityGroupId]?.spec;
      await this.save({ ...this.state, securityGroups: { ...this.state.securityGroups, [spec.securityGroupId]: { spec, generation: String(generation) } } });
      await this.converge();
      if (before) {
        // A rule gone, or a member gone: connections it allowed must not outlive it.
        const now = new Set(spec.rules.map((r) => JSON.stringify(r)));
        const ruleGone = before.rules.some((r) => !now.has(JSON.stringify(r)));
        const membersGone = before.members.filter((m) => !spec.members.includes(m));
        await this.flushConnections([...(ruleGone ? this.portAddressesOf(spec.securityGroupId) : []), ...membersGone]);
      }
      return this.sgView(spec.securityGroupId);
    });
  }

  /** Membership delta: nft add/delete element only, no rule touched. */
  updateMembers(sgId: string, add: readonly string[], remove: readonly string[]): Promise<{ spec: SecurityGroupDesired; generation: string; conditions: Condition[] }> {
    return this.serial(async () => {
      const g = this.state.securityGroups[sgId];
      if (!g) throw notFound("security group", sgId);
      const both = add.filter((a) => remove.includes(a));
      if (both.length > 0) throw new QuantixError("invalid_argument", `invalid request: remove_ips: ${both[0]} is also in add_ips`, [{ field: "remove_ips", reason: "INVALID_VALUE", description: `${both[0]} is also in add_ips` }]);
      const have = new Set(g.spec.members);
      const toAdd = [...new Set(add)].filter((a) => !have.has(a));
      const toRemove = [...new Set(remove)].filter((a) => have.has(a));
      const members = [...new Set([...g.spec.members.filter((m) => !toRemove.includes(m)), ...toAdd])].sort();
      await this.save({ ...this.state, securityGroups: { ...this.state.securityGroups, [sgId]: { ...g, spec: { ...g.spec, members } } } });
      if (toAdd.length + toRemove.length > 0) {
        try {
          await this.h.nft(memberDelta(sgId, toAdd, toRemove));
        } catch {
          // The delta needs the set as the last full transaction made it; rebuild everything instead.
          await this.converge();
        }
      }
      // A member gone: its connections that membership allowed must not outlive it.
      await this.flushConnections(toRemove);
      return this.sgView(sgId);
    });
  }

  deleteSecurityGroup(sgId: string): Promise<void> {
    return this.serial(async () => {
      if (!this.state.securityGroups[sgId]) throw notFound("security group", sgId);
      const { [sgId]: _gone, ...rest } = this.state.securityGroups;
      await this.save({ ...this.state, securityGroups: rest });
      await this.converge();
    });
  }

  listSecurityGroups(): Promise<{ spec: SecurityGroupDesired; generation: string; conditions: Condition[] }[]> {
    return this.serial(async () => Object.keys(this.state.securityGroups).sort().map((id) => this.sgView(id)));
  }

  /** Converges now (what the resync timer runs); exposed for tests and the agent's start. */
  resync(): Promise<void> {
    return this.serial(() => this.converge());
  }

  // --- internals -------------------------------------------------------------------

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    return this.queue.run(fn);
  }

  private supervisor(networkId: string): DnsmasqSupervisor {
    return new DnsmasqSupervisor(this.h, join(this.dir, networkId));
  }

  private async save(next: HostNetworkState): Promise<void> {
    await replacePrivateFile(join(this.dir, "state.json"), JSON.stringify(next));
    this.state = next;
  }

  /** Refuses a network whose host names or VNI clash with another network's here. */
  private checkAgainstOthers(spec: NetworkDesired): void {
    for (const { spec: o } of Object.values(this.state.networks)) {
      if (o.networkId === spec.networkId) continue;
      if (shortId(o.networkId) === shortId(spec.networkId)) throw new QuantixError("failed_precondition", `network '${spec.networkId}' shares its first 12 hex digits (its bridge name) with network '${o.networkId}' on this host`);
      if (o.vni === spec.vni) throw new QuantixError("failed_precondition", `VNI ${spec.vni} is already network '${o.networkId}''s on this host`);
      // Two gateways on one host share its routing table: their subnets must not overlap.
      const routed = spec.gateway && o.gateway ? spec.subnets.find((s) => o.subnets.some((x) => overlaps4(parsePrefix4(s.cidr, { strict: true })!, parsePrefix4(x.cidr, { strict: true })!))) : undefined;
      if (routed) throw new QuantixError("failed_precondition", `subnet ${routed.cidr} overlaps a subnet of network '${o.networkId}', which also has a gateway on this host (both would be routed by this host)`);
      const ports = new Set(o.ports.map((p) => shortId(p.portId)));
      const clash = spec.ports.find((p) => ports.has(shortId(p.portId)));
      if (clash) throw new QuantixError("failed_precondition", `port '${clash.portId}' (or one sharing its TAP name) is already declared by network '${o.networkId}' on this host`);
    }
  }

  /** The underlay address must be on an interface whose MTU leaves room for VXLAN. */
  private async checkUnderlay(spec: NetworkDesired): Promise<void> {
    const addrs = await this.h.ipJson<{ ifname: string; mtu: number; addr_info?: { family: string; local: string }[] }[]>(["addr", "show"]);
    const dev = addrs.find((l) => (l.addr_info ?? []).some((a) => a.family === "inet" && a.local === spec.localUnderlay));
    if (!dev) throw new QuantixError("failed_precondition", `local_underlay_address ${spec.localUnderlay} is not configured on any interface of this host`);
    if (dev.mtu < spec.mtu + VXLAN_OVERHEAD) throw new QuantixError("failed_precondition", `mtu ${spec.mtu} needs an underlay MTU of at least ${spec.mtu + VXLAN_OVERHEAD} for VXLAN, but ${dev.ifname} has ${dev.mtu}`);
  }

  /** The one reconcile: links of every network, stale links removed, the firewall, dnsmasq. */
  private async converge(): Promise<void> {
    const nets = Object.values(this.state.networks).map((x) => x.spec);
    let links = await observeLinks(this.h);
    const wanted = new Set(nets.flatMap(wantedLinks));
    await removeStaleLinks(this.h, links, wanted);
    const recreated = new Set<string>();
    for (const n of nets) {
      const errs = new Map<string, string>();
      this.errors.set(n.networkId, errs);
      const step = async (type: string, fn: () => Promise<void>) => {
        try {
          await fn();
        } catch (err) {
          errs.set(type, err instanceof HostCommandError ? err.message : String(err));
        }
      };
      await step("BridgeReady", async () => {
        if (await ensureBridge(this.h, n, links)) recreated.add(n.networkId);
      });
      if (n.gateway) await step("GatewayReady", () => ensureForwarding(this.h));
      links = await observeLinks(this.h);
      await step("VxlanReady", () => ensureVxlan(this.h, n, links));
      // With a gateway: the remote ports' neighbours and bridge FDB entries; without: none left over.
      await step(n.gateway ? "GatewayReady" : "VxlanReady", () => ensureRemoteNeighbours(this.h, n));
      for (const p of n.ports) await step(`TapReady/${p.portId}`, () => ensureTap(this.h, n, p.portId, links, this.o.adoptVethPorts ?? false));
    }
    // Filtering before dnsmasq: a port is never on a bridge without its rules for longer than this transaction takes.
    try {
      await this.h.nft(nets.length === 0 && Object.keys(this.state.securityGroups).length === 0 ? emptyRuleset() : hostRuleset(this.state));
      this.firewallError = "";
    } catch (err) {
      this.firewallError = err instanceof HostCommandError ? err.stderr : String(err);
    }
    for (const n of nets) {
      const sup = this.supervisor(n.networkId);
      // The agent replaced the bridge (the gateway MAC went): dnsmasq, bound to the old one, starts again.
      if (recreated.has(n.networkId)) await sup.stop();
      if (!wantsDnsmasq(n)) {
        await sup.stop();
        this.dnsmasq.delete(n.networkId);
        continue;
      }
      this.dnsmasq.set(n.networkId, await sup.ensure(dnsmasqArgs(n, sup.dir), { hosts: dhcpHosts(n), opts: dhcpOpts(n), addnHosts: addnHosts(n) }).catch((err: unknown) => ({ pid: 0, problem: String(err) })));
    }
  }

  /** GatewayReady: the bridge carries the gateway addresses and MAC, the remote ports' neighbours, forwarding is on, the firewall (and NAT) applied. */
  private async gatewayCondition(n: NetworkDesired, bl: LinkView | undefined, err: string | undefined): Promise<Condition> {
    const type = "GatewayReady";
    if (!n.gateway) return { type, status: true, reason: "NoGateway", message: "the network has no gateway on this host" };
    if (err) return { type, status: false, reason: "GatewaySetupFailed", message: err };
    if (!bl) return { type, status: false, reason: "LinkMissing", message: `${bridgeName(n.networkId)} does not exist` };
    const mac = gatewayMac(n.networkId);
    if (bl.address !== mac) return { type, status: false, reason: "MacMissing", message: `${bridgeName(n.networkId)} has MAC ${bl.address ?? "none"}, not the gateway's ${mac}` };
    const shown = await this.h.ipJson<{ addr_info?: { family: string; local: string; prefixlen: number }[] }[]>(["addr", "show", "dev", bridgeName(n.networkId)]).catch(() => []);
    const have = new Set((shown[0]?.addr_info ?? []).filter((a) => a.family === "inet").map((a) => `${a.local}/${a.prefixlen}`));
    const missing = [...bridgeAddresses(n)].filter((a) => !have.has(a));
    if (missing.length > 0) return { type, status: false, reason: "AddressMissing", message: `${bridgeName(n.networkId)} lacks ${missing.join(", ")}` };
    if (!(await forwardingOn(this.h))) return { type, status: false, reason: "ForwardingOff", message: "net.ipv4.ip_forward is 0 in the data plane's namespace" };
    const neighbours = await remoteNeighboursProblem(this.h, n);
    if (neighbours !== "") return { type, status: false, reason: "NeighboursIncomplete", message: neighbours };
    if (this.firewallError !== "") return { type, status: false, reason: "NftTransactionRefused", message: "the gateway's filtering and NAT are not applied (see FirewallReady)" };
    const gws = n.subnets.map((s) => s.gatewayIp).join(", ");
    const remote = n.remotePorts.length > 0 ? `, and routes to the network's ${n.remotePorts.length} remote ports through their hosts` : "";
    return { type, status: true, reason: n.gateway.mode === "nat" ? "Nat" : "Routed", message: `this host answers on ${gws} (MAC ${mac}) and ${n.gateway.mode === "nat" ? "masquerades the subnets' traffic leaving through interfaces other than this host's gateway bridges" : "routes the guests' traffic with their own addresses"}${remote}` };
  }

  private sgView(sgId: string): { spec: SecurityGroupDesired; generation: string; conditions: Condition[] } {
    const g = this.state.securityGroups[sgId]!;
    const flushed: Condition[] =
      this.conntrackError === ""
        ? []
        : [{ type: "ConnectionsFlushed", status: false, reason: "ConntrackFailed", message: `connections a removed rule or member allowed could not be cut (they last until they end): ${this.conntrackError}` }];
    return { ...g, conditions: [this.firewallCondition(), ...flushed] };
  }

  /** The addresses of this host's secured ports that use group `sgId`. */
  private portAddressesOf(sgId: string): string[] {
    return Object.values(this.state.networks).flatMap((n) => n.spec.ports.filter((p) => p.portSecurity && p.securityGroupIds.includes(sgId)).flatMap((p) => p.fixedIps));
  }

  /**
   * Deletes the conntrack entries from and to `addresses` in the data plane's namespace,
   * after the rules changed: an established connection is otherwise passed by `ct state
   * established` whatever the rules now say. A connection the rules still allow goes on
   * (its next packet is tracked again, nf_conntrack_tcp_loose, and passes the rules); one
   * they no longer allow is dropped. Needs `conntrack` (Debian package conntrack); a
   * failure shows as ConnectionsFlushed=False on the group.
   */
  private async flushConnections(addresses: readonly string[]): Promise<void> {
    this.conntrackError = "";
    for (const ip of [...new Set(addresses)].sort()) {
      for (const dir of ["--orig-src", "--orig-dst"]) {
        try {
          await this.h.inNs("conntrack", ["-D", "-f", "ipv4", dir, ip]);
        } catch (err) {
          // conntrack exits 1 when no entry matched: that is no failure.
          if (err instanceof HostCommandError && /0 flow entries have been deleted/.test(err.message)) continue;
          this.conntrackError = err instanceof HostCommandError ? err.message : String(err);
          if (/ENOENT|not found/i.test(this.conntrackError)) this.conntrackError += " (install the conntrack package)";
          return;
        }
      }
    }
  }

  private firewallCondition(): Condition {
    return this.firewallError === ""
      ? { type: "FirewallReady", status: true, reason: "Applied", message: "the host's nftables tables match the desired state" }
      : { type: "FirewallReady", status: false, reason: "NftTransactionRefused", message: `nft refused the transaction (nothing of it was applied): ${this.firewallError}` };
  }

  /** Observes a network now: links, FDB, dnsmasq, and the last converge's failures. */
  private async view(networkId: string): Promise<NetworkView> {
    const { spec: n, generation } = this.state.networks[networkId]!;
    const links = await observeLinks(this.h);
    const errs = this.errors.get(networkId) ?? new Map<string, string>();
    const br = bridgeName(networkId);
    const vx = vxlanName(networkId);
    const conds: Condition[] = [];
    const bl = links.get(br);
    conds.push(errs.has("BridgeReady") ? { type: "BridgeReady", status: false, reason: "BridgeSetupFailed", message: errs.get("BridgeReady")! } : linkCondition("BridgeReady", br, bl, undefined));
    const vl = links.get(vx);
    let vxc = errs.has("VxlanReady") ? { type: "VxlanReady", status: false, reason: "VxlanSetupFailed", message: errs.get("VxlanReady")! } : linkCondition("VxlanReady", vx, vl, br);
    if (vxc.status) {
      const have = await observeFdb(this.h, vx).catch(() => new Set<string>());
      const missing = [...desiredFdb(n)].filter((e) => !have.has(e));
      if (missing.length > 0) vxc = { type: "VxlanReady", status: false, reason: "FdbIncomplete", message: `${missing.length} forwarding entries missing, e.g. ${missing[0]}` };
    }
    conds.push(vxc);
    conds.push(this.firewallCondition());
    let pid = 0;
    if (wantsDnsmasq(n)) {
      const d = await this.supervisor(networkId).observe();
      pid = d.pid;
      const last = this.dnsmasq.get(networkId);
      conds.push(d.pid ? { type: "DhcpReady", status: true, reason: "DnsmasqRunning", message: `dnsmasq runs as pid ${d.pid}` } : { type: "DhcpReady", status: false, reason: "DnsmasqNotRunning", message: last?.problem || d.problem });
    } else conds.push({ type: "DhcpReady", status: true, reason: "NoDhcp", message: "no subnet has a service address: no dnsmasq runs for this network" });
    conds.push(await this.gatewayCondition(n, bl, errs.get("GatewayReady")));
    const bad = conds.filter((c) => !c.status);
    conds.unshift({ type: "Ready", status: bad.length === 0, reason: bad.length === 0 ? "Converged" : bad[0]!.reason, message: bad.length === 0 ? "the host matches the spec" : bad.map((c) => `${c.type}: ${c.message}`).join("; ") });
    const ports = n.ports.map((p): PortView => {
      const t = tapName(p.portId);
      const l = links.get(t);
      const err = errs.get(`TapReady/${p.portId}`);
      const tc: Condition = err ? { type: "TapReady", status: false, reason: "TapSetupFailed", message: err } : linkCondition("TapReady", t, l, br);
      const fw = this.firewallCondition();
      const state = err || (p.portSecurity && !fw.status) ? "error" : tc.status ? "active" : "down";
      return { portId: p.portId, networkId, tap: t, state, carrier: l?.flags.includes("LOWER_UP") ?? false, conditions: [tc, ...(p.portSecurity ? [fw] : [])] };
    });
    return { spec: n, generation, bridge: br, vxlan: vx, dnsmasqPid: pid, conditions: conds, ports };
  }
}

function linkCondition(type: string, name: string, l: LinkView | undefined, master: string | undefined): Condition {
  if (!l) return { type, status: false, reason: "LinkMissing", message: `${name} does not exist (the next resync creates it)` };
  if (master !== undefined && l.master !== master) return { type, status: false, reason: "NotOnBridge", message: `${name} is not on ${master}` };
  if (!l.flags.includes("UP")) return { type, status: false, reason: "LinkDown", message: `${name} is down` };
  return { type, status: true, reason: "Up", message: `${name} is up${master ? ` on ${master}` : ""}` };
}
