import { mkdir, readFile } from "node:fs/promises";
import { replacePrivateFile, SerialQueue } from "../private-file.js";
import { join } from "node:path";
import { notFound, QuantixError, wireguardPublicKey } from "@quantix/core";
import { HostCommandError, HostExec } from "./host-exec.js";
import { observeLinks } from "./links.js";
import { bridgeName, shortId } from "./names.js";
import type { Condition } from "./network-host.js";
import { addressesOf, ensureExternal, ensureRouterAddresses, ensureInterfaces, ensureNamespace, externalAddresses, interfaceAddresses, namespaces, problemOf, removeStaleRouterLinks, routerForwarding, RouterProblem, wantedRouterLinks } from "./router-links.js";
import { LbHealth } from "./router-lb-health.js";
import { NamespaceProber, type Prober } from "./router-lb-probe.js";
import { lbCounters } from "./router-lb-ruleset.js";
import { deleteLbConnections, lbBindings } from "./router-lb-conntrack.js";
import { lbCondition, observeLoadBalancers, readLbCounters, type LoadBalancerView } from "./router-lb-status.js";
import { externalBridgeName, externalLegName, internalLegName, ROUTER_EXTERNAL_DEVICE, routerInterfaceName, routerNetns, vpnInterfaceName, type FloatingIpDesired, type RouterDesired, type RouterHostState, type VpnConnectionDesired } from "./router-model.js";
import { WireguardTunnels } from "./router-vpn.js";
import { IPSEC_DEVICE, IpsecDaemons, ikeName, ipsecProblem, type IkeSaView } from "./router-ipsec.js";
import { ROUTER_TABLE, routerRuleset } from "./router-ruleset.js";

/** A floating IP as observed. */
export interface FloatingIpView extends FloatingIpDesired {
  readonly applied: boolean;
}

/** A VPN peer as observed. */
export interface VpnPeerView {
  readonly peerId: string;
  readonly state: "up" | "connecting" | "down";
  /** Unix seconds, 0: never. */
  readonly lastHandshake: number;
  readonly rx: bigint;
  readonly tx: bigint;
  readonly endpoint: string;
}

/** A VPN connection as observed (no secret in it). */
export interface VpnView {
  readonly connectionId: string;
  readonly type: "wireguard" | "ipsec";
  readonly interfaceName: string;
  readonly publicKey: string;
  readonly listenPort: number;
  readonly applied: boolean;
  readonly message: string;
  readonly peers: readonly VpnPeerView[];
}

/** A handshake younger than this makes a peer UP (WireGuard rekeys every 2 minutes while traffic flows). */
const HANDSHAKE_FRESH_S = 180;

/** A router as observed. */
export interface RouterView {
  readonly spec: RouterDesired;
  readonly generation: string;
  readonly namespace: string;
  readonly conditions: readonly Condition[];
  readonly floatingIps: readonly FloatingIpView[];
  readonly vpnConnections: readonly VpnView[];
  readonly loadBalancers: readonly LoadBalancerView[];
}

/** Where the routers live. */
export interface RouterHostOptions {
  /** The agent's state directory: the routers' state file is `<stateDir>/network/routers.json`. */
  readonly stateDir: string;
  /** The data plane's namespace (the networks' bridges, the physical interfaces); undefined: the agent's own. */
  readonly netns?: string;
  /** The agent's physical networks: name → host interface (VMCP_NETWORK_PHYSICAL_NETWORKS). */
  readonly physicalNetworks: ReadonlyMap<string, string>;
  /** How often converge() runs by itself; 0: never. */
  readonly resyncMs?: number;
  /** How load balancer members are checked (default: a helper process in each router's namespace). */
  readonly prober?: Prober;
}

const EMPTY: RouterHostState = { routers: {}, leftovers: [] };

/** How many gratuitous ARPs run at once. */
const ANNOUNCE_BATCH = 64;

/** Per router: the last converge's problems, by condition type. */
type Problems = Map<string, RouterProblem>;

/**
 * This host's routers (issue 15's network node): the desired state in a state file,
 * written before the host is touched, and one level-based converge over all routers for
 * every apply, delete, resync and start. Its objects are disjoint from NetworkHost's
 * (namespaces `qr…`, links `qe…`/`qg…`/`qi…`, an nftables table in each router's own
 * namespace); it only puts links on the networks' bridges. Calls are serialised.
 */
