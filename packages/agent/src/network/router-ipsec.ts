import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { closeSync, openSync } from "node:fs";
import { access, constants, mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { replacePrivateFile } from "../private-file.js";
import { endProcess, isProcessAlive, pidFileProcess } from "../process-state.js";
import { HostCommandError, HostExec } from "./host-exec.js";
import type { RouterDesired, VpnConnectionDesired } from "./router-model.js";

/**
 * A router's IPsec connections: one strongSwan `charon` per router that has any, inside
 * the router's namespace. This kernel has no ESP transform, so ESP runs in user space
 * (charon's kernel-libipsec plugin: a TUN device `ipsec0` in the router's namespace, ESP
 * always UDP-encapsulated on port 4500, routes to the remote subnets in table 220). charon
 * keeps fixed paths under /run (its pid file, its VICI socket): it is started by
 * `ip netns exec <ns> sh -c 'mount --bind "$1" /run && exec charon' sh <dir>/run`, so each
 * router's charon has its own /run (`<stateDir>/network/ipsec/qr…/run`) in the private
 * mount namespace `ip netns exec` gives it. Connections and PSKs are loaded with
 * `swanctl --load-all` from a 0600 file deleted right after (never argv).
 */

const CHARON = "/usr/lib/ipsec/charon";
const LIBIPSEC = "/usr/lib/ipsec/plugins/libstrongswan-kernel-libipsec.so";
const OPENSSL = "/usr/lib/ipsec/plugins/libstrongswan-openssl.so";
/** The device kernel-libipsec creates in the router's namespace. */
export const IPSEC_DEVICE = "ipsec0";

/** Why IPsec cannot run here, or undefined. */
export async function ipsecProblem(): Promise<string | undefined> {
  const missing: string[] = [];
  const has = (p: string, mode = constants.X_OK) => access(p, mode).then(() => true, () => false);
  if (!(await has("/dev/net/tun", constants.R_OK | constants.W_OK))) missing.push("/dev/net/tun");
  if (!(await has(CHARON))) missing.push(`${CHARON} (Debian: strongswan-charon)`);
  if (!(await has(LIBIPSEC, constants.R_OK))) missing.push("charon's kernel-libipsec plugin (Debian: libcharon-extra-plugins)");
  if (!(await has(OPENSSL, constants.R_OK))) missing.push("charon's openssl plugin (Debian: libstrongswan-standard-plugins)");
  if (!(await has("/usr/sbin/swanctl"))) missing.push("swanctl (Debian: strongswan-swanctl)");
  return missing.length === 0 ? undefined : `missing: ${missing.join(", ")}`;
}

const STRONGSWAN_CONF = [
  "charon {",
  "  load = random nonce openssl aes sha1 sha2 hmac kdf gmp pubkey kernel-libipsec kernel-netlink socket-default vici",
  "  port = 500",
  "  port_nat_t = 4500",
  "  plugins {",
  "    vici {",
  "      socket = unix:///run/charon.vici",
  "    }",
  "  }",
  "  filelog {",
  "    stderr {",
  "      default = 1",
  "    }",
  "  }",
  "}",
  "",
].join("\n");

/** The IKE connection name of a peer (derived from ids: hex and an index). */
export const ikeName = (c: VpnConnectionDesired, peer: number): string => `c${c.connectionId.replace(/-/g, "").slice(0, 12)}p${peer}`;

/** swanctl.conf for the router's IPsec connections (values validated: no quotes, no line breaks). */
function swanctlConf(r: RouterDesired, conns: readonly VpnConnectionDesired[]): string {
  const own = r.external.address.split("/")[0]!;
  const out: string[] = ["connections {"];
  const secrets: string[] = ["secrets {"];
  for (const c of conns) {
    c.peers.forEach((p, i) => {
      const [addr, port] = p.endpoint.split(":");
      const name = ikeName(c, i);
      const lid = c.localId || own;
      const rid = p.remoteId || addr!;
      const t = c.ipsec;
      out.push(
        `  ${name} {`,
        `    version = ${t?.ikeVersion ?? 2}`,
        ...(t && t.ikeProposals.length > 0 ? [`    proposals = ${t.ikeProposals.join(",")}`] : []),
        ...(t && t.ikeLifetime > 0 ? [`    rekey_time = ${t.ikeLifetime}s`] : []),
        `    local_addrs = ${own}`,
        `    remote_addrs = ${addr}`,
        `    remote_port = ${port}`,
        "    encap = yes",
        "    keyingtries = 0",
        `    dpd_delay = ${t?.dpd || 10}s`,
        `    local {`,
        "      auth = psk",
        `      id = "${lid}"`,
        "    }",
        "    remote {",
        "      auth = psk",
        `      id = "${rid}"`,
        "    }",
        "    children {",
        "      net {",
        `        local_ts = ${c.localSubnets.join(",")}`,
        `        remote_ts = ${p.remoteSubnets.join(",")}`,
        ...(t && t.espProposals.length > 0 ? [`        esp_proposals = ${t.espProposals.join(",")}`] : []),
        ...(t && t.ipsecLifetime > 0 ? [`        rekey_time = ${t.ipsecLifetime}s`] : []),
        "        start_action = start",
        "        dpd_action = restart",
        "        close_action = start",
        "      }",
        "    }",
        "  }",
      );
      secrets.push(`  ike-${name} {`, `    id-l = "${lid}"`, `    id-r = "${rid}"`, `    secret = "${p.presharedKey}"`, "  }");
    });
  }
  return [...out, "}", ...secrets, "}", ""].join("\n");
}

/** One IKE SA as `swanctl --list-sas` shows it. */
export interface IkeSaView {
  readonly state: string;
  /** Unix seconds it was established, 0: not. */
  readonly established: number;
  readonly remote: string;
  readonly installed: boolean;
  readonly rx: bigint;
  readonly tx: bigint;
}

/** Parses `swanctl --list-sas` text: per IKE SA name, its state, age, remote and its children's bytes. */
export function parseSas(text: string, now = Math.floor(Date.now() / 1000)): Map<string, IkeSaView> {
  const out = new Map<string, IkeSaView>();
  let cur: { name: string; v: { state: string; established: number; remote: string; installed: boolean; rx: bigint; tx: bigint } } | undefined;
  // Both sides initiate, so a name may have two IKE SAs (each with child SAs carrying
  // traffic): the better state counts, the bytes add up, the latest establishment shows.
  const rank = (v: IkeSaView) => (v.state === "ESTABLISHED" ? 2 : 0) + (v.installed ? 1 : 0);
  const flush = () => {
    if (!cur) return;
    const had = out.get(cur.name);
    if (!had) return void out.set(cur.name, cur.v);
    const best = rank(cur.v) > rank(had) ? cur.v : had;
    out.set(cur.name, { ...best, established: Math.max(had.established, cur.v.established), rx: had.rx + cur.v.rx, tx: had.tx + cur.v.tx });
  };
  for (const line of text.split("\n")) {
    const head = /^(\S+): #\d+, (\w+),/.exec(line);
    if (head) {
      flush();
      cur = { name: head[1]!, v: { state: head[2]!, established: 0, remote: "", installed: false, rx: 0n, tx: 0n } };
      continue;
    }
    if (!cur) continue;
    const remote = /^\s+remote\s+'[^']*' @ ([0-9.]+)\[(\d+)\]/.exec(line);
    if (remote) cur.v.remote = `${remote[1]}:${remote[2]}`;
    const est = /^\s+established (\d+)s ago/.exec(line);
    if (est) cur.v.established = now - Number(est[1]);
    if (/^\s+\S+: #\d+, reqid \d+, INSTALLED/.test(line)) cur.v.installed = true;
    const bytes = /^\s+(in|out)\s+[0-9a-f]+(?:_i|_o)?(?:\s*\([^)]*\))?,\s+(\d+) bytes/.exec(line);
    if (bytes) {
      if (bytes[1] === "in") cur.v.rx += BigInt(bytes[2]!);
      else cur.v.tx += BigInt(bytes[2]!);
    }
  }
  flush();
  return out;
}

