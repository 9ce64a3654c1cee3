import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { chmod, copyFile, mkdir, mkdtemp, readdir, rename, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { ensureDebianPackages } from "./guest.js";

/**
 * The "net probe" test guest: Debian's kernel plus a busybox initramfs that loads
 * virtio-net, takes a DHCP lease on eth0 (retrying until it gets one), sets the host name
 * the lease gave, serves TCP port 22 (every connection accepted, then closed), and then,
 * every ~2 s forever, checks what its kernel command line asks (see {@link netProbeKernelArgs})
 * and prints the results on ttyS0 (see {@link parseNetProbeConsole}). Built once per
 * machine, cached under os.tmpdir().
 */

const run = promisify(execFile);

/** Console line prefixes the guest prints. */
export const NET_PROBE = {
  /** `QX-LEASE ip=<ip> router=<routers> dns=<servers> hostname=<name> mtu=<mtu>`, once the lease is bound. */
  lease: "QX-LEASE",
  /** `QX-LISTEN 22`: the TCP listener runs. */
  listen: "QX-LISTEN",
  /** `QX-ROUND <n>`: a round of checks starts. */
  round: "QX-ROUND",
  /** `QX-END <n>`: round n is complete. */
  end: "QX-END",
  /** `QX-PING <addr> ok|fail`. */
  ping: "QX-PING",
  /** `QX-TCP <addr> ok|fail`: a TCP connect to port 22. */
  tcp: "QX-TCP",
  /** `QX-SPOOF <target> ok|fail`: a ping to the first ping target from the spoofed source. */
  spoof: "QX-SPOOF",
  /** `QX-DNS <name> <address>|fail`. */
  dns: "QX-DNS",
} as const;

/** Debian's kernel has virtio and virtio-net as modules: these, loaded in this order, give a guest eth0. */
export const VIRTIO_NET_MODULES: readonly string[] = [
  "kernel/drivers/virtio/virtio_ring.ko",
  "kernel/drivers/virtio/virtio.ko",
  "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
  "kernel/drivers/virtio/virtio_pci_legacy_dev.ko",
  "kernel/drivers/virtio/virtio_pci.ko",
  "kernel/net/core/failover.ko",
  "kernel/drivers/net/net_failover.ko",
  "kernel/drivers/net/virtio_net.ko",
];

// Everything the host asks comes in /proc/cmdline (qx.* words, parsed here by the shell);
// nothing the guest prints is run on the host. udhcpc -q quits once bound, the address it
// set staying. The listener is busybox nc's persistent mode: one /bin/true per connection.
// The spoofed address is added after the lease, as a /32, so the lease's address stays
// the source of all other traffic; the spoofed ping runs after the plain pings, whose ARP
// entry for the target it reuses.
const INIT = `#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
exec 0</dev/console 1>/dev/console 2>&1
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sys /sys
mkdir -p /tmp
${VIRTIO_NET_MODULES.map((m) => `insmod /lib/modules/${path.basename(m)}`).join("\n")}
ip link set lo up
ip link set eth0 up
PINGS=
TCPS=
SPOOF=
DNSNAME=
for w in $(cat /proc/cmdline); do
  case "$w" in
    qx.ping=*) PINGS=$(echo "\${w#qx.ping=}" | tr , ' ') ;;
    qx.tcp=*) TCPS=$(echo "\${w#qx.tcp=}" | tr , ' ') ;;
    qx.spoof=*) SPOOF="\${w#qx.spoof=}" ;;
    qx.dns=*) DNSNAME="\${w#qx.dns=}" ;;
  esac
done
cat > /udhcpc.sh <<'S'
#!/bin/sh
[ "$1" = bound ] || exit 0
[ -n "$mtu" ] && ip link set eth0 mtu "$mtu"
pfx="$mask"
[ -n "$pfx" ] || pfx=$(ipcalc -p "$ip" "$subnet" | cut -d= -f2)
ip addr add "$ip/$pfx" dev eth0
gw=$(echo $router | cut -d' ' -f1)
[ -n "$gw" ] && ip route replace default via "$gw" dev eth0
[ -n "$hostname" ] && hostname "$hostname"
echo $dns | cut -d' ' -f1 > /tmp/dns
echo "${NET_PROBE.lease} ip=$ip router=$router dns=$dns hostname=$hostname mtu=$mtu"
exit 0
S
chmod +x /udhcpc.sh
until udhcpc -i eth0 -n -q -t 5 -T 2 -O mtu -s /udhcpc.sh; do echo "QX-NO-LEASE"; done
nc -ll -p 22 -e /bin/true &
echo "${NET_PROBE.listen} 22"
DNS=$(cat /tmp/dns)
set -- $PINGS
FIRST="$1"
[ -n "$SPOOF" ] && ip addr add "$SPOOF/32" dev eth0
n=0
while true; do
  n=$((n+1))
  echo "${NET_PROBE.round} $n"
  for a in $PINGS; do
    if ping -c1 -W1 "$a" >/dev/null 2>&1; then r=ok; else r=fail; fi
    echo "${NET_PROBE.ping} $a $r"
  done
  for a in $TCPS; do
    if timeout 4 nc -w 2 "$a" 22 </dev/null >/dev/null 2>&1; then r=ok; else r=fail; fi
    echo "${NET_PROBE.tcp} $a $r"
  done
  if [ -n "$SPOOF" ] && [ -n "$FIRST" ]; then
    if ping -c1 -W1 -I "$SPOOF" "$FIRST" >/dev/null 2>&1; then r=ok; else r=fail; fi
    echo "${NET_PROBE.spoof} $FIRST $r"
  fi
  if [ -n "$DNSNAME" ]; then
    r=$(timeout 4 nslookup "$DNSNAME" "$DNS" 2>/dev/null | awk '/^Name:/ { f = 1 } f && /^Address/ { sub(/^Address[^:]*:[ \\t]*/, ""); print; exit }')
    echo "${NET_PROBE.dns} $DNSNAME \${r:-fail}"
  fi
  echo "${NET_PROBE.end} $n"
  sleep 2
done
`;

/** Paths of the built net probe guest. */
export interface NetProbeGuest {
  readonly kernelPath: string;
  readonly initrdPath: string;
  /** The directory holding both: an agent's image directories must include it. */
  readonly imageDir: string;
}

/** Builds (or reuses from the cache) the net probe guest. */
export async function buildNetProbeGuest(): Promise<NetProbeGuest> {
  await ensureDebianPackages(["busybox-static", "cpio"]);
  const out = await run("apt-cache", ["depends", "linux-image-amd64"]);
  const pkg = /Depends:\s*(linux-image-[0-9][A-Za-z0-9.+-]*)/.exec(out.stdout)?.[1];
  if (!pkg) throw new Error("cannot find the kernel package linux-image-amd64 depends on");
  const hash = createHash("sha256").update(INIT).digest("hex").slice(0, 12);
  const dir = path.join(os.tmpdir(), `quantix-net-probe-${pkg}-${hash}`);
  const guest = { kernelPath: path.join(dir, "vmlinuz"), initrdPath: path.join(dir, "initrd.gz"), imageDir: dir };
  if (existsSync(guest.initrdPath)) return guest;
  const work = await mkdtemp(path.join(os.tmpdir(), "quantix-net-probe-build-"));
  try {
    // apt-get download drops privileges to _apt, which must be able to write here.
    await chmod(work, 0o777);
    await run("apt-get", ["download", pkg], { cwd: work, maxBuffer: 64 << 20 });
    const deb = (await readdir(work)).find((f) => f.endsWith(".deb"));
    if (!deb) throw new Error(`apt-get download ${pkg} produced no .deb`);
    const x = path.join(work, "x");
    await run("dpkg-deb", ["-x", path.join(work, deb), x], { maxBuffer: 64 << 20 });
    const version = (await readdir(path.join(x, "lib/modules")))[0]!;
    const root = path.join(work, "root");
    for (const d of ["bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "lib/modules"]) await mkdir(path.join(root, d), { recursive: true });
    await copyFile("/bin/busybox", path.join(root, "bin/busybox"));
    for (const m of VIRTIO_NET_MODULES) await copyFile(path.join(x, "lib/modules", version, m), path.join(root, "lib/modules", path.basename(m)));
    await writeFile(path.join(root, "init"), INIT, { mode: 0o755 });
    await run("sh", ["-c", "find . | cpio -o -H newc --quiet | gzip -1 > ../initrd.gz"], { cwd: root, maxBuffer: 64 << 20 });
    // Built aside and renamed into place: a concurrent builder never sees half a guest.
    const tmp = path.join(work, "out");
    await mkdir(tmp);
    await chmod(tmp, 0o755);
    await copyFile(path.join(x, "boot", `vmlinuz-${version}`), path.join(tmp, "vmlinuz"));
    await copyFile(path.join(work, "initrd.gz"), path.join(tmp, "initrd.gz"));
    await rename(tmp, dir).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "ENOTEMPTY" && err.code !== "EEXIST") throw err;
    });
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  return guest;
}

/** What the guest checks every round. */
export interface NetProbeChecks {
  /** IPv4 addresses to ping. */
  readonly ping?: readonly string[];
  /** IPv4 addresses to connect to on TCP port 22. */
  readonly tcp?: readonly string[];
  /** An IPv4 address the guest adds to eth0 and pings the first `ping` target from. */
  readonly spoof?: string;
  /** A name to resolve with the DNS server its lease gave. */
  readonly dns?: string;
}

const IPV4 = /^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$/;
const NAME = /^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,251}[a-zA-Z0-9])?$/;