export class RouterHost {
  private state: RouterHostState = EMPTY;
  private readonly queue = new SerialQueue();
  private readonly dp: HostExec;
  private readonly root = new HostExec();
  private readonly dir: string;
  private readonly problems = new Map<string, Problems>();
  private readonly conntrackErrors = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;
  private readonly tunnels: WireguardTunnels;
  private readonly ipsec: IpsecDaemons;
  private readonly health: LbHealth;
  /** Routers whose table a health change wants re-rendered (one queued render each). */
  private readonly rerender = new Set<string>();

  constructor(private readonly o: RouterHostOptions) {
    this.dp = new HostExec(o.netns);
    this.dir = join(o.stateDir, "network");
    // A tunnel process that died: converge soon (it restarts it).
    this.tunnels = new WireguardTunnels(join(this.dir, "vpn"), () => void this.serial(() => this.converge()).catch(() => undefined));
    this.ipsec = new IpsecDaemons(join(this.dir, "ipsec"), () => void this.serial(() => this.converge()).catch(() => undefined));
    this.health = new LbHealth(o.prober ?? new NamespaceProber((id) => this.nsOf(id)), (id) => this.healthChanged(id));
  }

  /** A router's namespace on this host. */
  private nsOf(routerId: string): string {
    return routerNetns(routerId, this.o.netns ?? "");
  }

  /** Loads the state file and converges (the agent's start). */
  async start(options: { fenced?: boolean } = {}): Promise<void> {
    await mkdir(join(this.dir, "vpn"), { recursive: true, mode: 0o700 });
    await mkdir(join(this.dir, "ipsec"), { recursive: true, mode: 0o700 });
    const text = await readFile(join(this.dir, "routers.json"), "utf8").catch(() => undefined);
    if (text !== undefined) {
      const saved = JSON.parse(text) as Partial<RouterHostState>;
      // A state file from before load balancers has none.
      const routers = Object.fromEntries(Object.entries(saved.routers ?? {}).map(([id, x]) => [id, { ...x, spec: { ...x.spec, loadBalancers: x.spec.loadBalancers ?? [] } }]));
      this.state = { routers, leftovers: saved.leftovers ?? [] };
    }
    // An agent that starts past its self-fencing deadline (cut off, or down, longer than
    // the control plane's lost-after time) must not bring its routers back: the control
    // plane has moved them, and two copies would answer for one external address.
    if (options.fenced && Object.keys(this.state.routers).length > 0) {
      await this.save({ routers: {}, leftovers: [...new Set([...this.state.leftovers, ...Object.keys(this.state.routers)])] });
    }
    for (const [id, x] of Object.entries(this.state.routers)) this.health.sync(id, x.spec);
    await this.serial(() => this.converge());
    // Checks start once the routers' namespaces exist (until then every member is in).
    for (const id of Object.keys(this.state.routers)) this.health.start(id);
    if (this.o.resyncMs) {
      this.timer = setInterval(() => void this.serial(() => this.converge()).catch(() => undefined), this.o.resyncMs);
      this.timer.unref();
    }
  }

  /** Stops the resync (the routers stay: they forward without the agent). */
  async close(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.tunnels.close();
    this.ipsec.close();
    this.health.close();
    await this.serial(async () => undefined);
  }

