import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { connect } from "node:net";
import { join } from "node:path";
import { replacePrivateFile } from "../private-file.js";
import { endProcess, pidFileProcess } from "../process-state.js";
import { HostCommandError, type HostExec } from "./host-exec.js";
import { observeLinks } from "./links.js";
import { OWNED_VPN_LINK, vpnInterfaceName, type VpnConnectionDesired } from "./router-model.js";

/**
 * A router's WireGuard tunnels, run in user space (this kernel may have no WireGuard
 * module): per connection one `wireguard-go -f qw<12 hex>` process started inside the
 * router's namespace, detached (the tunnel carries traffic while the agent restarts),
 * found again by its pid file under `<stateDir>/network/vpn/qw…/` and checked by its
 * command line. It makes the TUN device `qw…` and serves its UAPI socket
 * (/var/run/wireguard/qw….sock, host-wide: names are unique on the host). Keys go to it
 * by `wg syncconf` from a 0600 file deleted right after, never in argv. Level-based: what
 * `wg show qw… dump` and `ip` show is compared with the spec and only a difference is
 * written (syncconf keeps the sessions of unchanged peers).
 */

/** A peer as `wg show dump` shows it. */
export interface WgPeerView {
  readonly publicKey: string;
  readonly hasPresharedKey: boolean;
  /** "a.b.c.d:port" or "". */
  readonly endpoint: string;
  readonly allowedIps: readonly string[];
  /** Unix seconds, 0: never. */
  readonly latestHandshake: number;
  readonly rx: bigint;
  readonly tx: bigint;
  /** 0: off. */
  readonly keepalive: number;
}

/** A WireGuard device as observed. */
export interface WgView {
  readonly publicKey: string;
  readonly listenPort: number;
  readonly peers: readonly WgPeerView[];
}

/** One connection as observed. */
export interface TunnelView {
  readonly interfaceName: string;
  readonly running: boolean;
  /** Undefined when the device does not answer. */
  readonly wg: WgView | undefined;
  /** "" when the tunnel matches the spec; else why not. */
  readonly problem: string;
}

/** The `wg setconf` text of a connection (values validated: no line breaks, no '='-less keys). */
function wgConf(c: VpnConnectionDesired): string {
  const lines = ["[Interface]", `PrivateKey = ${c.privateKey}`, `ListenPort = ${c.listenPort}`];
  for (const p of c.peers) {
    lines.push("", "[Peer]", `PublicKey = ${p.publicKey}`);
    if (p.presharedKey !== "") lines.push(`PresharedKey = ${p.presharedKey}`);
    if (p.endpoint !== "") lines.push(`Endpoint = ${p.endpoint}`);
    lines.push(`AllowedIPs = ${p.remoteSubnets.join(", ")}`);
    if (p.keepalive > 0) lines.push(`PersistentKeepalive = ${p.keepalive}`);
  }
  return `${lines.join("\n")}\n`;
}

/** Parses `wg show <if> dump`: the first line is the device, each next one a peer. */
function parseDump(text: string): { privateKey: string; view: WgView; presharedKeys: Map<string, string> } {
  const [dev, ...rest] = text.trim().split("\n").map((l) => l.split("\t"));
  const presharedKeys = new Map<string, string>();
  const peers = rest
    .filter((f) => f.length >= 8)
    .map((f) => {
      presharedKeys.set(f[0]!, f[1] === "(none)" ? "" : f[1]!);
      return {
        publicKey: f[0]!,
        hasPresharedKey: f[1] !== "(none)",
        endpoint: f[2] === "(none)" ? "" : f[2]!,
        allowedIps: f[3] === "(none)" ? [] : f[3]!.split(",").filter((x) => x !== ""),
        latestHandshake: Number(f[4]),
        rx: BigInt(f[5]!),
        tx: BigInt(f[6]!),
        keepalive: f[7] === "off" ? 0 : Number(f[7]),
      };
    });
  return { privateKey: dev?.[0] === "(none)" ? "" : (dev?.[0] ?? ""), view: { publicKey: dev?.[1] === "(none)" ? "" : (dev?.[1] ?? ""), listenPort: Number(dev?.[2] ?? 0), peers }, presharedKeys };
}