/**
 * The guest's kernel command line: its console on ttyS0 and the checks as `qx.ping=a,b`,
 * `qx.tcp=a,b`, `qx.spoof=a`, `qx.dns=name`. Throws on a value that is not an IPv4
 * address (a name for `dns`), so nothing else reaches the guest's shell.
 */
export function netProbeKernelArgs(checks: NetProbeChecks = {}): string {
  const addrs = (field: string, list: readonly string[] | undefined): string[] => {
    for (const a of list ?? []) if (!IPV4.test(a)) throw new Error(`net probe ${field}: not an IPv4 address: ${JSON.stringify(a)}`);
    return [...(list ?? [])];
  };
  const args = ["console=ttyS0", "panic=-1", "quiet"];
  const ping = addrs("ping", checks.ping);
  const tcp = addrs("tcp", checks.tcp);
  if (ping.length > 0) args.push(`qx.ping=${ping.join(",")}`);
  if (tcp.length > 0) args.push(`qx.tcp=${tcp.join(",")}`);
  if (checks.spoof !== undefined) args.push(`qx.spoof=${addrs("spoof", [checks.spoof])[0]!}`);
  if (checks.dns !== undefined) {
    if (!NAME.test(checks.dns)) throw new Error(`net probe dns: not a host name: ${JSON.stringify(checks.dns)}`);
    args.push(`qx.dns=${checks.dns}`);
  }
  return args.join(" ");
}