  /** ApplyRouter with a validated spec. */
  applyRouter(spec: RouterDesired, generation: bigint): Promise<RouterView> {
    return this.serial(async () => {
      await this.check(spec);
      const before = this.state.routers[spec.routerId]?.spec;
      await this.save({ ...this.state, routers: { ...this.state.routers, [spec.routerId]: { spec, generation: String(generation) } } });
      this.health.sync(spec.routerId, spec);
      // Only mappings, SNAT or load balancers changed on a router that was whole: its
      // addresses and its table, not every router's links (a floating IP's association is
      // this path). Anything else, or a failure here, converges everything.
      if (!before || !sameLinks(before, spec) || !sameVpn(before, spec) || (this.problems.get(spec.routerId)?.size ?? 1) > 0 || !(await this.quickApply(spec))) await this.converge();
      this.health.start(spec.routerId);
      const now = new Map(spec.floatingIps.map((f) => [f.floatingIp, f.fixedIp]));
      const was = new Map((before?.floatingIps ?? []).map((f) => [f.floatingIp, f.fixedIp]));
      // A mapping removed or moved: its connections must not go on using it.
      await this.flush(spec.routerId, [...was].filter(([fl, fx]) => now.get(fl) !== fx).map(([fl]) => fl));
      // A member (or listener, or load balancer) gone: its connections through the VIP end; the others keep theirs.
      const kept = new Set(lbBindings(spec));
      const lbErr = await deleteLbConnections(new HostExec(this.nsOf(spec.routerId)), lbBindings(before).filter((b) => !kept.has(b)));
      if (lbErr) this.conntrackErrors.set(spec.routerId, lbErr);
      // A mapping added or moved, or the router's own address new here (a router moved to this host): tell the neighbours at once.
      const fresh = [...now].filter(([fl, fx]) => was.get(fl) !== fx).map(([fl]) => fl);
      if (before?.external.address !== spec.external.address) fresh.unshift(spec.external.address.split("/")[0]!);
      const announce: [string, string][] = fresh.map((ip) => [ip, ROUTER_EXTERNAL_DEVICE]);
      // A VIP new here, or moved to another side: announced on its interface.
      const vipWas = new Map((before?.loadBalancers ?? []).map((lb) => [lb.vip, lb.networkId]));
      for (const lb of spec.loadBalancers) if (!vipWas.has(lb.vip) || vipWas.get(lb.vip) !== lb.networkId) announce.push([lb.vip, lb.networkId === undefined ? ROUTER_EXTERNAL_DEVICE : routerInterfaceName(lb.networkId)]);
      // Each arping takes about a second (its deadline): after the answer, in parallel, a bounded number at a time.
      void (async () => {
        for (let i = 0; i < announce.length; i += ANNOUNCE_BATCH) await Promise.all(announce.slice(i, i + ANNOUNCE_BATCH).map(([ip, dev]) => this.announce(spec.routerId, ip, dev)));
      })().catch(() => undefined);
      return this.view(spec.routerId);
    });
  }

  /** DeleteRouter. */
  deleteRouter(routerId: string): Promise<void> {
    return this.serial(async () => {
      if (!this.state.routers[routerId]) throw notFound("router", routerId);
      const { [routerId]: _gone, ...rest } = this.state.routers;
      await this.save({ routers: rest, leftovers: [...new Set([...this.state.leftovers, routerId])] });
      // Its health checks (and their helper process, which would keep the namespace alive) stop first.
      this.health.sync(routerId, undefined);
      this.problems.delete(routerId);
      this.conntrackErrors.delete(routerId);
      await this.converge();
    });
  }

  /**
   * Deletes every router here (self-fencing: an agent cut off from the control plane for
   * its lost-after time drops its routers, which the control plane moves to another
   * network node, so no two copies answer on one external address). Returns their ids.
   */
  dropAll(): Promise<string[]> {
    return this.serial(async () => {
      const ids = Object.keys(this.state.routers).sort();
      if (ids.length === 0) return [];
      await this.save({ routers: {}, leftovers: [...new Set([...this.state.leftovers, ...ids])] });
      for (const id of ids) {
        this.health.sync(id, undefined);
        this.problems.delete(id);
        this.conntrackErrors.delete(id);
      }
      await this.converge();
      return ids;
    });
  }

  getRouter(routerId: string): Promise<RouterView> {
    return this.serial(async () => {
      if (!this.state.routers[routerId]) throw notFound("router", routerId);
      return this.view(routerId);
    });
  }

  listRouters(): Promise<RouterView[]> {
    return this.serial(async () => {
      const out: RouterView[] = [];
      for (const id of Object.keys(this.state.routers).sort()) out.push(await this.view(id));
      return out;
    });
  }

  /** Whether a router here has an interface on the network (its bridge changing concerns the router). */
  servesNetwork(networkId: string): boolean {
    return Object.values(this.state.routers).some((r) => r.spec.interfaces.some((i) => i.networkId === networkId));
  }

  /** Converges now (what the resync timer runs). */
  resync(): Promise<void> {
    return this.serial(() => this.converge());
  }