/** What of the device differs from the spec ("" when nothing). */
function configDiff(c: VpnConnectionDesired, d: ReturnType<typeof parseDump>): string {
  if (d.privateKey !== c.privateKey) return "its private key differs";
  if (d.view.listenPort !== c.listenPort) return `it listens on ${d.view.listenPort}, not ${c.listenPort}`;
  const have = new Map(d.view.peers.map((p) => [p.publicKey, p]));
  if (have.size !== c.peers.length || c.peers.some((p) => !have.has(p.publicKey))) return "its peers differ";
  for (const p of c.peers) {
    const h = have.get(p.publicKey)!;
    if ((d.presharedKeys.get(p.publicKey) ?? "") !== p.presharedKey) return `peer ${p.peerId}'s preshared key differs`;
    if ([...h.allowedIps].sort().join() !== [...p.remoteSubnets].sort().join()) return `peer ${p.peerId}'s allowed IPs are ${h.allowedIps.join(", ") || "none"}`;
    if (h.keepalive !== p.keepalive) return `peer ${p.peerId}'s keepalive differs`;
    // After a handshake the endpoint may have roamed to where the peer's packets come from.
    if (p.endpoint !== "" && h.latestHandshake === 0 && h.endpoint !== p.endpoint) return `peer ${p.peerId}'s endpoint is ${h.endpoint || "none"}`;
  }
  return "";
}

/** The tunnels of every router of one RouterHost. */
export class WireguardTunnels {
  /** The hash of the configuration last written per device (a restart writes it once more: syncconf keeps sessions). */
  private readonly written = new Map<string, string>();
  /** Pids this object ended on purpose (their exit is no failure). */
  private readonly ended = new Set<number>();
  private closed = false;

  constructor(
    /** `<stateDir>/network/vpn`. */
    private readonly dir: string,
    /** Called (once per exit) when a tunnel process this object started exits by itself. */
    private readonly onExit: () => void,
  ) {}

  /** Stops reacting to exits (the processes go on). */
  close(): void {
    this.closed = true;
  }

  /** Makes a connection's tunnel match; throws with why not. */
  async ensure(rt: HostExec, c: VpnConnectionDesired): Promise<void> {
    const dev = vpnInterfaceName(c.connectionId);
    const links = await observeLinks(rt);
    let pid = await this.runningPid(dev);
    if (pid && !links.has(dev)) {
      // The process runs but its device went (e.g. deleted by hand): start afresh.
      await this.kill(dev, pid);
      pid = 0;
    }
    if (!pid) {
      if (links.has(dev)) await rt.ip(["link", "del", "dev", dev]).catch(() => undefined);
      await this.start(rt, dev);
      this.written.delete(dev);
    }
    const dump = parseDump(await rt.inNs("wg", ["show", dev, "dump"]));
    const hash = createHash("sha256").update(wgConf(c)).digest("hex");
    if (this.written.get(dev) !== hash || configDiff(c, dump) !== "") {
      const file = join(this.dir, dev, "wg.conf");
      try {
        await replacePrivateFile(file, wgConf(c));
        await rt.inNs("wg", ["syncconf", dev, file]);
      } finally {
        await rm(file, { force: true });
      }
      this.written.set(dev, hash);
    }
    const link = (await observeLinks(rt)).get(dev);
    if (!link?.flags.includes("UP")) await rt.ip(["link", "set", "dev", dev, "up"]);
    const want = new Set(c.peers.flatMap((p) => p.remoteSubnets));
    const routes = await rt.ipJson<{ dst: string }[]>(["route", "show", "dev", dev]);
    for (const r of routes) if (!want.has(r.dst)) await rt.ip(["route", "del", r.dst, "dev", dev]).catch(() => undefined);
    const have = new Set(routes.map((r) => r.dst));
    for (const s of want) if (!have.has(s)) await rt.ip(["route", "replace", s, "dev", dev]);
  }

  /** A connection's tunnel now. */
  async observe(rt: HostExec, c: VpnConnectionDesired): Promise<TunnelView> {
    const dev = vpnInterfaceName(c.connectionId);
    const running = (await this.runningPid(dev)) !== 0;
    if (!running) return { interfaceName: dev, running, wg: undefined, problem: `wireguard-go for ${dev} is not running${await this.lastLog(dev)}` };
    const dump = await rt
      .inNs("wg", ["show", dev, "dump"])
      .then(parseDump)
      .catch(() => undefined);
    if (!dump) return { interfaceName: dev, running, wg: undefined, problem: `${dev} does not answer wg` };
    const diff = configDiff(c, dump);
    if (diff !== "") return { interfaceName: dev, running, wg: dump.view, problem: `${dev}: ${diff}` };
    const link = (await observeLinks(rt).catch(() => new Map())).get(dev) as { flags: readonly string[] } | undefined;
    if (!link?.flags.includes("UP")) return { interfaceName: dev, running, wg: dump.view, problem: `${dev} is not up` };
    const routes = new Set((await rt.ipJson<{ dst: string }[]>(["route", "show", "dev", dev]).catch(() => [])).map((r) => r.dst));
    const missing = c.peers.flatMap((p) => p.remoteSubnets).filter((s) => !routes.has(s));
    if (missing.length > 0) return { interfaceName: dev, running, wg: dump.view, problem: `no route to ${missing.join(", ")} via ${dev}` };
    return { interfaceName: dev, running, wg: dump.view, problem: "" };
  }