/** The lease the guest printed. */
export interface NetProbeLease {
  readonly ip: string;
  readonly router: string;
  readonly dns: string;
  readonly hostname: string;
  readonly mtu: string;
}

/** The results of one complete round. */
export interface NetProbeRound {
  readonly round: number;
  /** Address → whether the ping was answered. */
  readonly ping: Readonly<Record<string, boolean>>;
  /** Address → whether a TCP connect to port 22 succeeded. */
  readonly tcp: Readonly<Record<string, boolean>>;
  /** Target → whether the ping from the spoofed source was answered. */
  readonly spoof: Readonly<Record<string, boolean>>;
  /** Name → the address it resolved to, or "fail". */
  readonly dns: Readonly<Record<string, string>>;
}

/** What the guest's console shows: its last lease, whether it listens, and the latest complete round. */
export interface NetProbeConsole {
  readonly lease: NetProbeLease | undefined;
  readonly listening: boolean;
  readonly round: NetProbeRound | undefined;
}

/** Reads the guest's console text (any line endings; other lines ignored). */
export function parseNetProbeConsole(text: string): NetProbeConsole {
  const lines = text.split(/\r?\n/).map((l) => l.trim());
  let lease: NetProbeLease | undefined;
  let listening = false;
  let round: NetProbeRound | undefined;
  let current: { round: number; ping: Record<string, boolean>; tcp: Record<string, boolean>; spoof: Record<string, boolean>; dns: Record<string, string> } | undefined;
  for (const line of lines) {
    const [word, a, b] = line.split(/\s+/);
    switch (word) {
      case NET_PROBE.lease: {
        const f = Object.fromEntries([...line.matchAll(/(\w+)=(\S*)/g)].map((m) => [m[1]!, m[2]!]));
        lease = { ip: f["ip"] ?? "", router: f["router"] ?? "", dns: f["dns"] ?? "", hostname: f["hostname"] ?? "", mtu: f["mtu"] ?? "" };
        break;
      }
      case NET_PROBE.listen:
        listening = true;
        break;
      case NET_PROBE.round:
        current = { round: Number(a), ping: {}, tcp: {}, spoof: {}, dns: {} };
        break;
      case NET_PROBE.end:
        if (current && current.round === Number(a)) round = current;
        current = undefined;
        break;
      case NET_PROBE.ping:
      case NET_PROBE.tcp:
      case NET_PROBE.spoof:
        if (current && a && (b === "ok" || b === "fail")) current[word === NET_PROBE.ping ? "ping" : word === NET_PROBE.tcp ? "tcp" : "spoof"][a] = b === "ok";
        break;
      case NET_PROBE.dns:
        if (current && a && b) current.dns[a] = b;
        break;
      default:
        break;
    }
  }
  return { lease, listening, round };
}