  // --- internals -------------------------------------------------------------------

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    return this.queue.run(fn);
  }

  private async save(next: RouterHostState): Promise<void> {
    await replacePrivateFile(join(this.dir, "routers.json"), JSON.stringify(next));
    this.state = next;
  }

  /** What the host must offer before a spec is accepted: nothing is saved or changed otherwise. */
  private async check(spec: RouterDesired): Promise<void> {
    const pn = spec.external.physicalNetwork;
    if (!this.o.physicalNetworks.has(pn)) {
      const known = [...this.o.physicalNetworks.keys()].sort();
      const description = `'${pn}' is not a physical network of this host (configured: ${known.length > 0 ? known.join(", ") : "none; set VMCP_NETWORK_PHYSICAL_NETWORKS"})`;
      throw new QuantixError("failed_precondition", `spec.external.physical_network: ${description}`, [{ field: "spec.external.physical_network", reason: "UNKNOWN_PHYSICAL_NETWORK", description }]);
    }
    for (const o of Object.values(this.state.routers)) {
      if (o.spec.routerId !== spec.routerId && shortId(o.spec.routerId) === shortId(spec.routerId)) throw new QuantixError("failed_precondition", `router '${spec.routerId}' shares its first 12 hex digits (its namespace name) with router '${o.spec.routerId}' on this host`);
    }
    const vpn = spec.vpnConnections ?? [];
    const ipsec = vpn.map((c, i) => ({ c, i })).filter(({ c }) => c.type === "ipsec");
    const noIpsec = ipsec.length > 0 ? await ipsecProblem() : undefined;
    if (noIpsec) {
      const violations = ipsec.map(({ i }) => ({ field: `spec.vpn_connections[${i}].type`, reason: "IPSEC_UNAVAILABLE", description: `IPsec cannot run on this host: ${noIpsec}` }));
      throw new QuantixError("failed_precondition", violations.map((v) => `${v.field}: ${v.description}`).join("; "), violations);
    }
    for (const [i, c] of vpn.entries()) {
      const other = Object.values(this.state.routers)
        .filter((o) => o.spec.routerId !== spec.routerId)
        .flatMap((o) => (o.spec.vpnConnections ?? []).map((x) => ({ x, router: o.spec.routerId })))
        .find(({ x }) => shortId(x.connectionId) === shortId(c.connectionId));
      if (other) {
        const description = `shares its first 12 hex digits (its device's name, unique on the host) with connection '${other.x.connectionId}' of router '${other.router}'`;
        throw new QuantixError("failed_precondition", `spec.vpn_connections[${i}].connection_id: ${description}`, [{ field: `spec.vpn_connections[${i}].connection_id`, reason: "DUPLICATE_ON_HOST", description }]);
      }
    }
    const links = await observeLinks(this.dp);
    const missing = spec.interfaces.map((itf, i) => ({ itf, i })).filter(({ itf }) => links.get(bridgeName(itf.networkId))?.linkinfo?.info_kind !== "bridge");
    if (missing.length > 0) {
      const violations = missing.map(({ itf, i }) => ({ field: `spec.interfaces[${i}].network_id`, reason: "NETWORK_NOT_ON_HOST", description: `network '${itf.networkId}' is not applied on this host (no bridge ${bridgeName(itf.networkId)}): ApplyNetwork first` }));
      throw new QuantixError("failed_precondition", violations.map((v) => `${v.field}: ${v.description}`).join("; "), violations);
    }
  }

  /** The one reconcile: leftovers removed, every router's namespace, links and NAT, stale links removed. */
  private async converge(): Promise<void> {
    const routers = Object.values(this.state.routers).map((x) => x.spec);
    // Tunnels no router wants end first: a process holding a deleted router's namespace would keep it (and its device) alive.
    await this.tunnels.removeExcept(new Set(routers.flatMap(wantedTunnels))).catch(() => undefined);
    await this.ipsec.removeExcept(new Set(routers.filter((r) => ipsecOf(r).length > 0).map((r) => this.nsOf(r.routerId)))).catch(() => undefined);
    const have = await namespaces(this.root).catch(() => new Set<string>());
    const left: string[] = [];
    for (const id of this.state.leftovers) {
      if (this.state.routers[id]) continue;
      const ns = this.nsOf(id);
      if (have.has(ns)) await this.root.ip(["netns", "del", ns]).catch(() => left.push(id));
    }
    if (left.length !== this.state.leftovers.length) await this.save({ ...this.state, leftovers: left });
    for (const r of routers) {
      const probs: Problems = new Map();
      this.problems.set(r.routerId, probs);
      const ns = this.nsOf(r.routerId);
      const rt = new HostExec(ns);
      const p = await problemOf(() => ensureNamespace(this.root, rt, ns));
      if (p) {
        probs.set("NamespaceReady", p);
        continue;
      }
      const ext = await problemOf(() => ensureExternal(this.dp, rt, ns, r, this.o.physicalNetworks.get(r.external.physicalNetwork)));
      if (ext) probs.set("ExternalReady", ext);
      const itfs = await ensureInterfaces(this.dp, rt, ns, r).catch((err: unknown) => new Map([["*", String(err)]]));
      if (itfs.size > 0) probs.set("InterfacesReady", new RouterProblem(/BridgeMissing|no bridge/.test([...itfs.values()].join()) ? "BridgeMissing" : "InterfaceSetupFailed", [...itfs.values()].join("; ")));
      const nat = await this.render(r);
      if (nat) probs.set("NatReady", nat);
      await this.tunnels.removeStaleDevices(rt, new Set(wantedTunnels(r))).catch(() => undefined);
      const vpnProblems: string[] = [];
      for (const c of r.vpnConnections ?? []) {
        if (c.type !== "wireguard") continue;
        const p = await problemOf(() => this.tunnels.ensure(rt, c));
        if (p) vpnProblems.push(`${c.connectionId}: ${p.message}`);
      }
      const ipsecConns = ipsecOf(r);
      if (ipsecConns.length > 0) {
        const p = await problemOf(() => this.ipsec.ensure(ns, r, ipsecConns));
        if (p) vpnProblems.push(`IPsec: ${p.message}`);
      }
      if (vpnProblems.length > 0) probs.set("VpnReady", new RouterProblem("TunnelSetupFailed", vpnProblems.join("; ")));
    }
    await removeStaleRouterLinks(this.dp, new Set(routers.flatMap(wantedRouterLinks))).catch(() => undefined);
  }

  /** The quick path of ApplyRouter: addresses, then the table; false when it failed (then everything converges). */
  private async quickApply(r: RouterDesired): Promise<boolean> {
    const probs = this.problems.get(r.routerId)!;
    if (await problemOf(() => ensureRouterAddresses(new HostExec(this.nsOf(r.routerId)), r))) return false;
    const nat = await this.render(r);
    if (nat) probs.set("NatReady", nat);
    else probs.delete("NatReady");
    return true;
  }

  /** Applies the router's table (one transaction), with the members' health now; its problem, if any. */
  private async render(r: RouterDesired): Promise<RouterProblem | undefined> {
    const rt = new HostExec(this.nsOf(r.routerId));
    const wanted = new Set(lbCounters(r.loadBalancers));
    const have = await readLbCounters(rt).catch(() => new Map<string, unknown>());
    const staleCounters = [...have.keys()].filter((c) => !wanted.has(c));
    const p = await problemOf(() => rt.nft(routerRuleset(r, { healthy: (key) => this.health.healthy(r.routerId, key), staleCounters })));
    return p ? new RouterProblem("NftTransactionRefused", `nft refused the transaction (nothing of it was applied): ${p.message}`) : undefined;
  }

  /** A member's health changed: the router's table again (one render queued per router). */
  private healthChanged(routerId: string): void {
    if (this.rerender.has(routerId)) return;
    this.rerender.add(routerId);
    void this.serial(async () => {
      this.rerender.delete(routerId);
      const x = this.state.routers[routerId];
      if (!x) return;
      const probs = this.problems.get(routerId);
      const p = await this.render(x.spec);
      if (p) probs?.set("NatReady", p);
      else probs?.delete("NatReady");
    }).catch(() => undefined);
  }

  /** Deletes the conntrack entries of floating IPs whose mapping went or moved (inbound: orig dst; outbound: reply dst). */
  private async flush(routerId: string, floating: readonly string[]): Promise<void> {
    const rt = new HostExec(this.nsOf(routerId));
    this.conntrackErrors.delete(routerId);
    for (const ip of floating) {
      for (const dir of ["--orig-dst", "--reply-dst"]) {
        try {
          await rt.inNs("conntrack", ["-D", "-f", "ipv4", dir, ip]);
        } catch (err) {
          // conntrack exits 1 when no entry matched: that is no failure.
          if (err instanceof HostCommandError && /0 flow entries have been deleted/.test(err.message)) continue;
          this.conntrackErrors.set(routerId, `${err instanceof Error ? err.message : String(err)}${/No such file|ENOENT/.test(String(err)) ? " (install the conntrack package)" : ""}`);
          return;
        }
      }
    }
  }

  /**
   * A gratuitous ARP for an address of the router (a floating IP, the router's own, a
   * VIP) on its interface so the neighbours' caches (and switches' tables) follow a move at once: iputils `arping -U`, else busybox's. Without either
   * (or when it fails) nothing is reported: the neighbours learn the address when their
   * cache entry expires and they ask again, which the router answers.
   */
  private async announce(routerId: string, address: string, dev: string): Promise<void> {
    const rt = new HostExec(this.nsOf(routerId));
    const args = ["-U", "-c", "1", "-w", "1", "-I", dev, "-s", address, address];
    try {
      await rt.inNs("arping", args);
    } catch (err) {
      if (!/No such file|ENOENT/.test(String(err))) return;
      await rt.inNs("busybox", ["arping", ...args]).catch(() => undefined);
    }
  }

  /** Observes a router now. */
  private async view(routerId: string): Promise<RouterView> {
    const { spec: r, generation } = this.state.routers[routerId]!;
    const ns = this.nsOf(routerId);
    const rt = new HostExec(ns);
    const probs = this.problems.get(routerId) ?? new Map<string, RouterProblem>();
    const conds: Condition[] = [];
    const failed = (type: string): Condition | undefined => {
      const p = probs.get(type);
      return p ? { type, status: false, reason: p.reason, message: p.message } : undefined;
    };
    const nsUp = (await namespaces(this.root).catch(() => new Set<string>())).has(ns);
    conds.push(
      failed("NamespaceReady") ??
        (!nsUp
          ? { type: "NamespaceReady", status: false, reason: "NamespaceMissing", message: `${ns} does not exist (the next resync creates it)` }
          : !(await routerForwarding(rt))
            ? { type: "NamespaceReady", status: false, reason: "ForwardingOff", message: `net.ipv4.ip_forward is 0 in ${ns}` }
            : { type: "NamespaceReady", status: true, reason: "Forwarding", message: `${ns} exists and forwards IPv4` }),
    );
    const dpLinks = await observeLinks(this.dp).catch(() => new Map());
    const rtLinks = nsUp ? await observeLinks(rt).catch(() => new Map()) : new Map();
    const extAddrs = nsUp ? await addressesOf(rt, ROUTER_EXTERNAL_DEVICE).catch(() => new Set<string>()) : new Set<string>();
    conds.push(failed("ExternalReady") ?? (await this.externalCondition(r, rt, dpLinks, rtLinks, extAddrs)));
    conds.push(failed("InterfacesReady") ?? (await this.interfacesCondition(r, rt, dpLinks, rtLinks)));
    const elems = nsUp ? await mapElements(rt).catch(() => undefined) : undefined;
    conds.push(
      failed("NatReady") ??
        (elems === undefined
          ? { type: "NatReady", status: false, reason: "TableMissing", message: `no table ip ${ROUTER_TABLE} in ${ns}` }
          : { type: "NatReady", status: true, reason: "Applied", message: `${r.floatingIps.length} floating IPs; SNAT ${r.snat ? "on" : "off"}` }),
    );
    const ct = this.conntrackErrors.get(routerId);
    if (ct) conds.push({ type: "ConnectionsFlushed", status: false, reason: "ConntrackFailed", message: `connections of a removed or moved floating IP or load balancer member could not be cut (they last until they end): ${ct}` });
    const vpnConnections: VpnView[] = [];
    const sas = nsUp && ipsecOf(r).length > 0 ? await this.ipsec.observe(ns).catch(() => undefined) : undefined;
    for (const c of r.vpnConnections ?? []) vpnConnections.push(c.type === "ipsec" ? ipsecView(c, nsUp, sas) : await this.vpnView(rt, c, nsUp));
    if (vpnConnections.length > 0) {
      const off = vpnConnections.filter((x) => !x.applied);
      conds.push(
        failed("VpnReady") ??
          (off.length === 0
            ? { type: "VpnReady", status: true, reason: "Applied", message: `${vpnConnections.length} VPN connections configured (peers' handshakes: see each peer's state)` }
            : { type: "VpnReady", status: false, reason: "TunnelNotApplied", message: off.map((x) => `${x.connectionId}: ${x.message}`).join("; ") }),
      );
    }
    const bad = conds.filter((c) => !c.status);
    conds.unshift({ type: "Ready", status: bad.length === 0, reason: bad.length === 0 ? "Converged" : bad[0]!.reason, message: bad.length === 0 ? "the router matches the spec" : bad.map((c) => `${c.type}: ${c.message}`).join("; ") });
    const floatingIps = r.floatingIps.map((f) => ({ ...f, applied: elems !== undefined && elems.dnat.get(f.floatingIp) === f.fixedIp && elems.snat.get(f.fixedIp) === f.floatingIp && extAddrs.has(`${f.floatingIp}/32`) }));
    // Load balancers: their health and counters; their condition is not part of Ready (it is the members', not the router's).
    const loadBalancers = await observeLoadBalancers(r, rt, { nsUp, nat: !probs.has("NatReady") && elems !== undefined, external: extAddrs }, (key) => this.health.view(routerId, key));
    const lbc = lbCondition(loadBalancers);
    if (lbc) conds.push(lbc);
    return { spec: r, generation, namespace: ns, conditions: conds, floatingIps, loadBalancers, vpnConnections };
  }

  /** One VPN connection now. */
  private async vpnView(rt: HostExec, c: VpnConnectionDesired, nsUp: boolean): Promise<VpnView> {
    const base = { connectionId: c.connectionId, type: c.type, interfaceName: "", publicKey: "", listenPort: 0 };
    const down = (message: string): VpnView => ({ ...base, applied: false, message, peers: c.peers.map((p) => ({ peerId: p.peerId, state: "down", lastHandshake: 0, rx: 0n, tx: 0n, endpoint: "" })) });
    const publicKey = wireguardPublicKey(c.privateKey);
    if (!nsUp) return { ...down(`the router's namespace ${rt.netns ?? ""} does not exist`), interfaceName: vpnInterfaceName(c.connectionId), publicKey };
    const t = await this.tunnels.observe(rt, c);
    const now = Math.floor(Date.now() / 1000);
    const peers = c.peers.map((p): VpnPeerView => {
      const w = t.wg?.peers.find((x) => x.publicKey === p.publicKey);
      const hs = w?.latestHandshake ?? 0;
      const state = !t.running || !w ? "down" : hs === 0 ? "connecting" : now - hs <= HANDSHAKE_FRESH_S ? "up" : "down";
      return { peerId: p.peerId, state, lastHandshake: hs, rx: w?.rx ?? 0n, tx: w?.tx ?? 0n, endpoint: w?.endpoint ?? "" };
    });
    return { ...base, interfaceName: t.interfaceName, publicKey, listenPort: t.wg?.listenPort ?? 0, applied: t.problem === "", message: t.problem, peers };
  }

  private async externalCondition(r: RouterDesired, rt: HostExec, dp: Map<string, { master?: string; flags: readonly string[]; address?: string }>, inside: Map<string, { flags: readonly string[]; address?: string }>, addrs: Set<string>): Promise<Condition> {
    const type = "ExternalReady";
    const iface = this.o.physicalNetworks.get(r.external.physicalNetwork);
    const br = externalBridgeName(r.external.physicalNetwork);
    const leg = externalLegName(r.routerId);
    const no = (reason: string, message: string): Condition => ({ type, status: false, reason, message });
    if (iface === undefined) return no("PhysicalNetworkUnknown", `physical network '${r.external.physicalNetwork}' is not configured`);
    if (dp.get(iface)?.master !== br) return no("PhysicalInterfaceNotOnBridge", `${iface} is not on ${br}`);
    if (dp.get(leg)?.master !== br || !dp.get(leg)?.flags.includes("UP")) return no("LinkMissing", `${leg} is not up on ${br}`);
    const q = inside.get(ROUTER_EXTERNAL_DEVICE);
    if (!q?.flags.includes("UP") || q.address !== r.external.mac) return no("LinkMissing", `${ROUTER_EXTERNAL_DEVICE} is not up with MAC ${r.external.mac}`);
    const missing = [...externalAddresses(r)].filter((a) => !addrs.has(a));
    if (missing.length > 0) return no("AddressMissing", `${ROUTER_EXTERNAL_DEVICE} lacks ${missing.join(", ")}`);
    const routes = await rt.ipJson<{ dst: string; gateway?: string }[]>(["route", "show", "default"]).catch(() => []);
    if (!routes.some((x) => x.gateway === r.external.gatewayIp)) return no("RouteMissing", `no default route via ${r.external.gatewayIp}`);
    return { type, status: true, reason: "Up", message: `${ROUTER_EXTERNAL_DEVICE} has ${r.external.address} on physical network '${r.external.physicalNetwork}' (${iface}), default via ${r.external.gatewayIp}` };
  }

  private async interfacesCondition(r: RouterDesired, rt: HostExec, dp: Map<string, { master?: string; flags: readonly string[] }>, inside: Map<string, { flags: readonly string[]; address?: string }>): Promise<Condition> {
    const type = "InterfacesReady";
    for (const itf of r.interfaces) {
      const leg = internalLegName(r.routerId, itf.networkId);
      const dev = routerInterfaceName(itf.networkId);
      const br = bridgeName(itf.networkId);
      if (!dp.has(br)) return { type, status: false, reason: "BridgeMissing", message: `network ${itf.networkId} has no bridge ${br} on this host` };
      if (dp.get(leg)?.master !== br || !dp.get(leg)?.flags.includes("UP")) return { type, status: false, reason: "NotOnBridge", message: `${leg} is not up on ${br}` };
      const l = inside.get(dev);
      if (!l?.flags.includes("UP") || l.address !== itf.mac) return { type, status: false, reason: "LinkMissing", message: `${dev} is not up with MAC ${itf.mac}` };
      const have = await addressesOf(rt, dev).catch(() => new Set<string>());
      const missing = [...interfaceAddresses(r, itf.networkId)].filter((a) => !have.has(a));
      if (missing.length > 0) return { type, status: false, reason: "AddressMissing", message: `${dev} lacks ${missing.join(", ")}` };
    }
    return { type, status: true, reason: "Up", message: `${r.interfaces.length} interfaces up on their networks' bridges` };
  }
}