  /** Deletes, in a router's namespace, the VPN devices no connection of it wants (their process exits with them). */
  async removeStaleDevices(rt: HostExec, wanted: ReadonlySet<string>): Promise<void> {
    const links = await observeLinks(rt);
    for (const name of links.keys()) if (OWNED_VPN_LINK.test(name) && !wanted.has(name)) await rt.ip(["link", "del", "dev", name]).catch(() => undefined);
  }

  /** Ends the processes (and forgets the files) of the devices no router wants. */
  async removeExcept(wanted: ReadonlySet<string>): Promise<void> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    for (const dev of names) {
      if (!OWNED_VPN_LINK.test(dev) || wanted.has(dev)) continue;
      const pid = await this.runningPid(dev);
      if (pid) await this.kill(dev, pid);
      await rm(join(this.dir, dev), { recursive: true, force: true });
      this.written.delete(dev);
    }
  }

  /**
   * Removes the UAPI socket a dead process left: otherwise wireguard-go's own clean-up of
   * it races with `wg` (which unlinks a socket it cannot connect to) and fails with
   * ENOENT. A socket something still answers on belongs to another process: refused.
   */
  private async clearStaleSocket(dev: string): Promise<void> {
    const path = `/var/run/wireguard/${dev}.sock`;
    const answer = await new Promise<"live" | "dead" | "none">((resolve) => {
      const sock = connect(path);
      sock.once("connect", () => {
        sock.destroy();
        resolve("live");
      });
      sock.once("error", (err: NodeJS.ErrnoException) => resolve(err.code === "ENOENT" ? "none" : "dead"));
    });
    if (answer === "live") throw new HostCommandError("wireguard-go", ["-f", dev], `${path} is served by a process this agent did not start`);
    if (answer === "dead") await rm(path, { force: true });
  }

  private async start(rt: HostExec, dev: string): Promise<void> {
    await this.clearStaleSocket(dev);
    const d = join(this.dir, dev);
    await mkdir(d, { recursive: true, mode: 0o700 });
    await rm(join(d, "pid"), { force: true });
    const logFd = openSync(join(d, "log"), "w");
    const [bin, argv] = rt.argv("wireguard-go", ["-f", dev]);
    const child = spawn(bin, argv, { detached: true, stdio: ["ignore", logFd, logFd], env: { ...process.env, LOG_LEVEL: "error" } });
    closeSync(logFd);
    let exited: string | undefined;
    child.on("error", (err) => (exited = err.message));
    child.on("exit", (code, signal) => {
      exited = signal ?? String(code);
      if (child.pid !== undefined && this.ended.delete(child.pid)) return;
      if (!this.closed) setTimeout(() => this.closed || this.onExit(), 1000).unref();
    });
    child.unref();
    if (child.pid !== undefined) await writeFile(join(d, "pid"), String(child.pid), { mode: 0o600 });
    // Up when its UAPI socket answers.
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline && exited === undefined) {
      if (await rt.inNs("wg", ["show", dev, "dump"]).then(() => true, () => false)) return;
      await new Promise((r) => setTimeout(r, 50));
    }
    if (exited === undefined && child.pid !== undefined) await this.kill(dev, child.pid);
    throw new HostCommandError("wireguard-go", ["-f", dev], `did not start (${exited === undefined ? "no UAPI socket after 5 s" : `exited: ${exited}`})${await this.lastLog(dev)}`);
  }

  /** The running wireguard-go of `dev` (by its pid file, checked by its command line), 0 when none. */
  private runningPid(dev: string): Promise<number> {
    return pidFileProcess(join(this.dir, dev, "pid"), (argv) => /(^|\/)wireguard-go$/.test(argv[0] ?? "") && argv.includes("-f") && argv.includes(dev));
  }

  private async kill(dev: string, pid: number): Promise<void> {
    this.ended.add(pid);
    await endProcess(pid, async () => (await this.runningPid(dev)) === pid);
    await rm(join(this.dir, dev, "pid"), { force: true });
  }

  private async lastLog(dev: string): Promise<string> {
    const lines = (await readFile(join(this.dir, dev, "log"), "utf8").catch(() => "")).trim().split("\n").filter((l) => l !== "").slice(-3);
    return lines.length ? `: ${lines.join(" | ")}` : "";
  }
}