/** The IPsec daemons of every router of one RouterHost. */
export class IpsecDaemons {
  private readonly loaded = new Map<string, string>();
  /** Pids this object ended on purpose (their exit is no failure). */
  private readonly ended = new Set<number>();
  private closed = false;

  constructor(
    /** `<stateDir>/network/ipsec`. */
    private readonly dir: string,
    /** Called when a charon this object started exits by itself. */
    private readonly onExit: () => void,
  ) {}

  /** Stops reacting to exits (the daemons go on). */
  close(): void {
    this.closed = true;
  }

  private runDir(ns: string): string {
    return join(this.dir, ns, "run");
  }

  private uri(ns: string): string {
    return `unix://${join(this.runDir(ns), "charon.vici")}`;
  }

  /** Makes the router's charon run with its IPsec connections loaded; throws with why not. */
  async ensure(ns: string, r: RouterDesired, conns: readonly VpnConnectionDesired[]): Promise<void> {
    let pid = await this.runningPid(ns);
    if (!pid) {
      pid = await this.start(ns);
      this.loaded.delete(ns);
    }
    const text = swanctlConf(r, conns);
    const hash = createHash("sha256").update(text).digest("hex");
    const want = conns.flatMap((c) => c.peers.map((_, i) => ikeName(c, i))).sort();
    const have = await this.swanctl(ns, ["--list-conns"])
      .then((t) => [...t.matchAll(/^(\S+): IKEv/gm)].map((m) => m[1]!).sort())
      .catch(() => [] as string[]);
    if (this.loaded.get(ns) === hash && have.join() === want.join()) return;
    const file = join(this.dir, ns, "swanctl.conf");
    try {
      await replacePrivateFile(file, text);
      await this.swanctl(ns, ["--load-all", "--file", file]);
    } finally {
      await rm(file, { force: true });
    }
    this.loaded.set(ns, hash);
  }