/** A router's IPsec connections. */
function ipsecOf(r: RouterDesired): VpnConnectionDesired[] {
  return (r.vpnConnections ?? []).filter((c) => c.type === "ipsec");
}

/** An IPsec connection now, from its router's IKE SAs (undefined: charon is not running). */
function ipsecView(c: VpnConnectionDesired, nsUp: boolean, seen: { conns: Set<string>; sas: Map<string, IkeSaView> } | undefined): VpnView {
  const running = nsUp && seen !== undefined;
  const unloaded = c.peers.map((p, i) => ({ p, name: ikeName(c, i) })).filter((x) => !seen?.conns.has(x.name));
  const peers = c.peers.map((p, i): VpnPeerView => {
    const sa = seen?.sas.get(ikeName(c, i));
    const up = sa?.state === "ESTABLISHED" && sa.installed;
    return { peerId: p.peerId, state: !running ? "down" : up ? "up" : "connecting", lastHandshake: sa?.established ?? 0, rx: sa?.rx ?? 0n, tx: sa?.tx ?? 0n, endpoint: sa?.remote ?? "" };
  });
  return { connectionId: c.connectionId, type: "ipsec", interfaceName: IPSEC_DEVICE, publicKey: "", listenPort: 0, applied: running && unloaded.length === 0, message: !running ? "charon is not running in the router's namespace" : unloaded.length > 0 ? `charon has not loaded the connection of peer ${unloaded.map((x) => x.p.peerId).join(", ")}` : "", peers };
}

/** The WireGuard devices a router wants. */
function wantedTunnels(r: RouterDesired): string[] {
  return (r.vpnConnections ?? []).filter((c) => c.type === "wireguard").map((c) => vpnInterfaceName(c.connectionId));
}

/** The floating IP maps as nft shows them; throws when the table is missing. */
async function mapElements(rt: HostExec): Promise<{ dnat: Map<string, string>; snat: Map<string, string> }> {
  const read = async (name: string) => {
    const out = JSON.parse(await rt.inNs("nft", ["-j", "list", "map", "ip", ROUTER_TABLE, name])) as { nftables: { map?: { elem?: [string, string][] } }[] };
    const m = out.nftables.find((x) => x.map)?.map;
    return new Map((m?.elem ?? []).map(([k, v]) => [String(k), String(v)]));
  };
  return { dnat: await read("fip_dnat"), snat: await read("fip_snat") };
}

/** Whether two specs of a router have the same VPN connections (a change needs the full converge: processes, devices, routes). */
function sameVpn(a: RouterDesired, b: RouterDesired): boolean {
  return JSON.stringify(a.vpnConnections ?? []) === JSON.stringify(b.vpnConnections ?? []);
}

/** Whether two specs of a router have the same links: external side and internal interfaces (addresses, MACs, networks). */
function sameLinks(a: RouterDesired, b: RouterDesired): boolean {
  return JSON.stringify([a.external, a.interfaces]) === JSON.stringify([b.external, b.interfaces]);
}