  /** The router's loaded connections and IKE SAs by connection name; undefined when its charon is not running. */
  async observe(ns: string): Promise<{ conns: Set<string>; sas: Map<string, IkeSaView> } | undefined> {
    if (!(await this.runningPid(ns))) return undefined;
    const conns = new Set([...(await this.swanctl(ns, ["--list-conns"]).catch(() => "")).matchAll(/^(\S+): IKEv/gm)].map((m) => m[1]!));
    return { conns, sas: parseSas(await this.swanctl(ns, ["--list-sas"]).catch(() => "")) };
  }

  /** Whether the router's charon runs. */
  async running(ns: string): Promise<boolean> {
    return (await this.runningPid(ns)) !== 0;
  }

  /** Ends the charons (and removes the directories) of the namespaces not in `wanted`. */
  async removeExcept(wanted: ReadonlySet<string>): Promise<void> {
    for (const ns of await readdir(this.dir).catch(() => [] as string[])) {
      if (!/^qr[0-9a-f]{12}(-[0-9a-f]{8})?$/.test(ns) || wanted.has(ns)) continue;
      // Its namespace may be gone already: the pid file and the command line suffice here.
      const pid = await this.runningPid(ns, false);
      if (pid) await this.kill(ns, pid);
      await rm(join(this.dir, ns), { recursive: true, force: true });
      this.loaded.delete(ns);
    }
  }

  private swanctl(ns: string, args: readonly string[]): Promise<string> {
    return new HostExec().inNs("swanctl", [...args, "--uri", this.uri(ns)]);
  }

  private async start(ns: string): Promise<number> {
    const d = join(this.dir, ns);
    await mkdir(this.runDir(ns), { recursive: true, mode: 0o700 });
    await writeFile(join(d, "strongswan.conf"), STRONGSWAN_CONF, { mode: 0o600 });
    await rm(join(this.runDir(ns), "charon.pid"), { force: true });
    const logFd = openSync(join(d, "log"), "w");
    const [bin, argv] = new HostExec(ns).argv("sh", ["-c", `mount --bind "$1" /run && exec ${CHARON}`, "sh", this.runDir(ns)]);
    const child = spawn(bin, argv, { detached: true, stdio: ["ignore", logFd, logFd], env: { ...process.env, STRONGSWAN_CONF: join(d, "strongswan.conf") } });
    closeSync(logFd);
    let exited: string | undefined;
    child.on("error", (err) => (exited = err.message));
    child.on("exit", (code, signal) => {
      exited = signal ?? String(code);
      if (child.pid !== undefined && this.ended.delete(child.pid)) return;
      if (!this.closed) setTimeout(() => this.closed || this.onExit(), 1000).unref();
    });
    child.unref();
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline && exited === undefined) {
      const pid = await this.runningPid(ns);
      if (pid && (await this.swanctl(ns, ["--stats"]).then(() => true, () => false))) return pid;
      await new Promise((r) => setTimeout(r, 50));
    }
    if (exited === undefined && child.pid !== undefined) await this.kill(ns, child.pid);
    const log = (await readFile(join(d, "log"), "utf8").catch(() => "")).trim().split("\n").slice(-3).join(" | ");
    throw new HostCommandError("charon", [], `did not start (${exited === undefined ? "no VICI socket after 10 s" : `exited: ${exited}`})${log ? `: ${log}` : ""}`);
  }

  /** The router's charon (its pid file, checked: charon's command line, in the router's network namespace), 0 when none. */
  private async runningPid(ns: string, sameNetns = true): Promise<number> {
    const pid = await pidFileProcess(join(this.runDir(ns), "charon.pid"), (argv) => argv[0] === CHARON);
    if (!pid || !sameNetns) return pid;
    const [a, b] = await Promise.all([stat(`/proc/${pid}/ns/net`).catch(() => undefined), stat(`/run/netns/${ns}`).catch(() => undefined)]);
    return a && b && a.ino === b.ino && a.dev === b.dev ? pid : 0;
  }

  private async kill(ns: string, pid: number): Promise<void> {
    this.ended.add(pid);
    await endProcess(pid, async () => isProcessAlive(pid));
    await rm(join(this.runDir(ns), "charon.pid"), { force: true });
  }
}
